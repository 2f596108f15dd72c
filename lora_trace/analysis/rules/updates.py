"""After the gradient: were the LoRA parameters updated, and was there anything to learn from?"""

from __future__ import annotations

import math

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import listing, text
from ..facts import Facts


def check_updates(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings = []
    if trace.labels_all_ignored:
        loss = next((x.value for x in trace.losses if x.value is not None), None)
        shown = "NaN" if loss is not None and math.isnan(loss) else "undefined"
        findings.append(make_finding(
            Code.NO_SUPERVISED_TOKENS, Severity.ERROR, text("no-supervised-tokens", loss=shown),
            text("no-supervised-tokens.fix"), evidence={"loss": loss},
        ))
    optimizer = trace.optimizer
    if optimizer is None or optimizer.updated is None or not (trace.optimizer_steps or trace.scaler_skipped):
        return findings
    arrivals = {a.param: a for a in trace.arrivals}
    held = set(optimizer.params)
    stale = sorted(p for p in facts.trainable & held
                   if p in arrivals and arrivals[p].zero is False and p not in optimizer.updated)
    if stale:
        modules = facts.modules_of(stale)
        zero_lr = any(lr == 0 for lr in optimizer.lrs)
        why = text("why.scaler" if trace.scaler_skipped else "why.lr-zero" if zero_lr else "why.skipped")
        findings.append(make_finding(
            Code.NOT_UPDATED, Severity.ERROR,
            text("not-updated", params=len(stale), modules=listing(modules), why=why, lrs=list(optimizer.lrs)),
            text("not-updated.fix"), modules=modules,
            regions=facts.regions_of(modules),
            evidence={"stale_params": len(stale), "lrs": list(optimizer.lrs), "steps": trace.optimizer_steps},
        ))
    return findings
