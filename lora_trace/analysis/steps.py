"""One verdict over several steps (`diagnose(..., steps=K)`): an adapter the model skips on some steps and
runs on others is healthy; one that got no gradient in any of the K steps is an error, with the most likely
reason read from how the model skipped it. Torch-free."""

from __future__ import annotations

from ..core.findings import Code, Diagnosis, Finding, Severity, make_finding, order_findings
from ..core.messages import listing, text
from . import fold_findings
from .facts import Facts

_RANK = {Severity.ERROR.value: 0, Severity.WARNING.value: 1, Severity.INFO.value: 2}


def judge_steps(diagnoses: list[Diagnosis]) -> Diagnosis:
    """The verdict on K traced steps: each step's findings once per code and location, the model's skips
    judged across the steps. The last step's trace is the one drawn; every step's trace is kept."""
    if len(diagnoses) == 1:
        return diagnoses[0]
    facts = [Facts(d.trace) for d in diagnoses]
    findings: dict[tuple[str, str | None], Finding] = {}
    for diagnosis in diagnoses:
        for finding in diagnosis.findings:
            key = (finding.code, finding.location)
            kept = findings.get(key)  # the first of the most severe: a warm-up's start is information, a
            if finding.code != Code.SKIPPED_BY_MODEL.value and (  # later stall of the same code a warning
                    kept is None or _RANK[finding.severity] < _RANK[kept.severity]):
                findings[key] = finding
    findings.update({(f.code, "steps"): f for f in _skips_across(facts)})
    _schedule_across(diagnoses, findings)
    return Diagnosis(fold_findings(order_findings(list(findings.values()))), diagnoses[-1].trace,
                     steps=tuple(d.trace for d in diagnoses))


def _schedule_across(diagnoses: list[Diagnosis], findings: dict[tuple[str, str | None], Finding]) -> None:
    """A learning rate of 0 is a warm-up's start or a schedule that has reached 0. One step cannot tell which,
    but K steps can. Steps that did not update followed by steps that did are a warm-up, so the warning goes.
    A step that did not update after one that did means the schedule has ended the training, which is an
    error."""
    key = (Code.NOT_UPDATED.value, None)
    warned = findings.get(key)
    if warned is None or (warned.severity == Severity.ERROR.value and warned.evidence.get("why") != "schedule-ended"):
        return
    updated = [bool(d.trace.optimizer and d.trace.optimizer.updated) for d in diagnoses]
    stalled = [any(f.code == Code.NOT_UPDATED.value and not f.evidence.get("rounded") for f in d.findings)
               for d in diagnoses]
    first_stall = next((i for i in range(len(diagnoses)) if stalled[i] and any(updated[:i])), None)
    if first_stall is not None:  # a stall after an update (a warm-up's own start may come before both)
        last = next(i for i in range(first_stall - 1, -1, -1) if updated[i])
        findings[key] = make_finding(
            Code.NOT_UPDATED, Severity.ERROR, text("not-updated.decayed", updated=last, stalled=first_stall,
                                                   steps=len(diagnoses), modules=listing(warned.modules)),
            text("not-updated.decayed.fix"), modules=warned.modules, regions=warned.regions,
            evidence={**warned.evidence, "last_updated_step": last, "first_stalled_step": first_stall})
        return
    if any(updated):  # every stall came before every update
        del findings[key]  # a warm-up: the first steps held still, the later ones learn


def _skips_across(facts: list[Facts]) -> list[Finding]:
    got = frozenset().union(*(f.got_grad or frozenset() for f in facts))
    skipped_some = {m for f in facts for m in f.skips}
    if not skipped_some:
        return []
    last = facts[-1]
    never = sorted(m for m in skipped_some if all(m in f.skips for f in facts)  # skipped on every step
                   and not any(p in got for p in last.sites[m].trainable_params))
    learned = sorted(m for m in skipped_some - set(never) if any(p in got for p in last.sites[m].trainable_params))
    findings = []
    if never:
        findings.append(_never_ran(facts, never))
    if learned:
        findings.append(make_finding(
            Code.SKIPPED_BY_MODEL, Severity.INFO,
            text("skipped.steps", count=len(learned), steps=len(facts)), text("skipped-by-model.fix.steps"),
            modules=tuple(learned), regions=last.regions_of(learned),
            evidence={"steps": len(facts), "skipped_in": {m: sum(m in f.skips for f in facts) for m in learned}}))
    return findings


def _never_ran(facts: list[Facts], modules: list[str]) -> Finding:
    """Adapter layers no step ran: which module around them was skipped, and whether its siblings ran (routing
    or layer drop never picks it) or nothing like it did (the batches lack what it needs)."""
    skips = [f.skips[m] for f in facts for m in modules if m in f.skips]
    skipped = sorted({s.skipped for s in skips})
    enclosing = sorted({s.enclosing for s in skips})
    ran = set().union(*(set(f.trace.enclosing_called) for f in facts))
    kinds = dict(zip(facts[-1].trace.enclosing or (), facts[-1].trace.enclosing_types, strict=False))
    siblings = sorted(set(_siblings(ran, skipped, kinds)) - set(skipped))
    collection = any(len(group) > 1 for group in _groups(skipped, kinds).values())  # layers.0 and .1 both skipped
    reason = "routed" if siblings else "dropped" if collection else "absent"
    last = facts[-1]
    n_params = sum(len(last.sites[m].trainable_params) for m in modules)
    return make_finding(
        Code.LORA_BYPASSED, Severity.ERROR,
        text(f"never-ran.{reason}", layers=len(modules), params=n_params, steps=len(facts), skipped=listing(skipped),
             enclosing=listing(enclosing, empty=text("model.root")), siblings=listing(siblings)),
        text(f"never-ran.{reason}.fix"), modules=tuple(modules), regions=last.regions_of(modules),
        evidence={"steps": len(facts), "skipped": skipped, "ran": enclosing, "siblings_ran": siblings,
                  "starved_params": n_params})


def _groups(names: list[str] | set[str], kinds: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Modules grouped by (parent, class): expert_0..expert_3 of one MoE block, layers.0..N of one encoder."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        if kinds.get(name) is not None:
            groups.setdefault((name.rpartition(".")[0], kinds[name]), []).append(name)
    return groups


def _siblings(names: list[str] | set[str], of: list[str], kinds: dict[str, str]) -> list[str]:
    """Those of `names` that share a parent and a class with one of `of` (not the language model beside the
    audio tower: a different class)."""
    wanted = {(o.rpartition(".")[0], kinds[o]) for o in of if kinds.get(o) is not None}
    return [n for key, group in _groups(names, kinds).items() if key in wanted for n in group]


__all__ = ["judge_steps"]
