"""Analysis: from a frozen `Trace` to a `Diagnosis`. Facts are derived once (`facts`), the rules
(`rules/`) turn them into findings, which are ordered and folded here; comparisons of runs live here too.
Torch-free, so saved runs are judged anywhere. May import: `lora_trace.core` only.
"""

from __future__ import annotations

import dataclasses

from ..core.findings import Code, Diagnosis, Finding, Severity, order_findings
from ..core.messages import text
from ..core.records import Trace
from .facts import Facts
from .rules.config import check_config
from .rules.gradients import check_gradients
from .rules.paths import check_paths
from .rules.targets import check_targets
from .rules.updates import check_updates
from .rules.zeros import check_zeros


def diagnose_trace(trace: Trace) -> Diagnosis:
    facts = Facts(trace)
    findings = (check_config(facts) + check_targets(facts) + check_paths(facts) + check_gradients(facts)
                + check_zeros(facts) + check_updates(facts))
    return Diagnosis(fold_findings(order_findings(findings)), trace)


def fold_findings(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """A loss without grad_fn is a consequence when another error explains it: fold it into the root."""
    errors = [f for f in findings if f.severity == Severity.ERROR.value]
    consequence = next((f for f in errors if f.code == Code.LOSS_NO_GRAD.value), None)
    if consequence is None or len(errors) == 1:
        return findings
    root = errors[0]
    extra = text("folded-loss")
    translations = {lang: {**t, "message": t["message"] + extra[lang]} for lang, t in root.translations.items()}
    folded = dataclasses.replace(root, message=root.message + extra["en"], translations=translations,
                                 evidence={**root.evidence, "loss_has_grad_fn": False})
    return tuple(folded if f is root else f for f in findings if f is not consequence)


__all__ = ["diagnose_trace", "fold_findings"]
