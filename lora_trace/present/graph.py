"""The encoding path of a traced step as a networkx DiGraph. Torch-free: works on loaded runs.

Nodes: the regions that ran (or hold LoRA), the LoRA layers grouped by repeated block inside them
(`layers.0-31 x32`, or one node per layer with expand=True), and the loss. Edges: data flow between
regions (from the autograd graph; `inferred` where an input had no graph and call order was used) and
into the loss; a cut is an edge attribute naming its cause and source line. Node attribute `kind` is
"region" | "lora" | "loss"; LoRA nodes carry `state`: grad | severed | never | frozen.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import networkx as nx

from ..analysis.facts import Facts
from ..core.regions import short_name

LORA_STATES = ("grad", "severed", "never", "frozen")
_CUT_CODES = {"grad-disabled", "detached", "checkpoint-no-grad", "lora-bypassed"}


def build_graph(diagnosis: Any, *, expand: bool = False) -> nx.DiGraph:
    trace = diagnosis.trace
    facts = Facts(trace)
    graph = nx.DiGraph(label=trace.label or "", model=trace.model_class, ok=diagnosis.ok)
    leaves = [c for c in trace.region_calls if c.leaf]
    seq_to_region = {c.seq: c.region for c in trace.region_calls}
    order: dict[str, int] = {}
    for call in leaves:
        order.setdefault(call.region, len(order))
    for site in trace.sites:
        order.setdefault(site.region, len(order))
    # A region that ran around a nested region that ran has no leaf call, yet it ran (and may hold LoRA).
    ran_with_grad = {c.region for c in trace.region_calls if c.grad_enabled}
    for region, index in order.items():
        calls = [c for c in trace.region_calls if c.region == region]
        graph.add_node(f"region:{region}", kind="region", label=short_name(region), order=index, region=region,
                       ran=bool(calls), grad=region in ran_with_grad, calls=len(calls))
    for call in leaves:
        for source in call.fed_by:
            _add_flow(graph, f"region:{seq_to_region[source]}", f"region:{call.region}", inferred=call.inferred)
    graph.add_node("loss", kind="loss", label="loss", order=len(order),
                   grad=any(loss.has_grad_fn for loss in trace.losses))
    for source in trace.loss_fed_by:
        _add_flow(graph, f"region:{seq_to_region[source]}", "loss", inferred=False)
    _add_lora(graph, facts, expand)
    _mark_cuts(graph, diagnosis)
    return graph


def _add_flow(graph: nx.DiGraph, source: str, target: str, *, inferred: bool) -> None:
    if source == target or source not in graph or target not in graph:
        return
    if graph.has_edge(source, target):
        graph.edges[source, target]["inferred"] &= inferred
    else:
        graph.add_edge(source, target, kind="flow", inferred=inferred, cut=None)


def block_group(module: str, region: str) -> tuple[str, str, int | None]:
    """(`layers.<i>`-style block key, the leaf name inside the block, the block index) of a LoRA module."""
    rest = module[len(region) + 1:] if module.startswith(region + ".") else module
    match = re.match(r"(?P<container>[^.]+)\.(?P<index>\d+)\.(?P<leaf>.+)", rest)
    if not match:
        return rest, "", None
    return match["container"], match["leaf"], int(match["index"])


def _add_lora(graph: nx.DiGraph, facts: Facts, expand: bool) -> None:
    groups: dict[tuple[str, str, str], list[tuple[str, str, int | None]]] = defaultdict(list)
    for site in facts.trace.sites:
        state = facts.state(site.module)
        container, leaf, index = block_group(site.module, site.region)
        key = (site.region, site.module if expand else container, state)
        groups[key].append((site.module, leaf, index))
    for (region, container, state), members in sorted(groups.items(), key=lambda item: (
            graph.nodes[f"region:{item[0][0]}"]["order"], item[0][1], LORA_STATES.index(item[0][2]))):
        indices = sorted({i for _, _, i in members if i is not None})
        leaves = sorted({leaf for _, leaf, _ in members if leaf})
        if expand:
            label = short_name(container)[len(short_name(region)) + 1:] or container
        else:
            span = f".{indices[0]}-{indices[-1]} x{len(indices)}" if len(indices) > 1 else (
                f".{indices[0]}" if indices else "")
            label = f"{container}{span}"
        node = f"lora:{region}:{container}:{state}"
        graph.add_node(node, kind="lora", label=label, leaves=leaves, region=region, state=state,
                       modules=sorted(m for m, _, _ in members), count=len(members),
                       tuner=facts.kind_of([m for m, _, _ in members])["en"],
                       order=graph.nodes[f"region:{region}"]["order"])


def _mark_cuts(graph: nx.DiGraph, diagnosis: Any) -> None:
    """Label the edge where each path-cutting finding breaks the path (or add one into the loss)."""
    for finding in diagnosis.findings:
        if finding.code not in _CUT_CODES or finding.severity != "error":
            continue
        if finding.code == "lora-bypassed" and finding.location is None:
            continue  # never ran: the grey region says it, there is no edge to cut
        label = finding.code + (f" @ {finding.location}" if finding.location else "")
        for region in finding.regions:
            node = f"region:{region}"
            if node not in graph:
                continue
            edge = _first_edge_downstream(graph, node)
            if edge is None:
                graph.add_edge(node, "loss", kind="flow", inferred=True, cut=label)
            elif graph.edges[edge]["cut"] is None:
                graph.edges[edge]["cut"] = label


def _first_edge_downstream(graph: nx.DiGraph, node: str) -> tuple[str, str] | None:
    """The first inferred (graph-less) edge on the way from `node` to the loss, else its first out-edge."""
    first = None
    for source, target in nx.edge_bfs(graph, node):
        if graph.edges[source, target].get("kind") != "flow":
            continue
        first = first or (source, target)
        if graph.edges[source, target]["inferred"]:
            return source, target
    return first
