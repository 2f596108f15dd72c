"""The tracer: the only module that installs hooks. Observes one or more training steps, changes nothing.

Default mode: forward pre/post hooks on every PEFT LoRA layer, a forward pre-hook on each region's root
module, a forward hook on the model (a loss it returns), post-accumulate-grad hooks on trainable LoRA
parameters. Deep mode adds a scoped TorchFunctionMode (watch.py) for losses and the lines that cut.
No full-backward module hooks: they wrap outputs and make a healthy in-place op after a LoRA layer raise.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..core.errors import TraceStateError
from ..core.records import CutKind, LossInfo, ModuleCall, Phase, TensorMeta, Trace
from . import locate
from .discovery import Discovery, adapter_active, discover, is_compiled, under, unwrap, unwrap_optimizer
from .losses import describe_loss, scalar_candidate
from .regionflow import RegionFlow, tensors_in
from .watch import PathWatch

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


def tensor_metas(value: Any, limit: int = 8) -> tuple[TensorMeta, ...]:
    """Shape, dtype and grad flags of the tensors in a call's arguments or output (no tensor is kept)."""
    return tuple(TensorMeta(tuple(t.shape), str(t.dtype).replace("torch.", ""), bool(t.requires_grad),
                            t.grad_fn is not None) for t in tensors_in(value, limit))


