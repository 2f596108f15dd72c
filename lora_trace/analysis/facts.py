"""Facts derived once from a Trace: the one place that answers "which module holds this parameter", "which
region", "did this LoRA layer get a gradient", for the rules, the comparison, the DDP gather and the views.
Torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ..core.messages import Texts, adapter_kind
from ..core.records import CutKind, LoraParam, LoraSite, ModuleCall, Trace
from .conditional import Skip, model_skips
from .timeline import Timeline


@dataclass(frozen=True)
class Facts:
    trace: Trace

    @cached_property
    def sites(self) -> dict[str, LoraSite]:
        return {site.module: site for site in self.trace.sites}

    def kind_of(self, modules: tuple[str, ...] | list[str] | set[str] | None = None) -> Texts:
        """What the findings call these adapter layers (all of them by default): "LoRA", "LoHa", "adapter"."""
        chosen = self.trace.sites if modules is None else [self.sites[m] for m in modules if m in self.sites]
        return adapter_kind(site.tuner for site in chosen or self.trace.sites)

    @cached_property
    def sharded(self) -> bool:
        """The adapter parameters are sharded across ranks (FSDP2 DTensors): each rank holds a part."""
        return any(p.shard_zero is not None for site in self.trace.sites for p in site.params) or any(
            a.shard for a in self.trace.arrivals)

    @cached_property
    def trainable(self) -> frozenset[str]:
        return frozenset(p for site in self.trace.sites for p in site.trainable_params)

    @cached_property
    def arrived(self) -> frozenset[str]:
        return frozenset(a.param for a in self.trace.arrivals)

    @cached_property
    def got_grad(self) -> frozenset[str] | None:
        """LoRA parameters that got (or, before backward, would get) a gradient; None when unknowable."""
        if self.trace.backward:
            return self.arrived
        reach = self.trace.reachability
        if reach is not None and not reach.opaque:
            return frozenset(reach.params)
        return None

    @cached_property
    def starved(self) -> frozenset[str]:
        """Trainable LoRA parameters that got no gradient, other than those the model itself chose not to run
        this step: what every error finding must explain."""
        got = self.got_grad
        if got is None or self.backward_interrupted:  # certain even so: a step that raised or that ended in
            # an optimizer step trained with nothing but these calls, and layers that ran only with grad off got
            # nothing from them (a backward that raised part way: what had not arrived yet proves nothing)
            trained = not self.trace.complete or self.trace.optimizer_steps > 0
            stepped = self.stepped_without_grad if got is None else frozenset()  # a backward cut short: its
            return (self.ran_grad_off_only | stepped) - self.skipped if trained else frozenset()  # raise explains
        return self.trainable - got - self.skipped

    @cached_property
    def stepped_without_grad(self) -> frozenset[str]:
        """Trainable LoRA parameters the optimizer held and stepped, at a rate above 0 (or one it computes itself:
        Adafactor's relative step) and not skipped by a GradScaler, that got no gradient in the block and did not
        move: certain to have learned nothing, even where no backward was seen (a loss outside the model, its
        path cut before it)."""
        trace, optimizer = self.trace, self.trace.optimizer
        if (optimizer is None or optimizer.updated is None or not trace.optimizer_steps or trace.scaler_skipped
                or not optimizer.step_lrs or any(lr is not None and lr <= 0 for lr in optimizer.step_lrs)):
            return frozenset()
        return self.trainable.intersection(optimizer.params) - set(optimizer.updated) - self.arrived

    @cached_property
    def backward_interrupted(self) -> bool:
        """Backward raised part way (a collective that timed out, a failing backward hook): a gradient that had
        not arrived proves no cut. Not when it raised at once because the loss had no grad_fn."""
        trace = self.trace
        return trace.raised_in_backward and (not trace.losses or any(loss.has_grad_fn for loss in trace.losses))

    @cached_property
    def ran_grad_off_only(self) -> frozenset[str]:
        """Trainable parameters of layers that ran, every time, with grad disabled and that no reentrant checkpoint
        can re-run with grad (its inputs did not require grad): certain to get no gradient this step. Used when no
        backward or loss told more: the step raised (the loss had no grad_fn) or stepped the optimizer without one."""
        rerun = {m for cut in self.trace.cuts if cut.kind is CutKind.CHECKPOINT and "True" in cut.detail
                 for m in cut.modules}
        return frozenset(p for m, calls in self.calls.items() if m in self.sites and m not in rerun
                         and calls and not any(c.grad_enabled for c in calls)
                         for p in self.sites[m].trainable_params if p in self.trainable)

    @cached_property
    def _skips(self) -> tuple[dict[str, Skip], dict[str, Skip]]:
        return model_skips(self.trace, self.calls)

    @property
    def skips(self) -> dict[str, Skip]:
        """Adapter layer -> how the model's own control flow skipped it this step (analysis/conditional.py)."""
        return self._skips[0]

    @property
    def unsure_skips(self) -> dict[str, Skip]:
        """Adapter layers not called while their parent ran, in default mode: a skip or a bypass, not told apart."""
        return self._skips[1]

    @cached_property
    def skipped(self) -> frozenset[str]:
        """Trainable parameters of the layers the model skipped: no gradient this step, and not a failure."""
        return frozenset(p for m in self.skips for p in self.sites[m].trainable_params)

    @cached_property
    def calls(self) -> dict[str, list[ModuleCall]]:
        table: dict[str, list[ModuleCall]] = {}
        for call in self.trace.calls:
            table.setdefault(call.module, []).append(call)
        return table

    @cached_property
    def timeline(self) -> Timeline:
        """The adapter states the layers ran in, the flags at the end, the changes made during the step."""
        return Timeline(self)

    @cached_property
    def module_of(self) -> dict[str, str]:
        """LoRA parameter -> the LoRA layer (wrapper module) holding it, from the discovered sites."""
        return {p.name: site.module for site in self.trace.sites for p in site.params}

    @cached_property
    def params(self) -> dict[str, LoraParam]:
        """Adapter parameter name -> its record."""
        return {p.name: p for site in self.trace.sites for p in site.params}

    @cached_property
    def sharers(self) -> dict[str, tuple[LoraSite, ...]]:
        """Parameter -> the layers that compute with it besides the one holding it (shared banks)."""
        table: dict[str, list[LoraSite]] = {}
        for site in self.trace.sites:
            for name in site.shared:
                table.setdefault(name, []).append(site)
        return {name: tuple(sites) for name, sites in table.items()}

    def factors(self, site: LoraSite, adapter: str) -> list[LoraParam]:
        """The parameters of `adapter` that the layer computes with: its own, and those it shares with others."""
        shared = [self.params[n] for n in site.shared if n in self.params]
        return [p for p in (*site.params, *shared) if p.adapter == adapter]

    def modules_of(self, params: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> tuple[str, ...]:
        """The LoRA layers holding these parameters, sorted."""
        return tuple(sorted({self.module_of[p] for p in params if p in self.module_of}))

    def config_of(self, module: str, adapter: str) -> dict | None:
        """The PEFT config (as saved) of `adapter` for the PEFT model holding this LoRA layer."""
        for prefix, adapters in sorted(self.trace.peft_configs.items(), key=lambda item: -len(item[0])):
            if prefix == "" or module.startswith(prefix + "."):
                config = adapters.get(adapter)
                return config if isinstance(config, dict) else None
        return None

    def regions_of(self, modules: list[str] | tuple[str, ...] | set[str]) -> tuple[str, ...]:
        """The regions of these LoRA layers, sorted."""
        return tuple(sorted({self.sites[m].region for m in modules if m in self.sites}))

    def state(self, module: str) -> str:
        """"grad" (got a gradient) | "severed" (ran, got none) | "never" (never ran) | "frozen" (nothing trainable)."""
        site = self.sites[module]
        if not site.trainable_params:
            return "frozen"
        got = self.got_grad or frozenset()
        if any(p in got for p in site.trainable_params):
            return "grad"
        return "severed" if module in self.calls else "never"

    @cached_property
    def states(self) -> dict[str, str]:
        return {site.module: self.state(site.module) for site in self.trace.sites}

    @cached_property
    def trained_modules(self) -> tuple[str, ...]:
        """LoRA layers that got a gradient, sorted."""
        return tuple(sorted(m for m, state in self.states.items() if state == "grad"))

    @cached_property
    def module_norms(self) -> dict[str, float]:
        """LoRA layer -> the gradient norm over its parameters (NaN when any is non-finite); layers with a
        known norm only (none on the meta device)."""
        squares: dict[str, float] = {}
        for arrival in self.trace.arrivals:
            module = self.module_of.get(arrival.param)
            if arrival.norm is None or module is None:
                continue
            value = arrival.norm if math.isfinite(arrival.norm) else math.nan
            squares[module] = squares.get(module, 0.0) + value * value
        return {m: math.sqrt(v) for m, v in squares.items()}

    def starved_sites(self) -> list[LoraSite]:
        return [s for s in self.trace.sites if any(p in self.starved for p in s.trainable_params)]

    @cached_property
    def traversed_regions(self) -> tuple[str, ...]:
        """Regions that ran, most specific only: a region containing another that ran is dropped, unless it holds
        LoRA layers of its own (an audio encoder whose layers hold LoRA around a nested fusion model)."""
        run = self.trace.regions_run
        holding = {site.region for site in self.trace.sites}
        return tuple(r for r in run if r in holding or not any(o != r and o.startswith(r + ".") for o in run))

