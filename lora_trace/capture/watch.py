"""Deep mode: a scoped TorchFunctionMode that sees the calls that cut a gradient path, and the losses.

It observes only: every call is passed through unchanged. What it keeps per candidate cut is the
autograd node of the tensor that was cut (walked once, at the end of the step) and the source line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..core.records import CutKind
from . import locate

_CUTTING: dict[Any, CutKind] = {
    torch.Tensor.detach: CutKind.DETACH,
    torch.Tensor.data.__get__: CutKind.DATA,
    torch.Tensor.item: CutKind.ITEM,
    torch.Tensor.tolist: CutKind.TOLIST,
    torch.Tensor.numpy: CutKind.NUMPY,
}
_BACKWARD = {
    torch.Tensor.backward: "backward", torch.autograd.backward: "backward", torch.autograd.grad: "autograd.grad",
}
_FLAG_SETTERS = {torch.Tensor.requires_grad_, torch.Tensor.requires_grad.__set__}
_WRITERS = {torch.Tensor.data.__set__, torch.Tensor.add_, torch.Tensor.sub_, torch.Tensor.copy_, torch.Tensor.mul_,
            torch.Tensor.div_, torch.Tensor.zero_, torch.Tensor.fill_, torch.Tensor.set_}
_KNOWN = set(_CUTTING) | set(_BACKWARD) | _FLAG_SETTERS | _WRITERS
_WEIGHT_USERS = {F.linear, F.embedding, F.conv1d, F.conv2d, F.conv3d, torch.matmul, torch.mm, torch.addmm,
                 torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.t, torch.Tensor.T.__get__}
_WATCHED = frozenset(_KNOWN | _WEIGHT_USERS)  # the calls _observe looks at with grad on; any other returns at once


def writes(func: Any) -> bool:
    """An in-place op (`add_`, `copy_`, `_foreach_mul_`, `__iadd__`) or a `.data` assignment: it writes its
    first argument. A conversion (`to`, `half`, ...) may be assigned back to it (Module.to() does, where no
    torch function sees the assignment), so it counts too."""
    if func is _DATA_SET or func in _CONVERSIONS:
        return True
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("__")) or name in _IN_PLACE_OPERATORS


_DATA_SET = torch.Tensor.data.__set__
_CONVERSIONS = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu, torch.Tensor.half, torch.Tensor.float,
                torch.Tensor.double, torch.Tensor.bfloat16, torch.Tensor.type}
_IN_PLACE_OPERATORS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imatmul__",
                       "__ipow__", "__iand__", "__ior__", "__ixor__"}


@dataclass
class CutCandidate:
    kind: CutKind
    site: locate.Site
    detail: str
    nodes: list[Any] = field(default_factory=list)  # autograd nodes of the cut tensors
    modules: set[str] = field(default_factory=set)
    count: int = 0


class PathWatch(TorchFunctionMode):
    """Records detaching calls, ops run under a disabled grad mode on tensors that require grad, direct
    uses of a LoRA layer's base weight, and the tensors backward() / autograd.grad() start from."""

    def __init__(
        self,
        *,
        base_weights: dict[int, str],
        inside_wrapper: Callable[[str], bool],
        on_loss: Callable[[torch.Tensor, str], None],
        in_checkpoint_forward: Callable[[], bool],
        candidates: dict[tuple[CutKind, str | None, str], CutCandidate] | None = None,
        on_change: Callable[[str, torch.Tensor, bool | None], None] | None = None,
        before_write: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__()
        self._base_weights = base_weights
        self._inside_wrapper = inside_wrapper
        self._on_loss = on_loss
        self._in_checkpoint_forward = in_checkpoint_forward
        self._local = threading.local()
        self._local.paused = False  # set: reading a missing attribute costs a caught AttributeError per call
        self.candidates = candidates if candidates is not None else {}  # filled in place: the recording's
        self._on_change = on_change
        self._before_write = before_write

    def pause(self) -> _Paused:
        """Our own hooks run inside the mode; their tensor calls are not the user's."""
        return _Paused(self._local)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        # Called ~10,000 times a step: a set lookup decides; torch pops this mode while it runs, so nothing
        # done here comes back to it (the pause is for our hooks, which run outside any torch function).
        if getattr(self._local, "paused", False):
            return func(*args, **kwargs) if kwargs else func(*args)
        grad_on = torch.is_grad_enabled()
        if grad_on and func in _WEIGHT_USERS and self._before_write is None:  # every linear: the common case
            weights = self._base_weights
            for arg in args:
                if id(arg) in weights and isinstance(arg, torch.nn.Parameter):  # an id alone may be reused
                    self._weight_use(func, weights[id(arg)])
        elif not grad_on or func in _WATCHED or self._before_write is not None:  # else: only the graph-end check
            self._observe(func, args, kwargs or {})
        result = func(*args, **kwargs) if kwargs else func(*args)
        if (grad_on and func not in _KNOWN and isinstance(result, torch.Tensor) and not result.requires_grad
                and result.is_floating_point()):
            self._graph_end(func, args, result)
        return result

    def _graph_end(self, func: Any, args: tuple, result: torch.Tensor) -> None:
        """An op whose input carries a graph and whose float output carries none, with grad enabled: where a
        path can end without any of the known detaching calls (a tensor rebuilt from another, a copy into a
        fresh buffer). Allocations shaped like an input (`zeros_like`, `new_empty`) are not cuts."""
        name = getattr(func, "__name__", "")
        if name.endswith("_like") or name.startswith("new_") and name != "new_tensor":
            return
        nodes = [a.grad_fn for a in args if isinstance(a, torch.Tensor) and a.requires_grad and not a.is_leaf]
        if nodes:
            self._add(CutKind.GRAPH_END, locate.call_site(1), f"{name or 'an op'} (its output has no graph)", nodes)

    def _observe(self, func: Any, args: tuple, kwargs: dict) -> None:
        if self._before_write is not None and args and writes(func):
            self._before_write(args[0])
        source = _BACKWARD.get(func)
        if source is not None:
            roots = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
            for tensor in roots if isinstance(roots, (tuple, list)) else (roots,):
                if isinstance(tensor, torch.Tensor):
                    self._on_loss(tensor, source)
            return
        kind = _CUTTING.get(func)
        if kind is not None:
            tensor = args[0] if args else None
            if isinstance(tensor, torch.Tensor) and tensor.grad_fn is not None:
                self._add(kind, locate.call_site(1), f"Tensor.{kind.value}", [tensor.grad_fn])
            return
        if func in _FLAG_SETTERS or func in _WRITERS:
            tensor = args[0] if args else None
            if self._on_change is not None and isinstance(tensor, torch.nn.Parameter):
                if func in _WRITERS:
                    self._on_change("base-write", tensor, None)
                else:
                    value = args[1] if len(args) > 1 else kwargs.get("requires_grad", True)
                    self._on_change("requires-grad", tensor, bool(value))
            return
        if func in _WEIGHT_USERS:
            for arg in args:
                if id(arg) in self._base_weights and isinstance(arg, torch.nn.Parameter):
                    self._weight_use(func, self._base_weights[id(arg)])
        if not torch.is_grad_enabled():
            grad_inputs = [a.grad_fn for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None]
            if grad_inputs and not self._in_checkpoint_forward():
                site = locate.grad_off_site(1)
                kind = CutKind.INFERENCE_MODE if torch.is_inference_mode_enabled() else CutKind.NO_GRAD
                self._add(kind, site, "an op on a tensor that requires grad, run with grad disabled", grad_inputs)

    def _weight_use(self, func: Any, name: str) -> None:
        """A LoRA layer's base weight used by an op: a bypass of the adapter unless its wrapper is running."""
        if not self._inside_wrapper(name):
            candidate = self._add(CutKind.DIRECT_WEIGHT, locate.call_site(2),
                                  f"{getattr(func, '__name__', 'op')} on {name}.weight", [])
            candidate.modules.add(name)

    def _add(self, kind: CutKind, site: locate.Site, detail: str, nodes: list[Any]) -> CutCandidate:
        key = (kind, site.location, detail)
        candidate = self.candidates.get(key)
        if candidate is None:
            candidate = self.candidates[key] = CutCandidate(kind, site, detail)
        candidate.count += 1
        if len(candidate.nodes) < 64:
            candidate.nodes.extend(nodes)
        return candidate


class _Paused:
    def __init__(self, local: threading.local) -> None:
        self._local = local
        self._before = False

    def __enter__(self) -> None:
        self._before = getattr(self._local, "paused", False)
        self._local.paused = True

    def __exit__(self, *exc: object) -> None:
        self._local.paused = self._before