class Tracer:
    """`with lora_trace.trace(model) as t: ...` then `t.diagnosis`. One tracer per model at a time."""

    def __init__(self, model: object, *, optimizer: torch.optim.Optimizer | None = None, deep: bool = False,
                 label: str | None = None, scaler: Any = None) -> None:
        self._root = unwrap(model)
        self._compiled = is_compiled(model)
        self._watch: PathWatch | None = None
        self._optimizer = unwrap_optimizer(optimizer)
        self._scaler = scaler
        self._installed = False  # every hook in place: only then is there a trace to build
        self._deep = deep
        self._label = label
        self._handles = HandleGroup()
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
        found: Discovery = discover(self._root)
        self._found = found
        self._calls: list[ModuleCall] = []
        self._wrappers: list[str] = []
        self._grad_off: dict[tuple[CutKind, str | None], dict[str, Any]] = {}
        self._losses: list[tuple[Any, LossInfo]] = []
        self._model_outputs: list[tuple[Any, LossInfo]] = []
        self._backward_seen = False
        self._norms: dict[str, list[Any]] = {}
        self._eval_modules = _eval_modules(found)
        self._before_step = self._snapshot_optimized()
        self._scale_at_start = self._scaler.get_scale() if self._scaler is not None else None
        self._grads_at_start = self._optimizer_grads()
        self._labels_all_ignored: bool | None = None
        self._optimizer_steps = 0
        self._adaptable_run: dict[str, None] | None = None
        for name, layer in found.lora.items():
            self._handles.keep(layer.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            self._handles.keep(layer.register_forward_hook(self._post_hook(name), with_kwargs=True,
                                                           always_call=True))
        self._flow = RegionFlow()
        for region, module in found.regions.items():
            self._handles.keep(module.register_forward_pre_hook(self._flow.pre_hook(region), with_kwargs=True))
            self._handles.keep(module.register_forward_hook(self._flow.post_hook(region), with_kwargs=True,
                                                            always_call=True))
        self._handles.keep(self._root.register_forward_hook(self._root_hook))
        self._handles.keep(self._root.register_forward_pre_hook(self._labels_hook, with_kwargs=True))
        if self._optimizer is not None:
            self._handles.keep(self._optimizer.register_step_post_hook(self._step_hook))
        params = {name: p for name, p in _named_lora_params(found)}
        for name, param in params.items():
            if param.requires_grad:
                self._handles.keep(param.register_post_accumulate_grad_hook(self._grad_hook(name)))
        if self._deep:
            self._watch_adaptable(found)
            base_weights = {id(layer.get_base_layer().weight): name for name, layer in found.lora.items()
                            if isinstance(getattr(layer.get_base_layer(), "weight", None), nn.Parameter)}
            self._watch = PathWatch(base_weights=base_weights, inside_wrapper=self._wrappers.__contains__,
                                    on_loss=self._add_loss, in_checkpoint_forward=locate.in_checkpoint_forward)
            self._watch.__enter__()
        self._installed = True

    def _close(self, *, complete: bool, error: BaseException | None) -> None:
        try:
            if self._watch is not None:
                self._watch.__exit__(None, None, None)
        finally:
            self._handles.remove_all()
            _TRACED.discard(self._root)
            self._state = "closed"
        if not self._installed:
            return  # __enter__ failed: it re-raises that error, there is nothing to read
        from .build import build_trace

        try:
            self._trace = build_trace(self, complete=complete, error=error)
        except Exception:
            if error is None:
                raise
            self._trace = None  # the user's exception matters more than a partial trace
        finally:
            self._release()

    def _release(self) -> None:
        """Drop what only building the trace needed: autograd nodes, gradient norms, the watch (which refers
        back to this tracer, so it would otherwise wait for the cyclic garbage collector)."""
        self._watch = None
        self._flow = RegionFlow()
        self._norms = {}
        self._model_outputs = []
        self._grads_at_start = []
        self._before_step = None
        self._losses = [(None, info) for _, info in self._losses]

    # -- hooks: observe only, return None ---------------------------------------------------------------
    def _pre_hook(self, name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._wrappers.append(name)

        return hook

    def _post_hook(self, name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self._wrappers and self._wrappers[-1] == name:
                self._wrappers.pop()
            elif name in self._wrappers:
                self._wrappers.remove(name)
            with self._paused():
                self._record_call(name, module, (args, kwargs), output)

        return hook

    def _record_call(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        grad_on = torch.is_grad_enabled()
        cut = None
        if not grad_on:
            cut = self._grad_off_cut(name)
        phase = Phase.RECOMPUTE if grad_on and locate.in_checkpoint_recompute() else Phase.FORWARD
        self._calls.append(ModuleCall(
            seq=len(self._calls), module=name, phase=phase, grad_enabled=grad_on,
            inference_mode=torch.is_inference_mode_enabled(), inputs=tensor_metas(inputs),
            outputs=tensor_metas(output), adapter_active=adapter_active(module), cut=cut,
        ))

    def _grad_off_cut(self, name: str) -> int:
        site = locate.grad_off_site(1)
        if site.checkpoint_inputs is not None:
            kind = CutKind.CHECKPOINT
        elif torch.is_inference_mode_enabled():
            kind = CutKind.INFERENCE_MODE
        else:
            kind = CutKind.NO_GRAD
        key = (kind, site.location)
        entry = self._grad_off.setdefault(key, {"site": site, "modules": {}, "index": len(self._grad_off)})
        entry["modules"][name] = None
        if site.checkpoint_inputs is not None:
            entry["inputs"] = site.checkpoint_inputs
        return entry["index"]

    def _watch_adaptable(self, found: Discovery) -> None:
        """Deep mode: which layers LoRA could adapt ran with grad, so a target_modules fix can be checked."""
        from .matching import candidate_modules

        self._adaptable_run = {}
        for prefix in found.tuners:
            pairs = under(found.named, prefix)
            modules = dict(pairs)
            for name in candidate_modules(pairs):
                full = f"{prefix}.{name}"
                if full not in found.lora:
                    self._handles.keep(modules[name].register_forward_hook(self._adaptable_hook(full)))

    def _adaptable_hook(self, name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if torch.is_grad_enabled() and self._adaptable_run is not None:
                self._adaptable_run[name] = None

        return hook

    def _labels_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        labels = kwargs.get("labels")
        if labels is None:
            for arg in args:
                if isinstance(arg, dict) and isinstance(arg.get("labels"), torch.Tensor):
                    labels = arg["labels"]
        if isinstance(labels, torch.Tensor) and labels.device.type != "meta" and not labels.is_floating_point():
            with self._paused():
                ignored = bool((labels == -100).all())
            self._labels_all_ignored = ignored or bool(self._labels_all_ignored)

    def _step_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_steps += 1

    def _root_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        with self._paused():
            loss = scalar_candidate(output)
            if loss is not None:
                self._model_outputs.append((loss.grad_fn, describe_loss(loss, "model-output")))
                if loss.grad_fn is not None:
                    self._handles.keep(loss.grad_fn.register_prehook(self._backward_hook))

    def _backward_hook(self, grad_outputs: Any) -> None:
        self._backward_seen = True

    def _grad_hook(self, name: str):  # noqa: ANN202
        def hook(param: torch.Tensor) -> None:
            grad = param.grad
            if grad is not None and hasattr(grad, "to_local"):
                grad = grad.to_local()  # FSDP2 / DTensor: this rank's shard (a norm over all needs a collective)
            with self._paused(), torch.no_grad():
                norm = torch.linalg.vector_norm(grad.detach().float()) if grad is not None else None
            entry = self._norms.setdefault(name, [0, None])
            entry[0] += 1
            entry[1] = norm
            self._backward_seen = True

        return hook

    def _add_loss(self, tensor: torch.Tensor, source: str) -> None:
        """A tensor backward() or autograd.grad() starts from (the deep mode sees these calls)."""
        self._losses.append((tensor.grad_fn, describe_loss(tensor, source)))
        self._backward_seen = True

    def note_loss(self, tensor: torch.Tensor) -> None:
        """The step's loss when no backward will run from it (it has no grad_fn): still evidence."""
        self._losses.append((tensor.grad_fn, describe_loss(tensor, "step")))

    def _paused(self) -> Any:
        return self._watch.pause() if self._watch is not None else _NULL

    def _optimizer_grads(self) -> list[tuple[torch.Tensor, Any, int]]:
        """(param, its .grad, that grad's version) for every optimizer param: a cheap sign that backward ran
        even when no LoRA parameter got a gradient and the loss never passed through a hook."""
        if self._optimizer is None:
            return []
        params = [p for group in self._optimizer.param_groups for p in group["params"]]
        return [(p, p.grad, p.grad._version if p.grad is not None else -1) for p in params]

    def backward_ran(self) -> bool:
        if self._backward_seen:
            return True
        return any(p.grad is not grad or (grad is not None and grad._version != version)
                   for p, grad, version in self._grads_at_start)

    def _snapshot_optimized(self) -> dict[str, torch.Tensor] | None:
        """Values of the LoRA parameters the optimizer holds, to tell afterwards which ones it changed."""
        if self._optimizer is None:
            return None
        held = {id(p) for group in self._optimizer.param_groups for p in group["params"]}
        with torch.no_grad():
            return {name: p.detach().clone() for name, p in _named_lora_params(self._found)
                    if id(p) in held and p.device.type != "meta"}

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

        return diagnose_trace(with_explicit_loss(self.trace, loss, self._found.param_names))


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()


def _named_lora_params(found: Discovery) -> list[tuple[str, nn.Parameter]]:
    by_id = {id(p): p for layer in found.lora.values() for p in layer.parameters()}
    return [(name, by_id[key]) for key, name in found.param_names.items()]


def _eval_modules(found: Discovery) -> tuple[str, ...]:
    """The topmost modules in eval mode that hold LoRA (the root itself when the whole model is in eval)."""
    holders = {""}  # every module that is a LoRA layer or contains one: linear in the number of LoRA layers
    for name in found.lora:
        parts = name.split(".")
        holders.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    topmost: list[str] = []
    for name, module in found.named:
        if module.training or name not in holders:
            continue
        if not any(name == t or name.startswith(t + ".") or t == "" for t in topmost):
            topmost.append(name)
    return tuple(topmost)
