"""The text report: the familiar seven-step manual check, each step with a verdict and its evidence,
then the root cause with its source line and fix. Torch-free; works on loaded runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .checks.facts import Facts
from .findings import Severity
from .regions import short_name

_COLORS = {"ok": "32", "FAIL": "31", "warn": "33", "n/a": "90", "info": "36"}


def render_report(diagnosis: Any, *, lang: str = "en", color: bool = False) -> str:
    if lang != "en":
        raise ValueError(f"lang={lang!r} is not available; the report speaks: en")
    trace = diagnosis.trace
    facts = Facts(trace)
    codes = set(diagnosis.codes("error"))
    mark = _marker(color)
    title = f"lora-trace report{f' [{trace.label}]' if trace.label else ''}: {trace.model_class}"
    lines = [title, "=" * len(title)]
    if not trace.complete:
        lines.append(f"The traced block raised ({trace.error}); what follows is what was seen before that.")

    steps = _steps(trace, facts, codes)
    for number, (name, verdict, evidence) in enumerate(steps, 1):
        lines.append(f"{mark(verdict)} Step {number}/7  {name}")
        lines.extend(f"         {line}" for line in evidence)

    errors = [f for f in diagnosis.findings if f.severity == Severity.ERROR.value]
    lines.append("")
    if errors:
        root = errors[0]
        lines.append(f"Root cause: {root.code}" + (f"  ({root.location})" if root.location else ""))
        lines.extend(_indent(root.message))
        lines.extend(_indent("Fix: " + root.fix))
        if root.stack:
            lines.append("  Call stack (innermost last):")
            lines.extend(f"    {frame}" for frame in root.stack[-5:])
    else:
        lines.append("No error: every trainable LoRA parameter is on the gradient path.")
    others = [f for f in diagnosis.findings if not errors or f is not errors[0]]
    if others:
        lines.append("")
        lines.append("Also found:")
        for finding in others:
            where = f" ({finding.location})" if finding.location else ""
            lines.append(f"{mark(_verdict_of(finding.severity))} {finding.code}{where}")
            lines.extend(_indent(finding.message, 9))
            if finding.severity != Severity.INFO.value:
                lines.extend(_indent("Fix: " + finding.fix, 9))
    if trace.notes:
        lines.append("")
        lines.extend(f"Note: {note}" for note in trace.notes)
    return "\n".join(lines)


def _steps(trace: Any, facts: Facts, codes: set[str]) -> list[tuple[str, str, list[str]]]:
    sites = trace.sites
    steps = []
    adapters = sorted({a for s in sites for a in s.active_adapters})
    step1 = [f"PEFT configs: {', '.join(short_name(p) or '(model)' for p in trace.peft_configs) or 'none'}",
             f"LoRA layers: {len(sites)}; active adapters: {', '.join(adapters) or 'none'}"]
    bad1 = codes & {"adapter-missing", "adapter-inactive", "no-lora-params"}
    steps.append(("Adapter applied and active", "FAIL" if bad1 else "ok", step1))

    by_region = Counter(s.region for s in sites for _ in s.params)
    step2 = [f"{sum(by_region.values())} LoRA parameters"]
    step2 += [f"{count:6d}  {short_name(region)}" for region, count in sorted(by_region.items())]
    steps.append(("LoRA parameters exist", "ok" if by_region else "FAIL", step2))

    total = sum(len(s.params) for s in sites)
    step3 = [f"{len(facts.trainable)} of {total} LoRA parameters require grad"]
    steps.append(("requires_grad on LoRA parameters", "FAIL" if "lora-frozen" in codes else "ok", step3))

    step4 = [f"in eval mode: {', '.join(short_name(m) or '(model)' for m in trace.eval_modules)}"] \
        if trace.eval_modules else ["every module holding LoRA is in training mode"]
    steps.append(("Training mode", "warn" if trace.eval_modules else "ok", step4))

    ran_grad = {m for m, calls in facts.calls.items() if any(c.grad_enabled for c in calls)}
    ran_off = {m for m, calls in facts.calls.items() if m not in ran_grad}
    never = len(sites) - len(ran_grad) - len(ran_off)
    step5 = [f"LoRA layers run with grad enabled: {len(ran_grad)}; only with grad disabled: {len(ran_off)}; "
             f"never run: {never}"]
    bad5 = codes & {"grad-disabled", "lora-bypassed", "checkpoint-no-grad", "detached", "lora-off-path"}
    steps.append(("Forward pass reaches LoRA layers with grad enabled",
                  "FAIL" if bad5 or not ran_grad else "ok", step5))

    if facts.got_grad is None:
        steps.append(("Gradients arrive at LoRA parameters", "n/a",
                      ["no backward and no loss seen: nothing to tell"]))
    else:
        arrivals = {a.param: a for a in trace.arrivals}
        zero = sum(1 for p in facts.got_grad if arrivals.get(p) and arrivals[p].zero)
        step6 = [f"{len(facts.got_grad & facts.trainable)} of {len(facts.trainable)} trainable LoRA parameters "
                 f"got a gradient ({zero} exactly zero), {len(facts.starved)} got none"]
        if not trace.backward:
            step6.append("(no backward ran: judged by the autograd graph of the loss)")
        steps.append(("Gradients arrive at LoRA parameters", "FAIL" if facts.starved else "ok", step6))

    holding = sorted({s.region for s in sites})
    run = set(trace.regions_run)
    step7 = [f"regions traversed: {', '.join(short_name(r) for r in facts.traversed_regions) or 'none'}"]
    for region in holding:
        layers = [s for s in sites if s.region == region]
        reached = sum(1 for s in layers if s.module in ran_grad)
        state = "traversed" if region in run else "NOT traversed"
        step7.append(f"{short_name(region)}: holds {len(layers)} LoRA layers, {state}, {reached} run with grad")
    bypass = "lora-bypassed" in codes
    steps.append(("Encoding path by region", "FAIL" if bypass else "ok", step7))
    return steps


def _verdict_of(severity: str) -> str:
    return {"error": "FAIL", "warning": "warn", "info": "info"}[severity]


def _marker(color: bool):  # noqa: ANN202
    def mark(verdict: str) -> str:
        text = f"[{verdict:^4s}]"
        return f"\x1b[{_COLORS[verdict]}m{text}\x1b[0m" if color else text

    return mark


def _indent(text: str, width: int = 2, limit: int = 108) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > limit - width:
            lines.append(" " * width + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(" " * width + line)
    return lines
