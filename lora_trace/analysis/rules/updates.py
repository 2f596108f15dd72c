"""After the gradient: were the LoRA parameters updated, and was there anything to learn from?"""

from __future__ import annotations

import math

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import listing, text
from ...core.records import OptimizerInfo
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
    if optimizer is not None and optimizer.frozen:
        findings.append(make_finding(Code.FROZEN_IN_OPTIMIZER, Severity.INFO,
                                     text("frozen-in-optimizer", count=optimizer.frozen),
                                     text("frozen-in-optimizer.fix"), evidence={"frozen": optimizer.frozen}))
    if optimizer is None or optimizer.updated is None or not (trace.optimizer_steps or trace.scaler_skipped):
        return findings
    arrivals = {a.param: a for a in trace.arrivals}
    held = set(optimizer.params)
    still = sorted(p for p in facts.trainable & held
                   if p in arrivals and arrivals[p].zero is False and p not in optimizer.updated)
    stale = [p for p in still if p not in optimizer.rounded]
    if stale:
        findings.append(_not_updated(facts, optimizer, stale))
    if rounded := [p for p in still if p in optimizer.rounded]:
        modules = facts.modules_of(rounded)
        findings.append(make_finding(
            Code.NOT_UPDATED, Severity.INFO, text("not-updated.rounded", params=len(rounded), modules=listing(modules),
                                                  kind=facts.kind_of(modules)),
            text("not-updated.rounded.fix"), modules=modules, regions=facts.regions_of(modules),
            evidence={"stale_params": len(rounded), "rounded": True, "steps": trace.optimizer_steps}))
    return findings


def _not_updated(facts: Facts, optimizer: OptimizerInfo, stale: list[str]) -> Finding:
    """Values that did not move. The learning rate is the one the update used (read as optimizer.step()
    started; a scheduler moves it right after). Zero at a warm-up's start (`initial_lr` > 0, what torch's
    schedulers set) is expected at a warm-up's start: information where the step shows one beginning (the
    optimizer's very first step: its state table was empty and is not now; and the schedule raised the rate above
    0 by the block's end), an error where it shows a schedule that has ended (the optimizer held state before
    this step and the rate is still 0 at the block's end), a warning where it cannot tell."""
    trace = facts.trace
    lrs = list(optimizer.step_lrs if optimizer.step_lrs is not None else optimizer.lrs)
    zero_lr = any(lr == 0 for lr in lrs)
    initial = list(optimizer.initial_lrs)
    warmup = zero_lr and len(initial) == len(lrs) and all(
        lr != 0 or (first is not None and first > 0) for lr, first in zip(lrs, initial, strict=True))
    # each group at 0 in the update is above 0 at the block's end (a group added after the step: not compared)
    rising = all(now is not None and now > 0 for used, now in zip(lrs, optimizer.lrs, strict=False) if used == 0)
    cleared = set(stale) <= set(optimizer.no_grad_at_step)  # they got gradients, gone when the update ran
    if trace.scaler_skipped:
        why, severity = "why.scaler", Severity.ERROR
    elif cleared and not zero_lr:
        why, severity = "why.cleared", Severity.ERROR
    elif set(stale) <= set(optimizer.zero_at_step) | set(optimizer.no_grad_at_step) and not zero_lr:
        why, severity = "why.zeroed", Severity.ERROR  # gradients that arrived, all zero at the update
    elif set(stale) <= set(optimizer.coarse) and not zero_lr:  # most of each update below the values' precision
        why, severity = "why.precision", Severity.ERROR
    elif warmup and optimizer.first_step and rising:  # its first step, and the schedule has started to rise
        why, severity = "why.warmup-start", Severity.INFO
    elif warmup and optimizer.first_step is False and not rising:  # a warm-up from 0 holds 0 for the first step
        why, severity = "why.schedule-ended", Severity.ERROR  # only; this optimizer had stepped before
    elif warmup:
        why, severity = "why.warmup", Severity.WARNING
    else:
        why, severity = ("why.lr-zero" if zero_lr else "why.unmoved"), Severity.ERROR  # a scaler's skip: above
    modules = facts.modules_of(stale)
    fix = _FIXES.get(why, "not-updated.fix.warmup" if warmup else "not-updated.fix")
    return make_finding(
        Code.NOT_UPDATED, severity,
        text("not-updated", params=len(stale), modules=listing(modules), why=text(why, initial=initial), lrs=lrs,
             kind=facts.kind_of(modules)),
        text(fix), modules=modules, regions=facts.regions_of(modules),
        evidence={"stale_params": len(stale), "lrs": lrs, "initial_lrs": initial, "steps": trace.optimizer_steps,
                  "why": why.removeprefix("why.")},
    )


_FIXES = {"why.cleared": "not-updated.fix.cleared", "why.zeroed": "not-updated.fix.zeroed",
          "why.schedule-ended": "not-updated.fix.schedule", "why.precision": "not-updated.fix.precision"}
