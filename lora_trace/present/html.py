"""One self-contained HTML page for a run: the verdict, the step-by-step report, the graph (inline SVG),
a table of LoRA layers and a chart of gradient norms. No script, no network fetch; every name and message
is escaped, since module names are user data. Torch-free."""

from __future__ import annotations

import html
import math
import shutil
from typing import Any

from ..analysis.facts import Facts
from ..core.errors import BadInputError
from ..core.messages import LANGUAGES, MESSAGES, adapter_kind, say
from ..core.printable import printable
from ..core.regions import short_name
from .dot import to_dot
from .graph import build_graph


def _esc(text: object) -> str:
    """Escaped for HTML, with terminal and bidi controls shown as visible escapes (names are user data)."""
    return html.escape(printable(str(text)))


_STATE_COLOR = {"grad": "#2e7d32", "severed": "#c62828", "never": "#9e9e9e", "frozen": "#ef6c00"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212121;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.bad{background:#fdecea;color:#b71c1c} .good{background:#e8f5e9;color:#1b5e20}
pre{background:#fafafa;border:1px solid #eee;padding:12px;overflow-x:auto;font-size:12.5px;line-height:1.35}
table{border-collapse:collapse;font-size:12.5px} td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left}
th{background:#f5f5f5} .finding{margin:8px 0;padding:8px 12px;border-left:4px solid #9e9e9e;background:#fafafa}
.error{border-color:#c62828} .warning{border-color:#ef6c00} .info{border-color:#1565c0}
.code{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:600} .graph svg{max-width:100%;height:auto}
"""


def render_html(diagnosis: Any, *, lang: str = "en", expand: bool = False) -> str:
    title, body = _body(diagnosis, lang, expand)
    return "\n".join(["<!DOCTYPE html>", f'<html lang="{_esc(lang)}"><head><meta charset="utf-8">',
                      f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>", *body,
                      "</body></html>"]) + "\n"


def render_fragment(diagnosis: Any, *, lang: str = "en") -> str:
    """The page's content for a notebook cell (`Diagnosis._repr_html_`): styles scoped to its own block so the
    notebook around it is untouched; no script, everything escaped, as on the page."""
    _, body = _body(diagnosis, lang, False)
    return "\n".join([f'<div class="lora-trace" lang="{_esc(lang)}"><style>{_scoped(_CSS)}</style>', *body, "</div>"])


def text_fragment(title: str, text: str) -> str:
    """A titled, escaped text block in the same style (`Comparison._repr_html_`)."""
    return (f'<div class="lora-trace"><style>{_scoped(_CSS)}</style><h1>{_esc(title)}</h1>'
            f"<pre>{_esc(text)}</pre></div>")


def _scoped(css: str) -> str:
    """Every rule of the page's stylesheet limited to `.lora-trace` (the page's `body` becomes the block)."""
    rules = []
    for rule in css.replace("\n", " ").split("}"):
        if "{" in rule:
            selectors, declarations = rule.split("{", 1)
            scoped = ",".join(".lora-trace" if s.strip() == "body" else f".lora-trace {s.strip()}"
                              for s in selectors.split(","))
            rules.append(f"{scoped}{{{declarations}}}")
    return "".join(rules)


def _body(diagnosis: Any, lang: str, expand: bool) -> tuple[str, list[str]]:
    if lang not in LANGUAGES:
        raise BadInputError(f"lang={lang!r} is not available; the report speaks: {', '.join(LANGUAGES)}")
    trace = diagnosis.trace
    esc = _esc

    kind = adapter_kind(site.tuner for site in trace.sites)[lang]

    def word(key: str, **fields: object) -> str:
        return esc(say(key, lang, kind=kind, **fields))

    title = say("html.title", lang, model=trace.model_class) + (f" [{trace.label}]" if trace.label else "")
    verdict = word("html.ok") if diagnosis.ok else word(
        "html.errors", count=len(diagnosis.codes("error")), code=diagnosis.root_cause.code)
    return title, [
        f"<h1>{esc(title)}</h1>",
        f'<div class="verdict {"good" if diagnosis.ok else "bad"}">{verdict}</div>',
        f"<h2>{word('html.findings')}</h2>", *[_finding(f, lang) for f in diagnosis.findings],
        f"<h2>{word('html.path')}</h2>", f'<div class="graph">{_graph_svg(diagnosis, expand, lang)}</div>',
        f"<h2>{word('html.layers')}</h2>", _layer_table(diagnosis, lang, kind),
        f"<h2>{word('html.norms')}</h2>", _norm_chart(diagnosis, lang),
        f"<h2>{word('html.report')}</h2>", f"<pre>{esc(diagnosis.report(lang=lang))}</pre>",
    ]


def _finding(finding: Any, lang: str) -> str:
    esc = _esc
    message, fix = finding.text(lang)
    where = f" <span>{esc(say('html.at', lang, location=finding.location))}</span>" if finding.location else ""
    severity = say(f"severity.{finding.severity}", lang) if f"severity.{finding.severity}" in MESSAGES else ""
    return (f'<div class="finding {esc(finding.severity)}"><span class="code">{esc(finding.code)}</span> '
            f"({esc(severity)}){where}<div>{esc(message)}</div><div><b>{esc(say('html.fix', lang))}</b> "
            f"{esc(fix)}</div></div>")


def _graph_svg(diagnosis: Any, expand: bool, lang: str) -> str:
    """The graph as inline SVG; without graphviz's `dot`, the DOT source and how to install it."""
    dot = to_dot(build_graph(diagnosis, expand=expand))
    if shutil.which("dot") is None:
        return f"<p>{_esc(say('html.no-dot', lang))}</p><pre>{_esc(dot)}</pre>"
    import graphviz

    svg = graphviz.Source(dot).pipe(format="svg").decode("utf-8")
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def _layer_rows(diagnosis: Any) -> list[tuple[str, str, str, int, float | None]]:
    facts = Facts(diagnosis.trace)
    norms = facts.module_norms
    return [(site.module, site.region, facts.state(site.module), len(facts.calls.get(site.module, [])),
             norms.get(site.module)) for site in diagnosis.trace.sites]


def _layer_table(diagnosis: Any, lang: str, kind: str) -> str:
    esc = _esc
    body = []
    for module, region, state, calls, norm in _layer_rows(diagnosis):
        shown = "-" if norm is None else f"{norm:.3e}"
        body.append(f'<tr><td>{esc(short_name(module))}</td><td>{esc(short_name(region))}</td>'
                    f'<td style="color:{_STATE_COLOR[state]}">{esc(say(f"state.{state}", lang))}</td>'
                    f"<td>{calls}</td><td>{shown}</td></tr>")
    head = "".join(f"<th>{esc(say(f'html.col.{c}', lang, kind=kind))}</th>"
                   for c in ("layer", "region", "state", "calls", "norm"))
    return f"<table><tr>{head}</tr>" + "".join(body) + "</table>"


def _norm_chart(diagnosis: Any, lang: str) -> str:
    """Horizontal bars, log scale, one per LoRA layer: where the gradient is, and where it is not."""
    rows = _layer_rows(diagnosis)
    if not rows:
        return f"<p>{_esc(say('html.no-layer', lang))}</p>"
    finite = [n for *_, n in rows if n is not None and math.isfinite(n) and n > 0]
    top = math.log10(max(finite)) if finite else 0.0
    bottom = math.log10(min(finite)) - 1 if finite else -1.0
    height, width = 14, 420
    bars = []
    for index, (module, _, state, _, norm) in enumerate(rows):
        y = index * height
        if norm is not None and math.isfinite(norm) and norm > 0:
            length = max(2.0, width * (math.log10(norm) - bottom) / max(top - bottom, 1e-9))
            caption = f"{norm:.2e}"
        else:
            caption = say("html.no-gradient", lang) if norm is None else (
                "0" if norm == 0 else say("html.non-finite", lang))
            length = 0.0
        name = short_name(module)
        name = name if len(name) <= 62 else "…" + name[-61:]
        bars.append(f'<text x="375" y="{y + 11}" font-size="10" text-anchor="end">{_esc(name)}</text>'
                    f'<rect x="380" y="{y + 2}" width="{length:.1f}" height="10" fill="{_STATE_COLOR[state]}"/>'
                    f'<text x="{385 + length:.1f}" y="{y + 11}" font-size="10">{_esc(caption)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{380 + width + 80}" height="{len(rows) * height + 4}">'
            + "".join(bars) + "</svg>")


def write_html(diagnosis: Any, path: str, *, lang: str = "en", expand: bool = False) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(diagnosis, lang=lang, expand=expand))
    return path
