"""Training steps found in a script nobody changed (`lora-trace run`), through PyTorch's public global hooks:
module forward pre/post hooks and optimizer step hooks. Nothing is patched.

A step starts at the first outermost forward of a module holding adapter layers (not an evaluation: eval mode
with grad off) and ends after the optimizer step that updates it; gradient accumulation windows, generation
inside the step (GRPO) and reference passes (DPO) fall inside. Each such outermost module gets its own tracer;
at the step's end only the models the optimizer updates are kept, so a frozen reference copy is not reported
as the model. After K steps every global hook is removed: the rest of the run pays nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from ..core.errors import TraceStateError
from .discovery import unwrap
from .peft import is_adapter_layer
from .tracer import Tracer

StepDone = Callable[[int, list[Any], BaseException | None], None]  # (step, diagnoses, error of a crashed step)


class AutoSteps:
    """Trace the first `steps` optimizer steps of whatever runs in this process; `on_step` gets each one."""

    def __init__(self, *, steps: int, deep: bool, on_step: StepDone) -> None:
        self.steps, self.deep, self.on_step = steps, deep, on_step
        self.done = 0
        self.optimizer_steps = 0  # optimizer steps seen, traced or not
        self._depth = 0
        self._holds: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
        self._tracers: list[Tracer] = []
        self._inside: set[int] = set()  # every module of the models traced in the open step
        self._optimizer: Any = None
        self._stepping: Any = None  # the optimizer whose step() is running: Lightning's closure runs the
        # forward and backward inside it, after the step's pre-hooks
        self._handles: list[Any] = []

    def install(self) -> None:
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True),
                         register_optimizer_step_pre_hook(self._before_step),
                         register_optimizer_step_post_hook(self._after_step)]

    def uninstall(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    @property
    def tracing(self) -> bool:
        return bool(self._tracers)

    def finish(self, error: BaseException | None) -> None:
        """End a step left open (the script raised in it, or ended before its optimizer step)."""
        self.uninstall()
        if self._tracers:
            self._close(_outermost(list(self._tracers)), error)

    # -- hooks ---------------------------------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: Any) -> None:
        outermost = self._depth == 0
        self._depth += 1
        if outermost and self.done < self.steps and self._starts_step(module):
            optimizer = self._optimizer or self._stepping
            tracer = Tracer(module, optimizer=optimizer, deep=self.deep, label=f"step-{self.done}")
            try:
                tracer.__enter__()
            except TraceStateError:
                return  # the script traces this model itself (a lora-trace callback): leave it to that
            tracer.entered_model()
            self._tracers.append(tracer)
            self._inside.update(id(m) for m in tracer.model.modules())

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(self._depth - 1, 0)

    def _starts_step(self, module: nn.Module) -> bool:
        if id(unwrap(module)) in self._inside:
            return False  # part of a model traced already: a checkpoint's recompute in backward, a sub-call
        if not module.training and not torch.is_grad_enabled():
            return False  # an evaluation (a sanity check, eval before training): not a training step
        holds = self._holds.get(module)
        if holds is None:
            holds = self._holds[module] = any(is_adapter_layer(m) for m in module.modules())
        return holds

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepping = optimizer
        if not self._tracers:
            return
        held = _held(optimizer)
        updated = [t for t in self._tracers if _updates(held, t)]
        # An optimizer that updates none of the models is still the step's optimizer when no other was met:
        # then the adapters are simply not in it (the optimizer built for the head only), which is the finding.
        for tracer in updated or ([] if self._optimizer is not None else self._tracers):
            tracer.adopt_optimizer(optimizer)
        if updated or self._optimizer is None:
            self._optimizer = optimizer

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepping = None
        self.optimizer_steps += 1
        if not self._tracers:
            return
        held = _held(optimizer)
        updated = [t for t in self._tracers if _updates(held, t)]
        if updated or optimizer is self._optimizer:
            self._close(_outermost(updated or list(self._tracers)), None)

    def _close(self, kept: list[Tracer], error: BaseException | None) -> None:
        tracers, self._tracers = self._tracers, []
        self._inside = set()
        for tracer in tracers:
            tracer.__exit__(type(error) if error is not None else None, error, None)
        step, self.done = self.done, self.done + 1
        if self.done >= self.steps:
            self.uninstall()
        self.on_step(step, [t.diagnosis for t in kept], error)


def _outermost(tracers: list[Tracer]) -> list[Tracer]:
    """Drop a model traced inside another one traced too (TRL's GRPO generates through the base model, then
    trains through the PeftModel around it): one run per model the user knows."""
    inside = {id(t): {id(m) for m in t.model.modules()} for t in tracers}
    return [t for t in tracers if not any(o is not t and id(t.model) in inside[id(o)] for o in tracers)]


def _held(optimizer: Any) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def _updates(held: set[int], tracer: Tracer) -> bool:
    return any(id(p) in held for p in tracer.model.parameters())
