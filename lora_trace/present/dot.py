"""Draw the encoding-path graph with graphviz: DOT written here (deterministic, escaped), `dot` for images.

Legend (also drawn in every image):
    green box      LoRA layers that got a gradient
    red box        LoRA layers that ran but whose gradient was cut
    grey dashed    LoRA layers that never ran in the step
    orange box     LoRA layers that are frozen or inactive
    solid arrow    data flow seen in the autograd graph; dashed arrow: inferred from call order
    red label      where the path is cut, with the cause and the source line
"""

from __future__ import annotations

import os
from typing import Any

import networkx as nx

from ..core.errors import BadInputError, GraphvizMissingError
from ..core.printable import printable
from .graph import build_graph

FORMATS = ("svg", "png", "pdf", "dot")
_STATE_STYLE = {
    "grad": ('"rounded,filled"', "#d9f2d9", "#2e7d32"),
    "severed": ('"rounded,filled"', "#fbd5d5", "#c62828"),
    "never": ('"rounded,dashed"', "#f5f5f5", "#9e9e9e"),
    "frozen": ('"rounded,filled"', "#ffe0b2", "#ef6c00"),
}
_STATE_TEXT = {"grad": "got a gradient", "severed": "ran, gradient cut", "never": "never ran",
               "frozen": "frozen / inactive"}
INSTALL_HINT = ("graphviz's `dot` is not installed, so only the .dot file was written. Install it with "
                "`sudo apt-get install graphviz` (macOS: `brew install graphviz`), or render the .dot elsewhere.")


def quote(text: object) -> str:
    """A DOT double-quoted string: every backslash, quote and newline escaped (names are user data)."""
    value = printable(str(text)).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{value}"'


def to_dot(graph: nx.DiGraph) -> str:
    title = f"{graph.graph.get('model', '')}" + (f" [{graph.graph['label']}]" if graph.graph.get("label") else "")
    lines = ["digraph lora_trace {", f"  label={quote('lora-trace: ' + title)}; labelloc=t; fontname=Helvetica;",
             "  rankdir=LR; compound=true; newrank=true;",
             "  node [fontname=Helvetica, fontsize=11, shape=box]; edge [fontname=Helvetica, fontsize=10];"]
    regions = sorted((n for n, d in graph.nodes(data=True) if d["kind"] == "region"),
                     key=lambda n: graph.nodes[n]["order"])
    ids = {node: f"n{index}" for index, node in enumerate(
        sorted(graph.nodes, key=lambda n: (graph.nodes[n]["order"], graph.nodes[n]["kind"] != "region", n)))}
    for cluster, node in enumerate(regions):
        data = graph.nodes[node]
        members = sorted((n for n, d in graph.nodes(data=True)
                          if d["kind"] == "lora" and d["region"] == data["region"]),
                         key=lambda n: (graph.nodes[n]["label"], n))
        style = "solid" if data["ran"] else "dashed"
        color = "#2e7d32" if data["grad"] else ("#616161" if data["ran"] else "#bdbdbd")
        ran = "ran" + ("" if data["grad"] else " with grad off") if data["ran"] else "never ran"
        lines.append(f"  subgraph cluster_{cluster} {{ label={quote(data['label'] + ' (' + ran + ')')}; "
                     f"style={style}; color={quote(color)};")
        lines.append(f"    {ids[node]} [label={quote(_tail(data['label']))}, shape=ellipse, "
                     f"style={style}, color={quote(color)}];")
        for member in members:
            lines.append("    " + _lora_node(ids[member], graph.nodes[member]))
            lines.append(f"    {ids[member]} -> {ids[node]} [style=invis];")  # LoRA groups sit by their region
        lines.append("  }")
    loss = graph.nodes["loss"]
    lines.append(f"  {ids['loss']} [label=\"loss\", shape=doubleoctagon, "
                 f"color={quote('#2e7d32' if loss['grad'] else '#c62828')}];")
    for source, target in sorted(graph.edges, key=lambda e: (ids[e[0]], ids[e[1]])):
        data = graph.edges[source, target]
        attributes = [f"style={'dashed' if data['inferred'] else 'solid'}"]
        if data["cut"]:
            attributes += [f"label={quote('cut: ' + data['cut'])}", 'color="#c62828"', 'fontcolor="#c62828"',
                           "penwidth=2"]
        lines.append(f"  {ids[source]} -> {ids[target]} [{', '.join(attributes)}];")
    lines.extend(_legend())
    lines.append("}")
    return "\n".join(lines) + "\n"


