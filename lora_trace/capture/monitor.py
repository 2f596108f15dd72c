"""`lora_trace.watch(model, optimizer=opt)`: cheap enough to leave on for a whole run.

It adds no hook to the forward or the backward: at the optimizer's step it reads, per adapter parameter,
whether `.grad` is there and whether it changed since the last step (its tensor and version counter), and a
few flags per adapter layer. No tensor value is read, so the device is never synchronised. A step
that shows a symptom is noted: a trainable adapter parameter with no gradient, a learning rate of 0 on
the adapter's parameters, or an adapter switched, merged, disabled or frozen since the last step. The next
step is then traced in full, with the ordinary tracer, and both are reported. Each distinct symptom
triggers once, and at most `max_traces` steps are traced in full, so a symptom that repeats every step
costs one full trace.
"""

from __future__ import annotations

import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any

from torch import nn

from ..core.errors import BadInputError, TraceStateError
from .discovery import discover, unwrap_optimizer
from .peft import adapter_flags
from .tracer import Tracer

_NOT_HELD = object()  # a parameter no optimizer group holds
_REQUIRES_GRAD = attrgetter("requires_grad")
_GRAD = attrgetter("grad")
_LAYER = itemgetter(1)


@dataclass(frozen=True)
class Symptom:
    """What one step showed: `kind` is "no-grad" | "lr-zero" | "state-change" | "not-in-optimizer"."""

    step: int
    kind: str
    detail: str
    modules: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"step {self.step}: {self.kind}: {self.detail}"


