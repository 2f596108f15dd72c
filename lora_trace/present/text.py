"""The text report: the familiar seven-step manual check, each step with a verdict and its evidence,
then the root cause with its source line and fix. Torch-free; works on loaded runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..analysis.facts import Facts
from ..core.findings import Severity
from ..core.messages import MESSAGES
from ..core.regions import short_name

_COLORS = {"ok": "32", "FAIL": "31", "warn": "33", "n/a": "90", "info": "36"}
LABELS = {
    "en": {
        "title": "lora-trace report",
        "raised": "The traced block raised ({error}); what follows is what was seen before that.",
        "step": "Step {n}/7", "root": "Root cause", "fix": "Fix: ", "stack": "Call stack (innermost last):",
        "none": "No error: every trainable LoRA parameter is on the gradient path.", "also": "Also found:",
        "unknown": "No error found, but nothing showed whether gradients reach the LoRA parameters "
                   "(no backward and no loss were seen).",
        "note": "Note: ",
        "s1": "Adapter applied and active", "s1.configs": "PEFT configs: {configs}",
        "s1.layers": "LoRA layers: {layers}; active adapters: {adapters}",
        "s2": "LoRA parameters exist", "s2.total": "{count} LoRA parameters",
        "s3": "requires_grad on LoRA parameters", "s3.count": "{trainable} of {total} LoRA parameters require grad",
        "s4": "Training mode", "s4.eval": "in eval mode: {modules}",
        "s4.ok": "every module holding LoRA is in training mode",
        "s5": "Forward pass reaches LoRA layers with grad enabled",
        "s5.count": "LoRA layers run with grad enabled: {grad}; only with grad disabled: {off}; never run: {never}",
        "s6": "Gradients arrive at LoRA parameters", "s6.unknown": "no backward and no loss seen: nothing to tell",
        "s6.count": "{got} of {trainable} trainable LoRA parameters got a gradient ({zero} exactly zero), "
                    "{none} got none",
        "s6.walk": "(no backward ran: judged by the autograd graph of the loss)",
        "s7": "Encoding path by region", "s7.run": "regions traversed: {regions}",
        "s7.region": "{region}: holds {layers} LoRA layers, {state}, {reached} run with grad",
        "traversed": "traversed", "not traversed": "NOT traversed",
    },
    "zh": {
        "title": "lora-trace 诊断报告", "raised": "被追踪的代码块抛出了异常（{error}）；以下是异常之前观察到的内容。",
        "step": "步骤 {n}/7", "root": "根本原因", "fix": "修复：", "stack": "调用栈（最内层在最后）：",
        "none": "没有错误：每个可训练的 LoRA 参数都在梯度路径上。", "also": "其他发现：", "note": "说明：",
        "unknown": "没有发现错误，但没有证据表明梯度能否到达 LoRA 参数（没有观察到反向传播或损失）。",
        "s1": "LoRA 适配器已应用且处于激活状态", "s1.configs": "PEFT 配置：{configs}",
        "s1.layers": "LoRA 层：{layers} 个；激活的适配器：{adapters}",
        "s2": "LoRA 参数已创建", "s2.total": "共 {count} 个 LoRA 参数",
        "s3": "LoRA 参数的 requires_grad", "s3.count": "{total} 个 LoRA 参数中有 {trainable} 个需要梯度",
        "s4": "训练模式", "s4.eval": "处于 eval 模式：{modules}", "s4.ok": "所有包含 LoRA 的模块都处于训练模式",
        "s5": "前向传播在启用梯度时经过 LoRA 层",
        "s5.count": "启用梯度时运行的 LoRA 层：{grad}；只在禁用梯度时运行：{off}；从未运行：{never}",
        "s6": "梯度到达 LoRA 参数", "s6.unknown": "没有观察到反向传播或损失：无法判断",
        "s6.count": "{trainable} 个可训练的 LoRA 参数中有 {got} 个得到梯度（{zero} 个恰好为零），{none} 个没有梯度",
        "s6.walk": "（没有运行反向传播：依据损失的计算图判断）",
        "s7": "按区域的编码路径", "s7.run": "经过的区域：{regions}",
        "s7.region": "{region}：持有 {layers} 个 LoRA 层，{state}，其中 {reached} 个在启用梯度时运行",
        "traversed": "已经过", "not traversed": "未经过",
    },
}


def render_report(diagnosis: Any, *, lang: str = "en", color: bool = False) -> str:
    if lang not in LABELS:
        raise ValueError(f"lang={lang!r} is not available; the report speaks: {', '.join(sorted(LABELS))}")
    say = LABELS[lang]
    trace = diagnosis.trace
    facts = Facts(trace)
    codes = set(diagnosis.codes("error"))
    mark = _marker(color)
    title = f"{say['title']}{f' [{trace.label}]' if trace.label else ''}: {trace.model_class}"
    lines = [title, "=" * len(title)]
    if not trace.complete:
        lines.append(say["raised"].format(error=trace.error))

    for number, (name, verdict, evidence) in enumerate(_steps(trace, facts, codes, say), 1):
        lines.append(f"{mark(verdict)} {say['step'].format(n=number)}  {name}")
        lines.extend(f"         {line}" for line in evidence)

    errors = [f for f in diagnosis.findings if f.severity == Severity.ERROR.value]
    lines.append("")
    if errors:
        root = errors[0]
        message, fix = root.text(lang)
        lines.append(f"{say['root']}: {root.code}" + (f"  ({root.location})" if root.location else ""))
        lines.extend(_indent(message))
        lines.extend(_indent(say["fix"] + fix))
        if root.stack:
            lines.append("  " + say["stack"])
            lines.extend(f"    {frame}" for frame in root.stack[-5:])
    else:
        lines.append(say["none"] if facts.got_grad is not None else say["unknown"])
    others = [f for f in diagnosis.findings if not errors or f is not errors[0]]
    if others:
        lines += ["", say["also"]]
        for finding in others:
            message, fix = finding.text(lang)
            where = f" ({finding.location})" if finding.location else ""
            lines.append(f"{mark(_verdict_of(finding.severity))} {finding.code}{where}")
            lines.extend(_indent(message, 9))
            if finding.severity != Severity.INFO.value:
                lines.extend(_indent(say["fix"] + fix, 9))
    if trace.notes:
        lines.append("")
        lines.extend(say["note"] + (MESSAGES[note][lang] if note in MESSAGES else note) for note in trace.notes)
    return "\n".join(lines)


def _steps(trace: Any, facts: Facts, codes: set[str], say: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    sites = trace.sites
    steps = []
    adapters = sorted({a for s in sites for a in s.active_adapters})
    step1 = [say["s1.configs"].format(configs=", ".join(short_name(p) or "(model)" for p in trace.peft_configs) or "-"),
             say["s1.layers"].format(layers=len(sites), adapters=", ".join(adapters) or "-")]
    bad1 = codes & {"adapter-missing", "adapter-inactive", "no-lora-params"}
    steps.append((say["s1"], "FAIL" if bad1 else "ok", step1))

    by_region = Counter(s.region for s in sites for _ in s.params)
    step2 = [say["s2.total"].format(count=sum(by_region.values()))]
    step2 += [f"{count:6d}  {short_name(region)}" for region, count in sorted(by_region.items())]
    steps.append((say["s2"], "ok" if by_region else "FAIL", step2))

    total = sum(len(s.params) for s in sites)
    step3 = [say["s3.count"].format(trainable=len(facts.trainable), total=total)]
    steps.append((say["s3"], "FAIL" if "lora-frozen" in codes else "ok", step3))

    eval_names = ", ".join(short_name(m) or "(model)" for m in trace.eval_modules)
    step4 = [say["s4.eval"].format(modules=eval_names)] if trace.eval_modules else [say["s4.ok"]]
    steps.append((say["s4"], "warn" if trace.eval_modules else "ok", step4))

    ran_grad = {m for m, calls in facts.calls.items() if any(c.grad_enabled for c in calls)}
    ran_off = {m for m, calls in facts.calls.items() if m not in ran_grad}
    never = len(sites) - len(ran_grad) - len(ran_off)
    step5 = [say["s5.count"].format(grad=len(ran_grad), off=len(ran_off), never=never)]
    bad5 = codes & {"grad-disabled", "lora-bypassed", "checkpoint-no-grad", "detached", "lora-off-path"}
    steps.append((say["s5"], "FAIL" if bad5 or not ran_grad else "ok", step5))

    if facts.got_grad is None:
        steps.append((say["s6"], "n/a", [say["s6.unknown"]]))
    else:
        arrivals = {a.param: a for a in trace.arrivals}
        zero = sum(1 for p in facts.got_grad if arrivals.get(p) and arrivals[p].zero)
        step6 = [say["s6.count"].format(got=len(facts.got_grad & facts.trainable), trainable=len(facts.trainable),
                                        zero=zero, none=len(facts.starved))]
        if not trace.backward:
            step6.append(say["s6.walk"])
        steps.append((say["s6"], "FAIL" if facts.starved else "ok", step6))

    run = set(trace.regions_run)
    step7 = [say["s7.run"].format(regions=", ".join(short_name(r) for r in facts.traversed_regions) or "-")]
    for region in sorted({s.region for s in sites}):
        layers = [s for s in sites if s.region == region]
        reached = sum(1 for s in layers if s.module in ran_grad)
        state = say["traversed" if region in run else "not traversed"]
        step7.append(say["s7.region"].format(region=short_name(region), layers=len(layers), state=state,
                                             reached=reached))
    steps.append((say["s7"], "FAIL" if "lora-bypassed" in codes else "ok", step7))
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