def _tail(name: str) -> str:
    """The part of a region's name a person would say: `...audio_tower`, `text_encoder.model`."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1] in ("model", "base_model") and len(parts) > 1 else parts[-1]


def _lora_node(identifier: str, data: dict[str, Any]) -> str:
    style, fill, color = _STATE_STYLE[data["state"]]
    leaves = data["leaves"]
    shown = " ".join(leaf.rsplit(".", 1)[-1] for leaf in leaves[:6]) + (" ..." if len(leaves) > 6 else "")
    counted = f"{data['count']} {data.get('tuner', 'LoRA')}, {_STATE_TEXT[data['state']]}"
    label = f"{data['label']}\n{shown}\n{counted}" if shown else f"{data['label']}\n{counted}"
    change = data.get("change")  # set by a comparison: layers gained / lost against the other run
    if change:
        label += f"\n{change}"
    return (f"{identifier} [label={quote(label)}, style={style}, fillcolor={quote(fill)}, "
            f"color={quote(color)}{', penwidth=3' if change else ''}];")


def _legend() -> list[str]:
    """One HTML-table node: the colours and line styles, small, at the bottom of the image."""
    rows = "".join(
        f'<TR><TD BGCOLOR="{_STATE_STYLE[state][1]}" BORDER="1" COLOR="{_STATE_STYLE[state][2]}" '
        f'STYLE="{"dashed" if state == "never" else "rounded"}"> </TD><TD ALIGN="LEFT">{_STATE_TEXT[state]}</TD></TR>'
        for state in ("grad", "severed", "never", "frozen"))
    rows += ('<TR><TD>&#8594;</TD><TD ALIGN="LEFT">data flow (autograd)</TD></TR>'
             '<TR><TD>- - &#8594;</TD><TD ALIGN="LEFT">inferred from call order</TD></TR>'
             '<TR><TD><FONT COLOR="#c62828">cut:</FONT></TD><TD ALIGN="LEFT">where the gradient path breaks</TD></TR>')
    table = f'<<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="2">{rows}</TABLE>>'
    return [f"  legend [shape=plaintext, fontsize=9, label={table}];",
            "  { rank=sink; legend; }"]


def render_dot(dot: str, path: str) -> str:
    """Write `dot` to `path` in the format its suffix names; returns the path written.

    Without graphviz's `dot`, writes the .dot next to it and raises GraphvizMissingError saying how to
    install graphviz.
    """
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in FORMATS:
        raise BadInputError(f"cannot render to {path!r}: use one of the suffixes .{', .'.join(FORMATS)}")
    if suffix == "dot":
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(dot)
        return path
    import graphviz

    try:
        image = graphviz.Source(dot).pipe(format=suffix)
    except graphviz.ExecutableNotFound:
        fallback = os.path.splitext(path)[0] + ".dot"
        with open(fallback, "w", encoding="utf-8") as handle:
            handle.write(dot)
        raise GraphvizMissingError(f"{INSTALL_HINT} Wrote {fallback}.") from None
    with open(path, "wb") as handle:
        handle.write(image)
    return path


def render(diagnosis: Any, path: str, *, expand: bool = False) -> str:
    return render_dot(to_dot(build_graph(diagnosis, expand=expand)), path)
