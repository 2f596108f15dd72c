"""Gradients that arrive and are exactly zero: normal at the first step for the factor beside one still all
zero (lora_A beside lora_B), an error otherwise (the adapter was masked off for this batch, dropped, or
multiplied by zero)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import at, join, listing, text
from ..facts import Facts


def check_zeros(facts: Facts) -> list[Finding]:
    at_init = _zero_at_init(facts)
    findings = []
    if at_init.modules:
        modules = tuple(at_init.modules)
        findings.append(make_finding(
            Code.ZERO_GRAD_AT_INIT, Severity.INFO,
            text("zero-grad-at-init", layers=len(modules), kind=facts.kind_of(modules),
                 waiting=" / ".join(sorted(at_init.waiting)), zero=" / ".join(sorted(at_init.zero))),
            text("zero-grad-at-init.fix"), modules=modules, regions=facts.regions_of(modules)))
    zero = _unexplained_zeros(facts, at_init.params)
    if zero:
        findings.append(_grad_zero(facts, zero))
    return findings


@dataclass
class _AtInit:
    """The first step's expected zeros: the parameters, their layers, and the factors' roles by name."""

    params: set[str] = field(default_factory=set)
    modules: list[str] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)  # roles whose gradient is zero: "lora_A", "hada_w1_a"
    zero: set[str] = field(default_factory=set)  # roles still all zero that got a gradient: "lora_B"


def _zero_at_init(facts: Facts) -> _AtInit:
    """Gradients exactly zero only because another factor of the same adapter is still all zero (whichever the
    tuner initialised to zero: lora_B, lora_embedding_A, hada_w2_b, ...), which itself got a gradient. The roles
    come from the parameters, so the sentence names the tuner's own factors."""
    arrivals = {a.param: a for a in facts.trace.arrivals}
    optimizer = facts.trace.optimizer
    held = None if optimizer is None else set(optimizer.params)
    found = _AtInit()
    for site in facts.trace.sites:
        for adapter in site.adapters:
            own = facts.factors(site, adapter)
            zero = [p for p in own if p.all_zero and arrivals.get(p.name) and arrivals[p.name].zero is False]
            explained = [p for p in site.params if zero and p.adapter == adapter and p not in zero
                         and arrivals.get(p.name) and arrivals[p.name].zero]
            if explained:
                found.params.update(p.name for p in explained)
                if held is not None and any(p.name not in held for p in zero):
                    continue  # no update will move the zero factor: not-in-optimizer says so, no promise here
                found.waiting.update(p.role for p in explained)
                found.zero.update(p.role for p in zero)
                if site.module not in found.modules:
                    found.modules.append(site.module)
    return found


def _unexplained_zeros(facts: Facts, at_init: set[str]) -> list[str]:
    """Trainable LoRA parameters whose gradient is exactly zero with no other finding explaining it."""
    trace = facts.trace
    if trace.labels_all_ignored:  # no-supervised-tokens explains every zero
        return []
    inactive = facts.timeline.inactive
    return sorted(a.param for a in trace.arrivals if a.zero and a.param in facts.trainable
                  and a.param not in at_init and facts.module_of.get(a.param) is not None
                  and _adapter(facts, a.param) not in inactive.get(facts.module_of[a.param], {})
                  and not _sibling_may_be_zero(facts, a.param))


def _sibling_may_be_zero(facts: Facts, param: str) -> bool:
    """Another factor of the same adapter is all zero, or not known not to be (sharded, meta): then this
    exactly-zero gradient may be the normal first step, and proves nothing."""
    own = facts.params[param]
    return any(p.all_zero is not False for site in _users(facts, param)
               for p in facts.factors(site, own.adapter) if p.name != param)


def _users(facts: Facts, param: str) -> list:
    """The layers computing with `param`: the one holding it and those sharing it."""
    return [facts.sites[facts.module_of[param]], *facts.sharers.get(param, ())]


def _adapter(facts: Facts, param: str) -> str:
    site = facts.sites[facts.module_of[param]]
    return next(p.adapter for p in site.params if p.name == param)


def _grad_zero(facts: Facts, zero: list[str]) -> Finding:
    modules = facts.modules_of(zero)
    adapters = tuple(sorted({_adapter(facts, p) for p in zero}))
    causes = sorted({_cause(facts.config_of(m, a)) for m in modules for a in adapters
                     if facts.config_of(m, a) is not None} or {"masked"})
    kind = facts.kind_of(modules)
    why = text(f"why.zero.{causes[0]}", p=_dropout(facts, modules, adapters), kind=kind)
    message = text("grad-zero", params=len(zero), regions=listing(facts.regions_of(modules)), why=why,
                   kind=kind)
    origin = next((o for o in facts.trace.origins if o.kind == "zero"), None)
    if origin is not None:
        message = join(message, text("origin.zero", op=origin.op, at=at(origin.location)))
    return make_finding(
        Code.GRAD_ZERO, Severity.ERROR, message,
        text(f"grad-zero.fix.{causes[0]}", kind=kind), modules=modules, regions=facts.regions_of(modules),
        adapters=adapters,
        location=origin.location if origin else None, stack=origin.stack if origin else (),
        evidence={"zero_params": len(zero), "causes": causes, **({"born_at": origin.op} if origin else {})},
    )


def _cause(config: dict | None) -> str:
    """What the adapter's configuration says about an exactly-zero gradient (PEFT's own switches)."""
    if config is None:
        return "masked"
    dropout = config.get("lora_dropout")
    if isinstance(dropout, (int, float)) and dropout >= 1.0:
        return "dropout"
    if config.get("alora_invocation_tokens"):
        return "alora"
    return "masked"


def _dropout(facts: Facts, modules: tuple[str, ...], adapters: tuple[str, ...]) -> object:
    values = {(facts.config_of(m, a) or {}).get("lora_dropout") for m in modules for a in adapters}
    return next(iter(values)) if len(values) == 1 else "-"
