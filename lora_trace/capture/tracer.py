"""The tracer: a context manager around training steps. It installs the hooks of hooks.py, keeps every
handle, and removes them all on exit, even when the block raises; the hooks fill one `Recording`, which
build.py turns into a frozen Trace. Observes only: it changes nothing the step computes.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..core.errors import TraceStateError
from ..core.records import Trace
from .discovery import Discovery, discover, is_compiled, unwrap, unwrap_optimizer
from .hooks import StepHooks
from .recording import Recording, adopted_start, loss_seen, optimizer_start

_TRACED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models being traced right now


class HandleGroup:
    """Every hook handle one tracer installs; remove_all() is safe to repeat."""

    def __init__(self) -> None:
        self._live: list[RemovableHandle] = []

    def keep(self, handle: RemovableHandle) -> None:
        self._live.append(handle)

    def remove_all(self) -> None:
        while self._live:
            self._live.pop().remove()


class Tracer:
    """`with lora_trace.trace(model) as t: ...` then `t.diagnosis`. One tracer per model at a time."""

    def __init__(self, model: object, *, optimizer: torch.optim.Optimizer | None = None, deep: bool = False,
                 label: str | None = None, scaler: Any = None,
                 before_write: Callable[[Any], None] | None = None, optimizer_hooks: bool = True) -> None:
        self._root = unwrap(model)
        self._ddp = _ddp_of(model)
        self._compiled = is_compiled(model)
        self._optimizer = unwrap_optimizer(optimizer)
        self._scaler = scaler
        self._deep = deep
        self._before_write = before_write  # the dry run: called before the step writes a tensor in place
        self._optimizer_hooks = optimizer_hooks  # False: the caller forwards them with optimizer_step()
        self._label = label
        self._handles = HandleGroup()
        self._hooks: StepHooks | None = None
        self._installed = False  # every hook in place: only then is there a trace to build
        self._found: Discovery | None = None
        self._state = "new"
        self._trace: Trace | None = None
        self._diagnosis: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Tracer:
        if self._state != "new":
            raise TraceStateError("this tracer has already run; start a new one with lora_trace.trace(model)")
        if self._root in _TRACED:
            raise TraceStateError("this model is already being traced; one tracer per model at a time "
                                  "(leave the outer `with lora_trace.trace(...)` block first)")
        _TRACED.add(self._root)
        self._state = "running"
        if self._compiled:  # never silently: hooks make dynamo recompile the model on its next call
            warnings.warn("lora-trace: the model is torch.compile'd; its hooks make dynamo recompile it on the next "
                          "call, and the deep mode adds graph breaks. Trace an uncompiled step for a quick answer.",
                          stacklevel=2)
        try:
            self._start()
        except BaseException:
            self._close(complete=False, error=None)
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._close(complete=exc_type is None, error=exc)  # never swallows the user's exception

    def _start(self) -> None:
        found = self._found = discover(self._root)
        rec = Recording(found=found, deep=self._deep, label=self._label, compiled=self._compiled,
                        optimizer=self._optimizer, scaler=self._scaler, eval_modules=_eval_modules(found),
                        start=optimizer_start(found, self._optimizer, self._scaler))
        ddp = self._ddp
        rec.sync_flag = (lambda: bool(ddp.require_backward_grad_sync)) if ddp is not None else None
        self._hooks = StepHooks(rec, self._handles.keep, before_write=self._before_write,
                                optimizer_hooks=self._optimizer_hooks)
        self._hooks.install()
        self._installed = True

    def _close(self, *, complete: bool, error: BaseException | None) -> None:
        hooks = self._hooks
        try:
            if hooks is not None:
                hooks.uninstall_watch()
        finally:
            self._handles.remove_all()
            _TRACED.discard(self._root)
            self._state = "closed"
        if hooks is None or not self._installed:
            return  # __enter__ failed: it re-raises that error, there is nothing to read
        from .build import build_trace

        try:
            hooks.gradients.finish()
            self._trace = build_trace(hooks.rec, complete=complete, error=error)
        except Exception:
            if error is None:
                raise
            self._trace = None  # the user's exception matters more than a partial trace
        finally:
            hooks.rec.release()
            self._hooks = None

    def adopt_optimizer(self, optimizer: Any) -> None:
        """Take the optimizer met only at its step, before its update (`lora-trace run` sees it first in the
        global step pre-hook): what it holds is checked as if it had been given at the start."""
        if self._state != "running" or self._hooks is None or self._optimizer is not None:
            return
        rec = self._hooks.rec
        self._optimizer = rec.optimizer = unwrap_optimizer(optimizer)
        rec.start = adopted_start(rec.start, self._found, self._optimizer)
        self._hooks.watch_optimizer(self._optimizer)

    def optimizer_step(self, *, before: bool) -> None:
        """Forwarded optimizer step hooks (a tracer made with optimizer_hooks=False)."""
        if self._hooks is not None and self._optimizer is not None:
            self._hooks.forwarded_step(self._optimizer, before=before)

    def entered_model(self) -> None:
        """The tracer was opened from inside the model's own call (a global pre-hook): the model's own
        pre-hooks installed now miss that call, so count the model as called."""
        if self._hooks is not None:
            self._hooks.entered("")

    @property
    def optimizer(self) -> Any:
        """The optimizer whose update is checked (given, or adopted at its step), or None."""
        return self._optimizer

    @property
    def adapter_ids(self) -> frozenset[int]:
        """id() of every adapter parameter of the model (known once the tracer has started)."""
        return frozenset(self._found.param_names) if self._found is not None else frozenset()

    @property
    def built(self) -> bool:
        """Whether the trace exists (the block ended and building it did not fail)."""
        return self._trace is not None

    @property
    def model(self) -> nn.Module:
        """The model traced (wrappers removed)."""
        return self._root

    def note_loss(self, tensor: torch.Tensor) -> None:
        """The step's loss when no backward will run from it (it has no grad_fn): still evidence."""
        if self._hooks is not None:
            self._hooks.rec.losses.append(loss_seen(tensor, "step"))

    def saw_backward(self) -> bool:
        """Whether backward already ran inside the block (a gradient arrived, or a backward call was seen)."""
        return self._hooks is not None and self._hooks.rec.backward_ran()

    def saw_optimizer_step(self) -> bool:
        return self._hooks is not None and self._hooks.rec.optimizer_steps > 0

    # -- results ---------------------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        if self._state != "closed" or self._trace is None:
            raise TraceStateError("the trace exists after the `with lora_trace.trace(...)` block has ended")
        return self._trace

    @property
    def diagnosis(self) -> Any:
        if self._diagnosis is None:
            from ..analysis import diagnose_trace

            self._diagnosis = diagnose_trace(self.trace)
        return self._diagnosis

    def diagnose(self, *, loss: torch.Tensor | None = None) -> Any:
        """The diagnosis; with `loss`, the autograd walk starts from that tensor (autograd.grad users)."""
        if loss is None:
            return self.diagnosis
        from ..analysis import diagnose_trace
        from .build import with_explicit_loss

        param_names = self._found.param_names if self._found is not None else {}
        return diagnose_trace(with_explicit_loss(self.trace, loss, param_names))


def _eval_modules(found: Discovery) -> tuple[str, ...]:
    """The topmost modules in eval mode that hold LoRA (the root itself when the whole model is in eval)."""
    topmost: list[str] = []
    for name, module in found.holders:  # every module that is a LoRA layer or contains one, in model order
        if module.training:
            continue
        if not any(name == t or name.startswith(t + ".") or t == "" for t in topmost):
            topmost.append(name)
    return tuple(topmost)


def _ddp_of(model: object) -> nn.parallel.DistributedDataParallel | None:
    """The DDP wrapper in the chain given (DDP, compile of DDP): its flag says which backward all-reduces."""
    while isinstance(model, nn.Module):
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        model = getattr(model, "_orig_mod", None)
    return None

