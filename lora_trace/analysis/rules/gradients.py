"""What arrived: a loss without grad_fn, non-finite gradients, LoRA missing from the optimizer."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import at, join, listing, text
from ..facts import Facts


def check_gradients(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings: list[Finding] = []
    if trace.losses and not any(loss.has_grad_fn for loss in trace.losses):
        findings.append(make_finding(
            Code.LOSS_NO_GRAD, Severity.ERROR, text("loss-no-grad", kind=facts.kind_of()), text("loss-no-grad.fix"),
            evidence={"loss_sources": sorted({loss.source for loss in trace.losses})},
        ))
    nonfinite = sorted(a.param for a in trace.arrivals if a.finite is False)
    if nonfinite and not trace.scaler_skipped:  # scaled gradients that overflowed: the skip is the finding
        modules = facts.modules_of(nonfinite)
        message = text("nonfinite-grad", params=len(nonfinite), modules=listing(modules), kind=facts.kind_of(modules))
        origin = next((o for o in trace.origins if o.kind in ("nonfinite", "forward-nonfinite")), None)
        if origin is not None:
            message = join(message, text(f"origin.{origin.kind}", op=origin.op, at=at(origin.location)))
        findings.append(make_finding(
            Code.NONFINITE_GRAD, Severity.ERROR, message,
            text("nonfinite-grad.fix"), modules=modules, regions=facts.regions_of(modules),
            location=origin.location if origin else None, stack=origin.stack if origin else (),
            evidence={"born_at": origin.op, "born_in": origin.kind} if origin else {},
        ))
    if trace.optimizer is not None:
        missing = sorted(facts.trainable - set(trace.optimizer.params))
        if missing:
            modules = facts.modules_of(missing)
            held = len(facts.trainable) - len(missing)
            message = text("not-in-optimizer", params=len(missing), kind=facts.kind_of(modules)) if not held else \
                text("not-in-optimizer.partial", params=len(missing), total=len(facts.trainable),
                     kind=facts.kind_of(modules), roles=" / ".join(sorted({facts.params[p].role for p in missing})))
            findings.append(make_finding(
                Code.NOT_IN_OPTIMIZER, Severity.ERROR, message,
                text("not-in-optimizer.fix.partial" if held else "not-in-optimizer.fix"), modules=modules,
                regions=facts.regions_of(modules),
                evidence={"missing_params": len(missing)},
            ))
    return findings
