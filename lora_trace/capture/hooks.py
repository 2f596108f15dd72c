"""The observers of a traced step. Each hook writes what it saw into the step's `Recording` and returns None.

Default mode: forward pre/post hooks on every PEFT LoRA layer, pre/post hooks on each region's root module,
a forward hook on the model (a loss it returns, its `labels`), the gradient hooks of gradients.py on trainable
LoRA parameters, an optimizer step hook. Deep mode adds hooks on adaptable layers (to check a target_modules
fix) and the scoped TorchFunctionMode of watch.py. No full-backward module hooks: they wrap outputs and make a
healthy in-place op after a LoRA layer raise.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..core.records import CutKind, ModuleCall, Phase, TensorMeta
from . import locate
from .gradients import GradientHooks
from .losses import scalar_candidate
from .peft import adapter_active, adapter_state
from .recording import ChangeSeen, GradOffPlace, Recording, group_rate, loss_seen
from .regionflow import tensors_in
from .watch import PathWatch


def tensor_metas(value: Any, limit: int = 8) -> tuple[TensorMeta, ...]:
    """Shape, dtype and grad flags of the tensors in a call's arguments or output (no tensor is kept). Read at
    every adapter layer call: a lone tensor skips the search, a dtype's name is looked up."""
    tensors = (value,) if type(value) is torch.Tensor else tensors_in(value, limit)
    return tuple(TensorMeta(tuple(t.shape), _dtype_name(t.dtype), t.requires_grad, not t.is_leaf)
                 for t in tensors)  # is_leaf: no node object made


