"""What the step's timeline says: the adapter state each LoRA layer had when it ran, the flags at the end of
the step, the state changes made during it. The state at `__enter__` is only the starting point: a layer
is judged by the state it ran in. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ..core.records import AdapterState, LoraSite, Phase, StateChange

if TYPE_CHECKING:
    from .facts import Facts

# Why an adapter added no delta, most telling first, and the kind of state change that causes it.
REASONS = ("disabled", "merged", "idle", "scaled")
_CHANGE_OF = {"disabled": "requires-grad", "merged": "base-write", "idle": "requires-grad"}


def start_state(site: LoraSite) -> AdapterState:
    zero = tuple(a for a, s in site.scalings if s == 0 and a in site.active_adapters)
    return AdapterState(site.active_adapters, site.disabled, site.merged, zero)


def _reason(state: AdapterState, adapter: str) -> str:
    if state.disabled:
        return "disabled"
    if state.merged:
        return "merged"
    return "idle" if adapter not in state.active else "scaled"


@dataclass(frozen=True)
class Timeline:
    facts: Facts

    def states(self, site: LoraSite) -> list[AdapterState]:
        """The states the layer ran in (forward calls), or its state at the start when it never ran."""
        ran = [c.state for c in self.facts.calls.get(site.module, []) if c.state is not None
               and c.phase is Phase.FORWARD]
        return ran or [start_state(site)]

    @cached_property
    def inactive(self) -> dict[str, dict[str, str]]:
        """LoRA layer -> {adapter: reason} for adapters holding trainable parameters that added no delta in
        any call of the layer (disabled, merged, not active, scaled to zero)."""
        table: dict[str, dict[str, str]] = {}
        for site in self.facts.trace.sites:
            held = set(site.adapters)  # adapters meant to train here, and those active at the start (PEFT
            # freezes an adapter's parameters when it disables it, so a frozen active adapter still counts)
            wanted = sorted({p.adapter for p in site.params if p.requires_grad} | (held & set(site.active_adapters)))
            states = self.states(site)
            for adapter in wanted:
                if not any(s.contributes(adapter) for s in states):
                    table.setdefault(site.module, {})[adapter] = _reason(states[0], adapter)
        return table

    def explained(self, site: LoraSite, param: str) -> bool:
        """Whether the parameter's adapter was inactive whenever the layer ran (adapter-inactive says so)."""
        adapter = next(p.adapter for p in site.params if p.name == param)
        return adapter in self.inactive.get(site.module, {})

    def change(self, modules: tuple[str, ...] | list[str], reasons: set[str]) -> StateChange | None:
        """The first state change during the step that touched these layers and can cause these reasons."""
        kinds = {_CHANGE_OF[r] for r in reasons if r in _CHANGE_OF}
        wanted = set(modules)
        for change in sorted(self.facts.trace.changes, key=lambda c: c.order):
            if change.kind in kinds and change.value is not True and wanted & set(change.modules):
                return change
        return None

    @cached_property
    def frozen_during_step(self) -> frozenset[str]:
        """LoRA parameters trainable at the start and frozen when the step ended."""
        end = self.facts.trace.trainable_at_end
        return frozenset() if end is None else self.facts.trainable - set(end)

    @cached_property
    def references(self) -> tuple[str, ...]:
        """Frozen LoRA layers that ran only with grad off and hold nothing the optimizer updates, beside
        trainable ones: a reference copy (DPO/KL reference, EMA teacher), not a failure."""
        if not self.facts.trainable:
            return ()
        held = set(self.facts.trace.optimizer.params) if self.facts.trace.optimizer else set()
        found = []
        for site in self.facts.trace.sites:
            calls = self.facts.calls.get(site.module, [])
            if (not site.trainable_params and calls and not any(c.grad_enabled for c in calls)
                    and not any(p.name in held for p in site.params)):
                found.append(site.module)
        return tuple(found)

    @cached_property
    def reference_adapters(self) -> tuple[str, ...]:
        """Frozen adapters beside a trainable one that added their delta only in calls with grad off and that no
        optimizer holds: a reference the step switches to for a no-grad pass (TRL's "ref" copy of a loaded
        adapter, made active by set_adapter for the DPO/KL reference), not an adapter meant to train."""
        if not self.facts.trainable:
            return ()
        held = set(self.facts.trace.optimizer.params) if self.facts.trace.optimizer else set()
        params: dict[str, list] = {}
        for site in self.facts.trace.sites:
            for p in site.params:
                params.setdefault(p.adapter, []).append(p)
        found = []
        for adapter, adapter_params in params.items():
            if any(p.requires_grad or p.name in held for p in adapter_params):
                continue
            contributing = [c for c in self.facts.trace.calls if c.state is not None and c.phase is Phase.FORWARD
                            and c.state.contributes(adapter)]
            if contributing and not any(c.grad_enabled for c in contributing):
                found.append(adapter)
        return tuple(sorted(found))

    @cached_property
    def ran_in_eval(self) -> tuple[str, ...] | None:
        """LoRA layers that ran with grad enabled while in eval mode; None for runs that did not record it."""
        calls = [c for c in self.facts.trace.calls if c.grad_enabled]
        if any(c.training is None for c in calls):
            return None
        return tuple(sorted({c.module for c in calls if c.training is False}))