class Monitor:
    """The context manager `lora_trace.watch()` returns; read `symptoms` and `diagnoses` (step, Diagnosis)."""

    def __init__(self, model: nn.Module, *, optimizer: Any, deep: bool = False, max_traces: int = 3,
                 on_symptom: Callable[[Symptom], None] | None = None,
                 on_diagnosis: Callable[[int, Any], None] | None = None) -> None:
        if optimizer is None:
            raise BadInputError("lora_trace.watch() needs the optimizer: its step() marks where a step ends")
        self._model = model
        self._optimizer = unwrap_optimizer(optimizer)
        self.deep = deep
        self.max_traces = max_traces
        self._on_symptom, self._on_diagnosis = on_symptom, on_diagnosis  # what an integration logs and saves
        self.steps = 0  # optimizer steps seen
        self.symptoms: list[Symptom] = []
        self.diagnoses: list[tuple[int, Any]] = []
        self._handles: list[Any] = []
        self._seen: set[tuple[str, tuple[str, ...]]] = set()
        self._tracer: Tracer | None = None
        self._due = False
        self._zero_lr_steps, self._lr_was_positive = 0, False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> Monitor:
        found = discover(self._model)
        by_name = dict(found.lora_params())
        self._layers = [(site.module, found.lora[site.module]) for site in found.sites]
        spans, at = [], 0
        for site in found.sites:  # each layer's parameters: a slice of the flat parameter list
            count = sum(p.name in by_name for p in site.params)
            spans.append((at, at + count))
            at += count
        self._spans = spans
        self._module_of = {p.name: site.module for site in found.sites for p in site.params}
        self._names = [p.name for site in found.sites for p in site.params if p.name in by_name]
        self._tensors = [by_name[name] for name in self._names]
        self._ids = list(map(id, self._tensors))
        self._grads = self._grad_marks()
        try:
            self._handles.append(self._optimizer.register_step_pre_hook(self._before_step))
            self._handles.append(self._optimizer.register_step_post_hook(self._after_step))
        except BaseException:
            self._remove()
            raise
        self._state = self._states()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        tracer, self._tracer = self._tracer, None
        try:
            if tracer is not None:  # the run ended inside the step to be traced in full
                tracer.__exit__(type(exc) if exc is not None else None, exc, None)
                trace = tracer.diagnosis.trace if tracer.built else None
                # Raised: keep what it saw. Ended normally: keep it only if it was a training step (an
                # evaluation or generation after the last optimizer step is none).
                if trace is not None and (exc is not None or trace.backward or trace.optimizer_steps):
                    self._keep(self.steps, tracer.diagnosis)
        finally:
            self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    # -- hooks --------------------------------------------------------------------------------------------
    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._tracer is not None:
            self._tracer.optimizer_step(before=True)
            return  # the full trace judges this step
        self._check(optimizer)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step, self.steps = self.steps, self.steps + 1
        self._grads = self._grad_marks()
        tracer, self._tracer = self._tracer, None
        if tracer is not None:  # the step traced in full ended
            tracer.optimizer_step(before=False)
            try:  # inside the user's optimizer.step(): a failure of ours must not end their training
                tracer.__exit__(None, None, None)
                self._keep(step, tracer.diagnosis)
            except Exception:  # noqa: BLE001 - its hooks are removed before the trace is built
                warnings.warn(f"lora-trace watch could not build the trace of step {step}:\n"
                              f"{traceback.format_exc(limit=4)}", stacklevel=2)
            self._state = self._states()
        if self._due and len(self.diagnoses) < self.max_traces:
            self._due = False
            # Its optimizer hooks are ours, forwarded: nothing is added to or removed from the optimizer's
            # hook tables while it iterates over them.
            tracer = Tracer(self._model, optimizer=self._optimizer, deep=self.deep, label=f"step-{self.steps}",
                            optimizer_hooks=False)
            try:
                tracer.__enter__()
            except TraceStateError:
                return  # traced already (a lora-trace callback on this step)
            except Exception:  # noqa: BLE001 - as above: training goes on without the full trace
                warnings.warn(f"lora-trace watch could not trace step {self.steps}:\n"
                              f"{traceback.format_exc(limit=4)}", stacklevel=2)
                return
            self._tracer = tracer

    def _check(self, optimizer: Any) -> None:
        step = self.steps
        tensors, names = self._tensors, self._names
        trainable = list(map(_REQUIRES_GRAD, tensors))
        # No gradient since the last step: .grad is None (zero_grad(set_to_none=True) or never), or the same
        # tensor at the same version (nothing accumulated into it, nothing zeroed it in place).
        starved = [i for i, (grad, mark) in enumerate(zip(map(_GRAD, tensors), self._grads, strict=True))
                   if grad is None or (mark is not None and mark[0]() is grad and mark[1] == grad._version)]
        held = {}  # each parameter's learning rate, looked up in C: this runs every step
        for group in optimizer.param_groups:
            held.update(zip(map(id, group["params"]), repeat(group.get("lr"))))
        lrs = list(map(held.get, self._ids, repeat(_NOT_HELD)))
        if not all(trainable):  # a frozen parameter is not judged
            starved = [i for i in starved if trainable[i]]
            lrs = [lr if on else None for lr, on in zip(lrs, trainable, strict=True)]
        missing = [names[i] for i, lr in enumerate(lrs) if lr is _NOT_HELD]
        zero_lr = [names[i] for i, lr in enumerate(lrs) if lr is not _NOT_HELD and lr is not None and lr == 0]
        some_lr = any(lr is not _NOT_HELD and lr for lr in lrs)
        if starved:
            self._note(step, "no-grad", f"{len(starved)} trainable adapter parameters had no new gradient as "
                       "optimizer.step() ran", self._modules([names[i] for i in starved]))
        # lr 0 at a warm-up's first step is normal: a symptom once the schedule was above 0 before, or stays
        # at 0 a second step
        self._zero_lr_steps = self._zero_lr_steps + 1 if zero_lr else 0
        if not zero_lr:
            self._lr_was_positive = self._lr_was_positive or some_lr
        if zero_lr and (self._lr_was_positive or self._zero_lr_steps >= 2):
            self._note(step, "lr-zero", f"learning rate 0 for {len(zero_lr)} adapter parameters",
                       self._modules(zero_lr), once=True)
        if missing:
            self._note(step, "not-in-optimizer", f"{len(missing)} trainable adapter parameters are not in the "
                       "optimizer", self._modules(missing), once=True)
        state = self._states(trainable)
        if state != self._state:
            changed = self._changed(self._state, state)
            self._note(step, "state-change", f"{len(changed)} adapter layers changed state (active, merged, "
                       "disabled or requires_grad) since the last step", changed)
        self._state = state

    # -- helpers ------------------------------------------------------------------------------------------
    def _keep(self, step: int, diagnosis: Any) -> None:
        self.diagnoses.append((step, diagnosis))
        if self._on_diagnosis is not None:
            self._on_diagnosis(step, diagnosis)

    def _note(self, step: int, kind: str, detail: str, modules: tuple[str, ...], *, once: bool = False) -> None:
        key = (kind, () if once else modules)
        if key in self._seen:
            return
        self._seen.add(key)
        symptom = Symptom(step, kind, detail, modules)
        self.symptoms.append(symptom)
        self._due = True
        if self._on_symptom is not None:
            self._on_symptom(symptom)

    def _modules(self, params: list[str]) -> tuple[str, ...]:
        return tuple(sorted({self._module_of.get(p, p.rsplit(".", 2)[0]) for p in params}))

    def _grad_marks(self) -> list[tuple[weakref.ref, int] | None]:
        """Each `.grad` as the step left it: a weak reference (an id could be reused by the next step's new
        tensor) and its version counter."""
        return [None if grad is None else (weakref.ref(grad), grad._version) for grad in map(_GRAD, self._tensors)]

    def _states(self, trainable: list[bool] | None = None) -> tuple[list[tuple[Any, ...]], list[bool]]:
        """Each adapter layer's flags (copies: PEFT edits its lists in place) and each parameter's
        requires_grad, read as attributes: two lists the next step compares in C."""
        flags = list(map(adapter_flags, map(_LAYER, self._layers)))
        return flags, trainable if trainable is not None else list(map(_REQUIRES_GRAD, self._tensors))

    def _changed(self, before: tuple[list[Any], list[bool]], now: tuple[list[Any], list[bool]]) -> tuple[str, ...]:
        """The adapter layers whose flags or parameters' requires_grad differ between two `_states`."""
        return tuple(sorted(name for (name, _), was, is_, (start, end) in
                            zip(self._layers, before[0], now[0], self._spans, strict=True)
                            if was != is_ or before[1][start:end] != now[1][start:end]))

    def __str__(self) -> str:
        lines = [f"lora-trace watch: {self.steps} steps, {len(self.symptoms)} symptoms, "
                 f"{len(self.diagnoses)} steps traced in full"]
        lines += [f"  {symptom}" for symptom in self.symptoms]
        for step, diagnosis in self.diagnoses:
            lines += ["", f"Step {step}, traced in full:", diagnosis.report()]
        return "\n".join(lines)
