"""Where an exactly-zero or a non-finite gradient was born, read from the graph of one re-run of the step.

Only the dry run uses it, and only after its first run found `grad-zero` or `nonfinite-grad`: the step runs
again from the same state (weights, RNG) under a TorchFunctionMode that notes every op whose output is on a
path from the adapter parameters (its name and source line) and hooks that output's gradient. After
backward, the culprit is the op closest to the loss whose own incoming gradient was non-zero and finite while
the gradient it passed back to an adapter-derived input was all zero (or not finite): the node where it was
born. For a non-finite forward, the first op whose output was not finite while its inputs were. No list of
known causes decides it; the graph does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..core.records import GradOrigin
from . import locate
from .watch import writes


@dataclass
class _Op:
    name: str
    site: locate.Site
    inputs: list[int]  # indices of the adapter-derived ops whose outputs it took
    grad: str | None = None  # of its output: "zero" | "nonfinite" | "ok" (None: no gradient reached it)
    forward_finite: bool = True
    inputs_finite: bool = True
    forward_zero: bool = False  # its output is all zero
    affected: bool = False  # derived from a parameter the finding is about (not from a healthy layer)


class _Watch(TorchFunctionMode):
    def __init__(self, adapter_params: set[int], affected: set[int], before_write: Callable[[Any], None] | None
                 ) -> None:
        super().__init__()
        self.adapter_params = adapter_params
        self.affected = affected
        self.before_write = before_write
        self.ops: list[_Op] = []
        self.keep: list[torch.Tensor] = []  # outputs alive while the run lasts: their ids stay unique
        self.index_of: dict[int, int] = {}  # id(output tensor) -> its op

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if self.before_write is not None and args and writes(func):
            with torch._C.DisableTorchFunction():
                self.before_write(args[0])  # the dry run keeps what the re-run overwrites, as in the first run
        result = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(result)[0]  # a tensor, or several (split, chunk, max with indices)
                   if isinstance(t, torch.Tensor) and t.requires_grad and not t.is_leaf]
        if not outputs:
            return result
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = [self.index_of[id(t)] for t in tensors if id(t) in self.index_of]
        if not inputs and not any(id(t) in self.adapter_params for t in tensors):
            return result  # not on a path from the adapters
        site = locate.call_site(1)
        affected = any(self.ops[i].affected for i in inputs) or any(id(t) in self.affected for t in tensors)
        with torch._C.DisableTorchFunction():
            inputs_finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
            for output in outputs:
                finite = bool(torch.isfinite(output).all()) if output.is_floating_point() else True
                op = _Op(getattr(func, "__name__", repr(func)), site, inputs, None, finite, inputs_finite,
                         not bool(torch.count_nonzero(output)), affected)
                self.index_of[id(output)] = len(self.ops)
                self.ops.append(op)
                self.keep.append(output)
                output.register_hook(lambda grad, op=op: self._grad(op, grad))
        return result

    @staticmethod
    def _grad(op: _Op, grad: torch.Tensor) -> None:
        with torch._C.DisableTorchFunction():
            if not bool(torch.isfinite(grad).all()):
                op.grad = "nonfinite"
            elif not bool(torch.count_nonzero(grad)):
                op.grad = "zero"
            elif op.grad is None:
                op.grad = "ok"


def find_origin(model: torch.nn.Module, step: Callable[[torch.nn.Module], Any], params: dict[str, torch.nn.Parameter],
                kind: str, seen: set[str], about: set[str], before_write: Callable[[Any], None] | None = None
                ) -> GradOrigin | None:
    """Re-run `step` (state already restored by the caller) and name where `kind` ("zero" | "nonfinite") was
    born on the paths from the `about` parameters (those the finding is about, not zeros that initialisation
    explains); None when the re-run does not reproduce the first run's `seen` set, or the graph shows no such
    node (a zero that comes from a zero input, not from the gradient)."""
    from .losses import find_loss

    watch = _Watch({id(p) for p in params.values()}, {id(params[n]) for n in about if n in params}, before_write)
    for param in params.values():
        param.grad = None
    with watch:
        loss = find_loss(step(model))
    if not loss.requires_grad:
        return None
    if all(p.grad is None for p in params.values()):  # a step that runs its own backward has run it
        (loss if loss.numel() == 1 else loss.sum()).backward()
    if _seen(params, kind) != seen:
        return None  # the step did something else this time (another batch): no claim
    ops = watch.ops
    if kind == "nonfinite":
        born = next((op for op in ops if op.affected and not op.forward_finite and op.inputs_finite), None)
        if born is not None:
            return GradOrigin("forward-nonfinite", born.name, born.site.location, born.site.stack)
    bad = "nonfinite" if kind == "nonfinite" else "zero"
    for index in range(len(ops) - 1, -1, -1):  # backward order: the op nearest the loss first
        op = ops[index]
        if op.grad == "ok" and any(ops[i].grad == bad and ops[i].affected for i in op.inputs):
            if bad == "zero":
                op = ops[_zeroed_by(ops, index)]
            return GradOrigin(bad, op.name, op.site.location, op.site.stack)
    return None


def _zeroed_by(ops: list[_Op], index: int) -> int:
    """A gradient that turns zero at an op whose input was already all zero in the forward (`pow` after a
    zero mask) was zeroed where that input was: follow all-zero inputs back to the op that made them."""
    while True:
        zero = [i for i in ops[index].inputs if ops[i].forward_zero]
        if not zero:
            return index
        index = zero[0]


def _seen(params: dict[str, torch.nn.Parameter], kind: str) -> set[str]:
    with torch.no_grad():
        if kind == "zero":
            return {n for n, p in params.items() if p.grad is not None and not bool(torch.count_nonzero(p.grad))}
        return {n for n, p in params.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())}
