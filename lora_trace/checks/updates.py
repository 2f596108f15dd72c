"""After the gradient: were the LoRA parameters updated, and was there anything to learn from?"""

from __future__ import annotations

import math

from ..findings import Code, Finding, Severity
from .facts import Facts, names


def check_updates(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings = []
    if trace.labels_all_ignored:
        loss = next((x.value for x in trace.losses if x.value is not None), None)
        findings.append(Finding(
            Code.NO_SUPERVISED_TOKENS.value, Severity.ERROR.value,
            "Every label in the batch equals the ignore index -100: no token is supervised, so the loss is "
            f"{'NaN' if loss is not None and math.isnan(loss) else 'empty'} and the gradients carry nothing.",
            "Check the collator / label masking: prompt masking that also masks the answer, truncation that cuts "
            "every answer, or padding labelled -100 everywhere.",
            evidence={"loss": loss},
        ))
    optimizer = trace.optimizer
    if optimizer is None or optimizer.updated is None or trace.optimizer_steps == 0:
        return findings
    arrivals = {a.param: a for a in trace.arrivals}
    held = set(optimizer.params)
    stale = sorted(p for p in facts.trainable & held
                   if p in arrivals and arrivals[p].zero is False and p not in optimizer.updated)
    if stale:
        modules = tuple(sorted({p.rsplit(".lora_", 1)[0] for p in stale}))
        zero_lr = any(lr == 0 for lr in optimizer.lrs)
        why = "a learning rate of 0" if zero_lr else "a skipped step (a GradScaler that found inf/NaN?)"
        findings.append(Finding(
            Code.NOT_UPDATED.value, Severity.ERROR.value,
            f"{len(stale)} LoRA parameters got non-zero gradients and sit in the optimizer, but their values did "
            f"not change over the step ({names(modules)}): {why}. Learning rates: {list(optimizer.lrs)}.",
            "Check the learning-rate schedule (warm-up starting at 0), and the GradScaler's scale and inf checks.",
            modules, tuple(sorted({facts.sites[m].region for m in modules if m in facts.sites})),
            evidence={"stale_params": len(stale), "lrs": list(optimizer.lrs), "steps": trace.optimizer_steps},
        ))
    return findings
