"""Which region fed which: region calls and the data flow between them, for the encoding-path graph.

A forward pre/post hook on each region's root module (a handful of modules) notes the call, its nesting
and the autograd nodes of its float inputs and outputs. When the step ends, a bounded walk back from each
call's inputs finds the nearest region outputs: those are data-flow edges. Where an input has no graph
(grad off, detached), the edge is inferred from call order among siblings and marked so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.records import RegionCall

_WALK_LIMIT = 20000  # autograd nodes visited per input before giving up on finding a producer


def tensors_in(value: Any, limit: int, *, floating_only: bool = False) -> list[torch.Tensor]:
    """The first `limit` tensors inside a call's arguments or output (tuples, lists, dicts, ModelOutputs)."""
    found, pending = [], [value]
    while pending and len(found) < limit:
        item = pending.pop(0)
        if isinstance(item, torch.Tensor):
            if not floating_only or item.is_floating_point():
                found.append(item)
        elif isinstance(item, (tuple, list)):
            pending.extend(item)
        elif isinstance(item, dict) or (hasattr(item, "values") and hasattr(item, "keys")):
            pending.extend(item.values())
    return found


@dataclass
class _Call:
    seq: int
    region: str
    parent: int | None
    grad_enabled: bool
    inputs: list[Any] = field(default_factory=list)  # autograd nodes of float inputs (None: no graph)
    has_float_input_without_graph: bool = False
    outputs: list[Any] = field(default_factory=list)
    ended: int = -1


class RegionFlow:
    """Records region calls through hooks the tracer installs, and turns them into RegionCall records."""

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._open: list[int] = []
        self._clock = 0

    def pre_hook(self, region: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
            if kwargs is None:  # removed while its module's call was starting (hooks.StepHooks._labels_hook)
                return
            parent = next((seq for seq in reversed(self._open) if seq >= 0), None)
            if parent is not None and self._calls[parent].region == region:
                self._open.append(-1)  # the same region entered again (a PEFT tuner, then the model it wraps)
                return
            tensors = tensors_in((args, kwargs), 16, floating_only=True)
            call = _Call(len(self._calls), region, parent, torch.is_grad_enabled())
            call.inputs = [t.grad_fn for t in tensors if t.grad_fn is not None]
            call.has_float_input_without_graph = any(t.grad_fn is None for t in tensors)
            self._calls.append(call)
            self._open.append(call.seq)

        return hook

    def post_hook(self, region: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self._open or self._open[-1] < 0:
                del self._open[-1:]
                return
            call = self._calls[self._open.pop()]
            call.outputs = [t.grad_fn for t in tensors_in(output, 16, floating_only=True) if t.grad_fn is not None]
            self._clock += 1
            call.ended = self._clock

        return hook

    def regions_in_order(self) -> tuple[str, ...]:
        """Every region that ran, in the order it first started."""
        return tuple(dict.fromkeys(call.region for call in self._calls))

    def records(self, loss_nodes: list[Any]) -> tuple[tuple[RegionCall, ...], tuple[int, ...]]:
        """The region calls with their producers, and the calls whose outputs the loss reads directly."""
        parents = {c.parent for c in self._calls if c.parent is not None}
        leaves = [c for c in self._calls if c.seq not in parents]
        producer = {id(node): call.seq for call in leaves for node in call.outputs
                    if all(node is not given for given in call.inputs)}  # a passed-through input is not produced
        records = []
        for call in self._calls:
            fed_by = sorted(_nearest(call.inputs, producer) - {call.seq}) if call.seq not in parents else []
            inferred = False
            if call.seq not in parents and not fed_by and call.has_float_input_without_graph:
                before = [c for c in leaves if c.parent == call.parent and 0 <= c.ended and c.seq < call.seq]
                if before:
                    fed_by, inferred = [before[-1].seq], True
            records.append(RegionCall(call.seq, call.region, call.parent, call.grad_enabled,
                                      call.seq not in parents, tuple(fed_by), inferred))
        return tuple(records), tuple(sorted(_nearest(loss_nodes, producer)))


def _nearest(starts: list[Any], producer: dict[int, int]) -> set[int]:
    """Region calls whose outputs are the nearest recorded producers upstream of these autograd nodes."""
    found: set[int] = set()
    seen: set[int] = set()
    held: list[Any] = []  # ids are unique only while their objects live (see autograd.walk)
    stack = [n for n in starts if n is not None]
    while stack and len(seen) < _WALK_LIMIT:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        held.append(node)
        if id(node) in producer:
            found.add(producer[id(node)])
            continue
        for child, _ in getattr(node, "next_functions", ()):
            if child is not None:
                stack.append(child)
    stack.clear()
    while held:
        held.pop()
    return found
