"""A comparison of two runs for people: the printed table, and run b's graph with gained / lost layers."""

from __future__ import annotations

import math
import os
from typing import Any

from ..analysis.compare import Comparison, as_diagnosis, compare
from ..core.findings import Diagnosis
from ..core.regions import short_name


def format_comparison(c: Comparison) -> str:
    lines = [f"lora-trace diff: {c.a_label} -> {c.b_label}",
             "same LoRA path" if c.same_path else
             f"LoRA path differs: {len(c.gained)} layers gained, {len(c.lost)} lost", ""]
    lines.append(f"  {'region':52s} {'trained in ' + c.a_label:>18s} {'trained in ' + c.b_label:>18s}")
    for region, (a, b) in c.regions.items():
        mark = "  +" if b > a else ("  -" if b < a else "")
        lines.append(f"  {short_name(region):52s} {a:18d} {b:18d}{mark}")
    for title, items in (("Gained", c.gained), ("Lost", c.lost)):
        if items:
            lines += ["", f"{title} ({len(items)}):"] + [f"  {short_name(m)}" for m in items[:12]]
            if len(items) > 12:
                lines.append(f"  ... and {len(items) - 12} more")
    if c.a_path != c.b_path:
        lines += ["", "Encoding path:", f"  {c.a_label}: {', '.join(short_name(r) for r in c.a_path)}",
                  f"  {c.b_label}: {', '.join(short_name(r) for r in c.b_path)}"]
    if c.norm_ratios:
        finite = sorted(v for v in c.norm_ratios.values() if math.isfinite(v) and v > 0)
        if finite:
            lines += ["", f"Gradient-norm ratio {c.b_label}/{c.a_label} over {len(finite)} layers trained in both: "
                      f"median {finite[len(finite) // 2]:.3g} (min {finite[0]:.3g}, max {finite[-1]:.3g})"]
    for title, items in (("Findings fixed", c.fixed), ("Findings introduced", c.introduced)):
        if items:
            lines += ["", f"{title}:"] + [f"  {item}" for item in items]
    if c.config_changes:
        lines += ["", "Configuration changes:"]
        lines += [f"  {key}: {a!r} -> {b!r}" for key, (a, b) in c.config_changes.items()]
    return "\n".join(lines)


def comparison_graph(a: Diagnosis | str | os.PathLike[str], b: Diagnosis | str | os.PathLike[str]) -> Any:
    """Run b's encoding-path graph with each LoRA group marked by the layers it gained or lost against a."""
    from .graph import build_graph

    run_a, run_b = as_diagnosis(a), as_diagnosis(b)
    result = compare(run_a, run_b)
    graph = build_graph(run_b)
    graph.graph["label"] = f"{result.a_label} -> {result.b_label}"
    gained, lost = set(result.gained), set(result.lost)
    for _, data in graph.nodes(data=True):
        if data["kind"] != "lora":
            continue
        plus = sum(1 for m in data["modules"] if m in gained)
        minus = sum(1 for m in data["modules"] if m in lost)
        data["change"] = " ".join(part for part in (f"+{plus} gained" if plus else "",
                                                    f"-{minus} lost" if minus else "") if part)
    return graph


def render_comparison(a: Diagnosis | str | os.PathLike[str], b: Diagnosis | str | os.PathLike[str],
                      path: str) -> str:
    from .dot import render_dot, to_dot

    return render_dot(to_dot(comparison_graph(a, b)), path)
