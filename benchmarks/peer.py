"""lora-trace beside guardtower (a one-step auditor, PyPI 0.1.0) on the project's own scenarios: how often each
notices a failure, names its cause, raises a false alarm on a healthy step, or breaks the step it audits.

Each tool gets a freshly built scenario (same seed). The truth is the scenario's own, checked by a real backward
in the test suite. "Cause named" compares the truth's root cause with the tool's error findings; guardtower's
checks are mapped to the lora-trace code that names the same cause (below); a check with no counterpart (a
parameter "gets no gradient") notices the failure without naming why.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

# guardtower check (error severity) -> the lora-trace code naming the same cause
PEER_CAUSES = {"loss": "loss-no-grad", "lora_adapter": "lora-frozen", "lora_optimizer": "not-in-optimizer",
               "optimizer_coverage": "not-in-optimizer", "nonfinite": "nonfinite-grad", "dist_unused": "ddp-unused"}
# guardtower reports a step it could not run as a finding of these checks
PEER_BROKEN = ("backward", "setup")


def scenarios(quick: bool) -> Iterator[tuple[str, str, Callable[[], Any]]]:
    """(family, name, build) of every scenario the comparison runs; one-step truths only."""
    from lora_trace.scenarios import FAULTS, STRATEGIES, TARGETS, contrastive_qwen2_audio
    from lora_trace.scenarios.causal_lm import CAUSAL_FAULTS, causal_lm
    from lora_trace.scenarios.conditional import CONDITIONAL_KINDS, conditional_model
    from lora_trace.scenarios.timeline import TIMELINE_CASES, timeline_case
    from lora_trace.scenarios.tuners import TUNER_FAULTS, tuner_model, tuner_names

    combos = list(itertools.product(TARGETS, STRATEGIES, FAULTS))
    for targets, strategy, fault in combos[:6] if quick else combos:
        yield "contrastive Qwen2-Audio", f"{targets}/{strategy}/{fault}", (
            lambda t=targets, s=strategy, f=fault: contrastive_qwen2_audio(targets=t, strategy=s, fault=f))
    for fault in CAUSAL_FAULTS[:3] if quick else CAUSAL_FAULTS:
        yield "causal LM", fault, lambda f=fault: causal_lm(fault=f)
    for case in TIMELINE_CASES[:3] if quick else TIMELINE_CASES:
        yield "timeline", case, lambda c=case: timeline_case(c)
    for tuner in tuner_names()[:2] if quick else tuner_names():
        for fault in TUNER_FAULTS:
            yield "PEFT tuners", f"{tuner}/{fault}", lambda t=tuner, f=fault: tuner_model(t, fault=f)
    for kind in CONDITIONAL_KINDS:  # on one step both twins are healthy: the model's own choice
        for broken in (False, True):
            yield "conditional paths (one step)", f"{kind}/{broken}", (
                lambda k=kind, b=broken: _one_step(conditional_model(k, broken=b)))


def _one_step(scenario: Any) -> Any:
    """A conditional scenario judged on one step: its truth is "no error" (the K-step verdict is not asked)."""
    import dataclasses

    return dataclasses.replace(scenario, truth=dataclasses.replace(scenario.truth, findings=()))


def _lora_trace(scenario: Any) -> tuple[list[str], bool]:
    import lora_trace

    try:
        diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer,
                                        scaler=scenario.scaler)
    except Exception:  # noqa: BLE001 - a tool that breaks the step is what is counted
        return [], True
    return list(diagnosis.codes("error")), False


def _guardtower(scenario: Any) -> tuple[list[str], bool]:
    import guardtower

    model = scenario.model
    try:
        report = guardtower.audit(model, lambda: _scalar(scenario.step(model)), optimizer=scenario.optimizer)
    except Exception:  # noqa: BLE001
        return [], True
    checks = [f.check for f in report.errors]
    broken = any(c in PEER_BROKEN for c in checks) or any(
        f.check == "loss" and "raised" in f.message for f in report.errors)
    return checks, broken


def _scalar(loss: Any) -> Any:
    from lora_trace.capture.losses import find_loss

    loss = find_loss(loss)
    return loss if loss.numel() == 1 else loss.sum()


def peer_job(quick: bool = False) -> dict[str, Any]:
    """Run both tools on every scenario; per tool and family: noticed, cause named, false alarms, broken."""
    import warnings

    warnings.filterwarnings("ignore")
    rows = []
    start = time.perf_counter()
    for family, name, build in scenarios(quick):
        expected = build().truth.error_codes
        ours, ours_broken = _lora_trace(build())
        theirs, theirs_broken = _guardtower(build())
        rows.append({"family": family, "name": name, "expected": list(expected),
                     "lora_trace": {"errors": ours, "broken": ours_broken,
                                    "named": bool(expected) and expected[0] in ours},
                     "guardtower": {"errors": theirs, "broken": theirs_broken,
                                    "named": bool(expected) and expected[0] in {PEER_CAUSES.get(c) for c in theirs}}})
    import guardtower

    return {"rows": rows, "guardtower_version": guardtower.__version__, "wall_s": time.perf_counter() - start}


def tally(rows: list[dict[str, Any]], tool: str) -> dict[str, int]:
    """Counts over rows: faulty / healthy scenarios, failures noticed, causes named, false alarms, steps broken."""
    faulty = [r for r in rows if r["expected"]]
    healthy = [r for r in rows if not r["expected"]]
    return {
        "faulty": len(faulty), "healthy": len(healthy),
        "noticed": sum(1 for r in faulty if r[tool]["errors"]),
        "named": sum(1 for r in faulty if r[tool]["named"]),
        "false_alarms": sum(1 for r in healthy if r[tool]["errors"]),
        "broken": sum(1 for r in rows if r[tool]["broken"]),
    }
