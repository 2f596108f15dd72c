"""Adapter state and flags, read from the timeline: missing adapter, inactive when the layers ran, frozen
(at the start or by the step), a frozen reference copy, eval mode while training."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import LANGUAGES, at, clauses, join, listing, text
from ..facts import Facts
from ..timeline import REASONS


def check_config(facts: Facts) -> list[Finding]:
    trace = facts.trace
    unsupported = _unsupported(facts)
    if not trace.sites and not unsupported:
        key = "no-lora-params" if trace.peft_configs else "adapter-missing"
        code = Code.NO_LORA_PARAMS if trace.peft_configs else Code.ADAPTER_MISSING
        if trace.peft_configs and any(t.matched for t in trace.targets):  # the targets select plain modules:
            key = "no-lora-params.unloaded"  # their adapter layers were taken out (merge_and_unload, unload)
        return [make_finding(code, Severity.ERROR, text(key), text(f"{key}.fix"))]
    findings = unsupported + _inactive(facts) + _frozen(facts) + _references(facts) + _base_trainable(facts)
    eval_mode = _eval_mode(facts)
    return findings + ([eval_mode] if eval_mode else [])


def _unsupported(facts: Facts) -> list[Finding]:
    """Adapters of a tuner whose gradients lora-trace does not reason about: one warning naming them, never a
    claim that the model holds no adapter."""
    tuners = facts.trace.unsupported_tuners
    if not tuners:
        return []
    names = [name for name, _ in tuners]
    return [make_finding(Code.TUNER_UNSUPPORTED, Severity.WARNING,
                         text("tuner-unsupported", tuners=listing(names),
                              count=sum(n for _, n in tuners)),
                         text("tuner-unsupported.fix"), evidence={"tuners": dict(tuners)})]


def _base_trainable(facts: Facts) -> list[Finding]:
    """Base weights left trainable beside the adapters: the step trains the whole model (a warning: it may be
    meant, but then LoRA is not what trains)."""
    base = facts.trace.trainable_base
    if base is None:
        return []
    return [make_finding(Code.BASE_TRAINABLE, Severity.WARNING,
                         text("base-trainable", count=base.params, values=f"{base.values:,}",
                              examples=listing(base.examples, 3)),
                         text("base-trainable.fix"), evidence={"params": base.params, "values": base.values})]


def _inactive(facts: Facts) -> list[Finding]:
    inactive = facts.timeline.inactive
    if not inactive:
        return []
    sites = [s for s in facts.trace.sites if s.module in inactive]
    kinds = sorted({k for reasons in inactive.values() for k in reasons.values()}, key=REASONS.index)
    adapters = tuple(sorted({a for reasons in inactive.values() for a in reasons}))
    active = sorted({a for s in sites for state in facts.timeline.states(s) for a in state.active})
    idle = sorted({a for reasons in inactive.values() for a, k in reasons.items() if k == "idle"})
    described = {k: text(f"reason.{k}", idle=", ".join(idle) or "-", active=", ".join(active) or "-")
                 for k in kinds}
    reasons = {lang: " / ".join(described[k][lang] for k in kinds) for lang in LANGUAGES}
    modules = tuple(s.module for s in sites)
    change = facts.timeline.change(modules, set(kinds))
    message = text("adapter-inactive", layers=len(sites), regions=listing({s.region for s in sites}),
                   reasons=reasons, adapters=", ".join(adapters), kind=facts.kind_of(modules))
    if change is not None:
        message = join(message, text("adapter-inactive.changed", at=at(change.location)))
    return [make_finding(
        Code.ADAPTER_INACTIVE, Severity.ERROR, message, clauses(*[text(f"fix.{k}") for k in kinds]),
        modules=modules, regions=tuple(sorted({s.region for s in sites})), adapters=adapters,
        location=change.location if change else None, stack=change.stack if change else (),
        evidence={"reasons": kinds, "when": "during the step" if change else "when the layers ran"},
    )]


def _frozen(facts: Facts) -> list[Finding]:
    """Active-adapter LoRA parameters that cannot learn: frozen at the start, or frozen by the step itself."""
    timeline = facts.timeline
    references = set(timeline.references)
    reference_adapters = set(timeline.reference_adapters)
    params = []
    for site in facts.trace.sites:
        if site.module in references:
            continue
        active = {a for state in timeline.states(site) for a in state.active}
        inactive = timeline.inactive.get(site.module, {})
        for p in site.params:
            if p.adapter in inactive or p.adapter not in active or p.adapter in reference_adapters:
                continue
            frozen_by_step = p.name in timeline.frozen_during_step and p.name in facts.starved
            if not p.requires_grad or frozen_by_step:
                params.append(p.name)
    if not params:
        return []
    modules = facts.modules_of(params)
    change = timeline.change(modules, {"idle"}) if set(params) & timeline.frozen_during_step else None
    return [make_finding(
        Code.LORA_FROZEN, Severity.ERROR,
        text("lora-frozen", params=len(params), regions=listing(facts.regions_of(modules)),
             kind=facts.kind_of(modules)), text("lora-frozen.fix"),
        modules=modules, regions=facts.regions_of(modules),
        adapters=tuple(sorted({p.adapter for s in facts.trace.sites for p in s.params if p.name in set(params)})),
        location=change.location if change else None, stack=change.stack if change else (),
        evidence={"frozen_params": len(params)},
    )]


def _references(facts: Facts) -> list[Finding]:
    found = []
    references = facts.timeline.references
    if references:
        regions = facts.regions_of(references)
        found.append(make_finding(Code.FROZEN_REFERENCE, Severity.INFO,
                                  text("frozen-reference", layers=len(references), regions=listing(regions),
                                       kind=facts.kind_of(references)),
                                  text("frozen-reference.fix"), modules=references, regions=regions))
    adapters = facts.timeline.reference_adapters
    if adapters:
        modules = tuple(s.module for s in facts.trace.sites if set(s.adapters) & set(adapters))
        regions = facts.regions_of(modules)
        found.append(make_finding(Code.FROZEN_REFERENCE, Severity.INFO,
                                  text("frozen-reference.adapter", adapters=", ".join(adapters),
                                       layers=len(modules), regions=listing(regions), kind=facts.kind_of(modules)),
                                  text("frozen-reference.fix"), modules=modules, regions=regions, adapters=adapters))
    return found


def _eval_mode(facts: Facts) -> Finding | None:
    """Modules in eval mode during the training step (dropout off), judged by the mode the LoRA layers ran in:
    a model put in train mode before its forward (the HF Trainer's `training_step`) is not warned, nor a
    frozen reference that ran only with grad off; a model switched to eval inside the step is."""
    trace = facts.trace
    ran = facts.timeline.ran_in_eval
    modules = [m for m in trace.eval_modules if ran is None or _stayed_in_eval(facts, m)]
    if ran:
        covered = [r for r in ran if any(r == m or r.startswith(m + ".") or m == "" for m in modules)]
        modules += [r for r in facts.regions_of(sorted(set(ran) - set(covered))) if r not in modules]
    if not modules:
        return None
    return make_finding(Code.EVAL_MODE, Severity.WARNING,
                        text("eval-mode", modules=listing(modules, empty=text("model.root"))),
                        text("eval-mode.fix"), modules=tuple(modules), regions=tuple(modules))


def _stayed_in_eval(facts: Facts, module: str) -> bool:
    """Whether a module in eval mode at the start still was when its LoRA layers ran (or they never ran)."""
    inside = [s for s in facts.trace.sites if module == "" or s.module == module or s.module.startswith(module + ".")]
    calls = [c for s in inside for c in facts.calls.get(s.module, [])]
    if calls and all(c.training for c in calls if c.grad_enabled) and any(c.grad_enabled for c in calls):
        return False  # put in train mode before the forward
    reference = set(facts.timeline.references)
    return not (inside and all(s.module in reference for s in inside))