@functools.cache
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class StepHooks:
    """Installs every hook of one traced step; `keep` receives each handle as soon as it exists."""

    def __init__(self, rec: Recording, keep: Callable[[RemovableHandle], None], *,
                 before_write: Callable[[Any], None] | None = None, optimizer_hooks: bool = True) -> None:
        self.rec = rec
        self._keep = keep
        self._optimizer_hooks = optimizer_hooks  # False: the caller forwards the step hooks (watch())
        self.watch: PathWatch | None = None
        self._before_write = before_write
        self._site_of = {p.name: site.module for site in rec.found.sites for p in site.params}
        self._module_of: dict[int, tuple[str, str]] = {}
        self._base_of: dict[int, str] = {}
        self._once: dict[str, RemovableHandle] = {}
        self.gradients = GradientHooks(rec, keep, self.paused, lambda: self.watch is not None)

    def install(self) -> None:
        rec, keep = self.rec, self._keep
        for name, layer in rec.found.lora.items():
            if rec.deep:  # which wrapper's forward is running: only the deep mode's watch asks
                keep(layer.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            keep(layer.register_forward_hook(self._post_hook(name), with_kwargs=True, always_call=True))
        tuners = {id(tuner) for tuner in rec.found.tuners.values()}
        for region, module in rec.found.regions.items():
            # a PEFT tuner's region: PeftModel.forward calls the model it wraps directly, not the tuner
            for entry in (module, module.model) if id(module) in tuners else (module,):
                keep(entry.register_forward_pre_hook(rec.flow.pre_hook(region), with_kwargs=True))
                keep(entry.register_forward_hook(rec.flow.post_hook(region), with_kwargs=True, always_call=True))
        self._watch_enclosing()
        keep(rec.found.root.register_forward_hook(self._root_hook))
        keep(rec.found.root.register_forward_pre_hook(self._labels_hook, with_kwargs=True))
        keep(rec.found.root.register_forward_pre_hook(self._micro_step_hook))
        if rec.optimizer is not None and self._optimizer_hooks:
            self.watch_optimizer(rec.optimizer)
        self.gradients.install()
        if rec.deep:
            self._watch_adaptable()
            base_weights = {id(layer.get_base_layer().weight): name for name, layer in rec.found.lora.items()
                            if isinstance(getattr(layer.get_base_layer(), "weight", None), nn.Parameter)}
            self.watch = PathWatch(base_weights=base_weights, inside_wrapper=rec.open_wrappers.__contains__,
                                   on_loss=self._add_loss, in_checkpoint_forward=locate.in_checkpoint_forward,
                                   candidates=rec.candidates, on_change=self._on_change,
                                   before_write=self._before_write)
            self._module_of = {id(p): (name, self._site_of[name]) for name, p in rec.found.lora_params()}
            self._base_of = {key: name for key, name in base_weights.items()}
            self.watch.__enter__()

    def uninstall_watch(self) -> None:
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.__exit__(None, None, None)

    def paused(self) -> contextlib.AbstractContextManager[Any]:
        """Our own tensor calls inside hooks are not the user's: the watch does not see them."""
        return self.watch.pause() if self.watch is not None else contextlib.nullcontext()

    # -- LoRA layers -----------------------------------------------------------------------------------
    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
            if kwargs is not None:  # None: removed while its module's call was starting (see _labels_hook)
                self.rec.open_wrappers.append(name)

        return hook

    def _post_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            wrappers = self.rec.open_wrappers
            if wrappers and wrappers[-1] == name:
                wrappers.pop()
            elif name in wrappers:
                wrappers.remove(name)
            with self.paused():
                self._record_call(name, module, args[0] if len(args) == 1 and not kwargs else (args, kwargs), output)

        return hook

    def _record_call(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        grad_on = torch.is_grad_enabled()
        cut = None if grad_on else self._grad_off_place(name)
        phase = Phase.RECOMPUTE if grad_on and locate.in_checkpoint_recompute() else Phase.FORWARD
        calls = self.rec.calls
        state = adapter_state(module)  # read once per call; adapter_active derives from it
        calls.append(ModuleCall(
            seq=len(calls), module=name, phase=phase, grad_enabled=grad_on,
            inference_mode=torch.is_inference_mode_enabled(), inputs=tensor_metas(inputs),
            outputs=tensor_metas(output), adapter_active=adapter_active(module, state), cut=cut,
            state=state, training=bool(module.training),
        ))

    def _grad_off_place(self, name: str) -> int:
        site = locate.grad_off_site(1)
        if site.checkpoint_inputs is not None:
            kind = CutKind.CHECKPOINT
        elif torch.is_inference_mode_enabled():
            kind = CutKind.INFERENCE_MODE
        else:
            kind = CutKind.NO_GRAD
        places = self.rec.grad_off
        place = places.get((kind, site.location))
        if place is None:
            place = places[(kind, site.location)] = GradOffPlace(kind, site, len(places))
        place.modules[name] = None
        return place.index

    # -- which modules enclosing adapter layers ran: the model's own conditional paths ---------------------
    def _watch_enclosing(self) -> None:
        """A pre-hook on each module enclosing an adapter layer (the model, towers, blocks, experts) that
        records its first call and removes itself, so it costs one call per module and step."""
        watched = []
        for name, module in self.rec.found.enclosing:
            handle = module.register_forward_pre_hook(self._enclosing_hook(name))
            self._keep(handle)
            self._once[name] = handle
            watched.append((name, type(module).__name__))
        self.rec.enclosing = tuple(name for name, _ in watched)
        self.rec.enclosing_types = tuple(kind for _, kind in watched)

    def _enclosing_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            self.entered(name)

        return hook

    def entered(self, name: str) -> None:
        """The enclosing module `name` was called (its one-shot hook, or a tracer opened inside its call)."""
        if name in self.rec.enclosing:
            self.rec.enclosing_called[name] = None
        handle = self._once.pop(name, None)
        if handle is not None:
            handle.remove()

    # -- deep mode: which adaptable layers ran, so a target_modules fix can be checked --------------------
    def _watch_adaptable(self) -> None:
        self.rec.adaptable_run = {}
        for name, module in self.rec.found.adaptable:
            self._keep(module.register_forward_hook(self._adaptable_hook(name)))

    def _adaptable_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if torch.is_grad_enabled() and self.rec.adaptable_run is not None:
                self.rec.adaptable_run[name] = None

        return hook

    # -- the model, the optimizer, the gradients -------------------------------------------------------
    def _labels_hook(self, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        """Whether every label of this call is ignored. Called without kwargs when this trace was closed by a
        global pre-hook of the same call (`lora-trace run` ending a step as the next starts): torch had
        listed the hook before its removal and no longer finds it among the kwargs hooks. Nothing to do then."""
        if kwargs is None:
            return
        labels = kwargs.get("labels")
        if labels is None:
            for arg in args:
                if isinstance(arg, dict) and isinstance(arg.get("labels"), torch.Tensor):
                    labels = arg["labels"]
        if isinstance(labels, torch.Tensor) and labels.device.type != "meta" and not labels.is_floating_point():
            with self.paused():  # read when the block ends: no synchronisation here
                self.rec.labels_ignored.append((labels == -100).all())

    def _micro_step_hook(self, module: nn.Module, args: tuple) -> None:
        """A call of the model opens a micro-step; DDP's flag says whether its backward will all-reduce."""
        flag = self.rec.sync_flag
        self.rec.micro_steps.append((flag() if flag is not None else None, {}))

    def watch_optimizer(self, optimizer: Any) -> None:
        if self._optimizer_hooks:
            self._keep(optimizer.register_step_pre_hook(self._step_pre_hook))
            self._keep(optimizer.register_step_post_hook(self._step_hook))

    def forwarded_step(self, optimizer: Any, *, before: bool) -> None:
        """The optimizer's step hooks, called by whoever holds them (watch(): a monitor must not add or remove
        optimizer hooks while the optimizer iterates over them)."""
        (self._step_pre_hook if before else self._step_hook)(optimizer, (), {})

    def _step_pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """The learning rates the update uses (a scheduler may change them right after the step)."""
        if self.rec.step_lrs is None:
            groups = optimizer.param_groups
            self.rec.step_lrs = tuple(group_rate(g) for g in groups)
            self.rec.initial_lrs = tuple(group_rate(g, "initial_lr") for g in groups)
            try:  # inside the user's optimizer.step(): evidence only, never an exception there
                if self.rec.backward_seen:  # gradients arrived before this update: which ones are gone now
                    self.rec.no_grad_at_step = tuple(n for n, p in self.rec.found.lora_params() if p.grad is None)
                names = self.rec.found.param_names  # the gradients as the update uses them (references: no copy)
                self.rec.grads_at_step = {names[id(p)]: (p.grad, p.grad._version) for g in groups
                                          for p in g["params"] if id(p) in names and p.grad is not None}
            except Exception:  # noqa: BLE001 - an exotic gradient type: these judgements are then not made
                self.rec.no_grad_at_step, self.rec.grads_at_step = None, {}

    def _step_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.rec.optimizer_steps += 1

    def _on_change(self, kind: str, tensor: torch.Tensor, value: bool | None) -> None:
        """Deep mode: a LoRA parameter's requires_grad set, or a LoRA layer's base weight written."""
        if kind == "requires-grad":
            found = self._module_of.get(id(tensor))
            if found is None or bool(tensor.requires_grad) == value:
                return  # not LoRA, or no change
            param, module = found
        else:
            module = self._base_of.get(id(tensor))
            if module is None or module in self.rec.open_wrappers:
                return  # not a base weight, or written by its own forward (MultiheadAttention LoRA merges there)
            param = None
        site = locate.call_site(1)
        changes = self.rec.changes
        seen = changes.get((kind, site.location, value))
        if seen is None:
            seen = changes[(kind, site.location, value)] = ChangeSeen(kind, site, len(changes), value=value)
        seen.modules[module] = None
        if param is not None:
            seen.params[param] = None
        seen.count += 1

    def _root_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        with self.paused():
            loss = scalar_candidate(output)
            if loss is not None:
                self.rec.model_outputs.append(loss_seen(loss, "model-output"))
                if loss.grad_fn is not None:
                    self._keep(loss.grad_fn.register_prehook(self._backward_hook))

    def _backward_hook(self, grad_outputs: Any) -> None:
        self.rec.backward_seen = True

    def _add_loss(self, tensor: torch.Tensor, source: str) -> None:
        """A tensor backward() or autograd.grad() starts from (the deep mode sees these calls)."""
        with self.paused():
            self.rec.losses.append(loss_seen(tensor, source))
        self.rec.backward_seen = True
