"""What the dry run puts back: every parameter and buffer bit for bit (also when the step replaced the
object, cast the model or wrote through `.data`), `.grad`, `requires_grad`, training flags, PEFT's adapter
state, optimizer / scaler / scheduler state and the RNG.

Memory follows what the step writes: the optimizer's parameters (the trial step changes them) and the
buffers are copied up front; any other tensor is copied just before the step first writes it, which the
dry run's TorchFunctionMode sees (an in-place op or a `.data` assignment on it, or on a view of its
storage). Something that cannot be put back (a submodule the step deleted) is said in a warning.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn


def _storage(tensor: torch.Tensor) -> int | None:
    """Where the tensor's storage starts: a view (`.data`) and its parameter share it."""
    if tensor.device.type == "meta" or hasattr(tensor, "to_local") or tensor.layout != torch.strided:
        return None
    return tensor.untyped_storage().data_ptr()


def _pointer(tensor: torch.Tensor) -> int | None:
    """Where the tensor's data starts (None where that says nothing: meta, a sharded DTensor)."""
    return None if tensor.device.type == "meta" or hasattr(tensor, "to_local") else tensor.data_ptr()


class SavedState:
    def __init__(self, root: nn.Module, stateful: list[Any], optimizer: Any) -> None:
        self.root = root
        self.slots = [(module, kind, name, tensor) for module in root.modules()
                      for kind in ("_parameters", "_buffers") for name, tensor in getattr(module, kind).items()
                      if tensor is not None]
        params = [t for _, kind, _, t in self.slots if kind == "_parameters"]
        held = {id(p) for group in (optimizer.param_groups if optimizer is not None else ()) for p in group["params"]}
        self.values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.by_storage = {key: t for _, _, _, t in self.slots if (key := _storage(t)) is not None}
        self.known = {id(t) for _, _, _, t in self.slots}
        with torch.no_grad():
            for _, kind, _, tensor in self.slots:
                if (kind == "_buffers" or id(tensor) in held) and tensor.device.type != "meta":
                    self.values[id(tensor)] = (tensor, tensor.detach().clone())
            self.flags = [(p, p._version, p.grad, p.grad.detach().clone() if p.grad is not None else None,
                           p.requires_grad) for p in dict.fromkeys(params)]
        self.kinds = {id(t): (t.dtype, _pointer(t)) for _, _, _, t in self.slots}
        self.training = [(m, m.training) for m in root.modules()]
        self.peft = _peft_state(root)
        self.stateful = [(obj, copy.deepcopy(obj.state_dict())) for obj in stateful]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def before_write(self, tensor: Any) -> None:
        """Called just before the step writes `tensor` in place (or assigns its `.data`): keep its value."""
        for item in tensor if isinstance(tensor, (list, tuple)) else (tensor,):
            if not isinstance(item, torch.Tensor):
                continue
            target = item if id(item) in self.known else self.by_storage.get(_storage(item) or -1)
            if target is not None and id(target) not in self.values and target.device.type != "meta":
                with torch.no_grad():
                    self.values[id(target)] = (target, target.detach().clone())

    def restore(self) -> None:
        lost = self._put_objects_back()
        unseen = 0
        with torch.no_grad():
            for tensor, value in self.values.values():
                if tensor.dtype != value.dtype or tensor.shape != value.shape or tensor.device != value.device:
                    tensor.data = value  # the step cast or replaced the data: the original tensor, as it was
                else:
                    tensor.copy_(value)
            for param, version, grad, grad_value, flag in self.flags:
                dtype, pointer = self.kinds[id(param)]
                moved = param.dtype != dtype or (pointer is not None and _pointer(param) != pointer)
                if id(param) not in self.values and (param._version != version or moved):
                    unseen += 1  # written where the mode could not see it (Module.to() assigns .data)
                    if param.dtype != dtype:
                        param.data = param.data.to(dtype)
                if grad is not None and grad_value is not None and grad.device.type != "meta":
                    grad.copy_(grad_value)  # backward accumulates into an existing .grad in place
                param.grad = grad
                param.requires_grad_(flag)
        for module, flag in self.training:
            module.training = flag
        for holder, attribute, value in self.peft:
            setattr(holder, attribute, copy.copy(value))
        for obj, state in self.stateful:
            obj.load_state_dict(state)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if lost or unseen:
            warnings.warn(f"lora-trace: step(model) changed the model in ways diagnose() could not undo: {lost} "
                          f"submodule(s) gone, {unseen} parameter(s) written where lora-trace could not see it",
                          stacklevel=4)

    def _put_objects_back(self) -> int:
        """The original Parameter / buffer objects in their places (an optimizer refers to the objects)."""
        present = {id(m) for m in self.root.modules()}
        gone: set[int] = set()
        for module, kind, name, original in self.slots:
            if id(module) not in present:
                gone.add(id(module))
                continue
            table = getattr(module, kind)
            if table.get(name) is not original:
                if name in module.__dict__:
                    del module.__dict__[name]
                table[name] = original
        return len(gone)


def _peft_state(root: nn.Module) -> list[tuple[Any, str, Any]]:
    """PEFT's adapter switches: each tuner layer's active / disabled / merged state, each tuner's active
    adapter (set_adapter, merge_adapter, disable_adapter_layers inside a step change them)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - PEFT is a dependency; a model without it has no adapter state
        return []
    saved = []
    for module in root.modules():
        if isinstance(module, BaseTunerLayer):
            for attribute in ("_active_adapter", "_disable_adapters", "merged_adapters"):
                if hasattr(module, attribute):
                    saved.append((module, attribute, copy.copy(getattr(module, attribute))))
        elif "active_adapter" in vars(module):  # a tuner (LoraModel) or the PeftModel around it
            saved.append((module, "active_adapter", copy.copy(vars(module)["active_adapter"])))
    return saved
