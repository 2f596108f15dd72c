"""What arrived: a loss without grad_fn, non-finite gradients, the zero lora_A gradient at init, the optimizer."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import listing, text
from ..facts import Facts


def check_gradients(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings: list[Finding] = []
    if trace.losses and not any(loss.has_grad_fn for loss in trace.losses):
        findings.append(make_finding(
            Code.LOSS_NO_GRAD, Severity.ERROR, text("loss-no-grad"), text("loss-no-grad.fix"),
            evidence={"loss_sources": sorted({loss.source for loss in trace.losses})},
        ))
    nonfinite = sorted(a.param for a in trace.arrivals if a.finite is False)
    if nonfinite and not trace.scaler_skipped:  # scaled gradients that overflowed: the skip is the finding
        modules = facts.modules_of(nonfinite)
        findings.append(make_finding(
            Code.NONFINITE_GRAD, Severity.ERROR,
            text("nonfinite-grad", params=len(nonfinite), modules=listing(modules)),
            text("nonfinite-grad.fix"), modules=modules, regions=facts.regions_of(modules),
        ))
    findings.extend(_zero_at_init(facts))
    if trace.optimizer is not None:
        missing = sorted(facts.trainable - set(trace.optimizer.params))
        if missing:
            modules = facts.modules_of(missing)
            findings.append(make_finding(
                Code.NOT_IN_OPTIMIZER, Severity.ERROR, text("not-in-optimizer", params=len(missing)),
                text("not-in-optimizer.fix"), modules=modules, regions=facts.regions_of(modules),
                evidence={"missing_params": len(missing)},
            ))
    return findings


def _zero_at_init(facts: Facts) -> list[Finding]:
    """lora_A gradients exactly zero only because lora_B is still all zero: normal at the first step."""
    arrivals = {a.param: a for a in facts.trace.arrivals}
    modules = []
    for site in facts.trace.sites:
        b_params = {p.adapter: p for p in site.params if p.role in ("lora_B", "lora_embedding_B")}
        for a in (p for p in site.params if p.role in ("lora_A", "lora_embedding_A")):
            b = b_params.get(a.adapter)
            got_a, got_b = arrivals.get(a.name), arrivals.get(b.name) if b else None
            if b and b.all_zero and got_a and got_a.zero and got_b and got_b.zero is False:
                modules.append(site.module)
                break
    if not modules:
        return []
    message = text("zero-grad-at-init", layers=len(modules))
    return [make_finding(Code.ZERO_GRAD_AT_INIT, Severity.INFO, message, text("zero-grad-at-init.fix"),
                         modules=tuple(modules), regions=facts.regions_of(modules))]
