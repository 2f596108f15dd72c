"""Training steps found in a script nobody changed (`lora-trace run`), through PyTorch's public global hooks:
module forward pre/post hooks and optimizer step hooks. Nothing is patched.

A step starts at the first outermost forward of a module holding adapter layers (not an evaluation: eval mode
with grad off) and ends when the optimizer holding its adapter parameters has stepped. Gradient accumulation
windows, generation inside the step (GRPO) and reference passes (DPO) fall inside. When only optimizers
holding other parameters step (the head's), the step ends as the next one starts, or at exit. Each such
outermost module gets its own tracer; at the step's end only the models an optimizer updated are kept, so a
frozen reference copy is not reported as the model. After K steps every global hook is removed: the rest of
the run pays nothing. Nothing the finder does may break the script: its own failures are printed, not raised.
"""

from __future__ import annotations

import sys
import traceback
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
    """Trace the first `steps` optimizer steps of whatever runs in this process; `on_step` gets each one.
    `foreign` counts steps whose only optimizer held none of the traced model's parameters (so lora-trace
    could not check the update: a master-weight optimizer, or one built for a module outside the model)."""

    def __init__(self, *, steps: int, deep: bool, on_step: StepDone) -> None:
        self.steps, self.deep, self.on_step = steps, deep, on_step
        self.done = 0
        self.optimizer_steps = 0  # optimizer steps seen, traced or not
        self.foreign = 0
        self._depth = 0
        self._holds: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # modules known to hold adapter layers
        self._tracers: list[Tracer] = []
        self._inside: set[int] = set()  # every module of the models traced in the open step
        self._stepped: list[Any] = []  # optimizers that stepped in the open step, in order
        self._optimizer: Any = None  # the optimizer that held adapter parameters at an earlier step
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
        self._optimizer = self._stepping = None  # keep no optimizer (and its state) alive for the run's rest

    @property
    def tracing(self) -> bool:
        return bool(self._tracers)

    def finish(self, error: BaseException | None) -> None:
        """End the step left open at exit: the script raised in it (`error`), or ended after its last
        optimizer step. A step that ran neither a backward nor an optimizer step (an evaluation at the end)
        is no training step and is dropped."""
        self.uninstall()
        if self._tracers:
            self._close(error, at_exit=True)

    # -- hooks ---------------------------------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: Any) -> None:
        outermost = self._depth == 0
        self._depth += 1
        if not outermost:
            return
        if self._tracers and self._stepped:  # the step whose optimizers stepped ends as the next one starts
            self._close(None)
        if self.done < self.steps and self._starts_step(module):
            self._start(module)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(self._depth - 1, 0)

    def _start(self, module: nn.Module) -> None:
        tracer = Tracer(module, deep=self.deep, label=f"step-{self.done}")
        try:
            tracer.__enter__()
        except TraceStateError:
            return  # the script traces this model itself (a lora-trace callback): leave it to that
        except Exception:  # noqa: BLE001 - the script's training must go on
            _report_failure("could not start tracing the step")
            return
        tracer.entered_model()
        for optimizer in (self._stepping, self._optimizer):  # inside step(closure), or met at an earlier step:
            if optimizer is not None and _holds_adapters(_held(optimizer), tracer.adapter_ids):  # its update
                tracer.adopt_optimizer(optimizer)  # has not run yet
                break
        self._tracers.append(tracer)
        self._inside.update(id(m) for m in tracer.model.modules())

    def _starts_step(self, module: nn.Module) -> bool:
        if id(unwrap(module)) in self._inside:
            return False  # part of a model traced already: a checkpoint's recompute in backward, a sub-call
        if not module.training and not torch.is_grad_enabled():
            return False  # an evaluation (a sanity check, eval before training): not a training step
        if module in self._holds:
            return True
        if any(is_adapter_layer(m) for m in module.modules()):  # only "yes" is remembered: adapters may come later
            self._holds.add(module)
            return True
        return False

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepping = optimizer
        if not self._tracers:
            return
        held = _held(optimizer)
        for tracer in self._tracers:  # only an optimizer holding the adapters: another one (the head's) may
            if tracer.optimizer is None and _holds_adapters(held, tracer.adapter_ids):  # step first
                tracer.adopt_optimizer(optimizer)
                self._optimizer = optimizer

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepping = None
        self.optimizer_steps += 1
        if not self._tracers:
            return
        self._stepped.append(optimizer)
        held = _held(optimizer)
        if any(_holds_adapters(held, t.adapter_ids) for t in self._tracers):
            self._close(None)  # the adapters' optimizer has stepped: the step is done

    # -- closing -------------------------------------------------------------------------------------------
    def _close(self, error: BaseException | None, *, at_exit: bool = False) -> None:
        tracers, self._tracers = self._tracers, []
        stepped, self._stepped = self._stepped, []
        self._inside = set()
        updated = [t for t in tracers if any(_updates(_held(o), t) for o in stepped)]
        for tracer in tracers:
            if tracer.optimizer is None:  # no optimizer held its adapters: the one updating the model is the
                model_optimizer = next((o for o in stepped if _updates(_held(o), tracer)), None)  # step's
                if model_optimizer is not None:  # its adapters are simply not in it: the finding
                    tracer.adopt_optimizer(model_optimizer)
                    tracer.optimizer_step(before=True)  # it did step in this step: counted, as its own
                    tracer.optimizer_step(before=False)  # hooks would have
        if stepped and not updated:
            self.foreign += 1  # no optimizer that stepped holds any of the models' parameters
        for tracer in tracers:
            try:
                tracer.__exit__(type(error) if error is not None else None, error, None)
            except Exception:  # noqa: BLE001 - its hooks are removed before the trace is built; go on
                _report_failure("could not build the trace of the step")
        kept = [t for t in _outermost(updated or tracers) if t.built]
        if at_exit and error is None:  # the script ended normally inside it: keep only a real training step
            kept = [t for t in kept if t.diagnosis.trace.backward or t.diagnosis.trace.optimizer_steps]
            if not kept:
                return
        step, self.done = self.done, self.done + 1
        if self.done >= self.steps:
            self.uninstall()
        try:
            self.on_step(step, [t.diagnosis for t in kept], error)
        except Exception:  # noqa: BLE001 - saving the run (a full disk, dot failing) must not stop training
            _report_failure("could not save the traced step")


def _report_failure(what: str) -> None:
    print(f"lora-trace run: {what}; training goes on:\n{traceback.format_exc(limit=4)}", file=sys.stderr)


def _outermost(tracers: list[Tracer]) -> list[Tracer]:
    """Drop a model traced inside another one traced too (TRL's GRPO generates through the base model, then
    trains through the PeftModel around it): one run per model the user knows."""
    inside = {id(t): {id(m) for m in t.model.modules()} for t in tracers}
    return [t for t in tracers if not any(o is not t and id(t.model) in inside[id(o)] for o in tracers)]


def _held(optimizer: Any) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def _holds_adapters(held: set[int], adapter_ids: frozenset[int]) -> bool:
    return not held.isdisjoint(adapter_ids)


def _updates(held: set[int], tracer: Tracer) -> bool:
    return any(id(p) in held for p in tracer.model.parameters())
