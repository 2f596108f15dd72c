"""An iterative walk of the autograd graph: which LoRA parameters a tensor's gradient can reach."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.records import Reachability

_OPAQUE = ("CheckpointFunctionBackward",)  # reentrant checkpoint: its inner graph is built only in backward


def walk(roots: Iterable[Any], param_names: dict[int, str]) -> Reachability:
    """From autograd nodes (a loss's `grad_fn`, ...), the LoRA parameters whose AccumulateGrad is reached.

    Iterative (graphs of deep models overflow recursion), each node once. Reaching a reentrant
    checkpoint node is recorded in `opaque`: what lies behind it cannot be seen before backward.

    Every visited node's Python object is held until the walk ends: `seen` holds ids, and an id is only
    unique while its object lives (a freed wrapper's id is reused by the next one, and a node was skipped).
    """
    seen: set[int] = set()
    held: list[Any] = []
    stack = [node for node in roots if node is not None]
    found: set[str] = set()
    opaque: set[str] = set()
    while stack:
        node = stack.pop()
        key = id(node)
        if key in seen:
            continue
        seen.add(key)
        held.append(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            name = param_names.get(id(variable))
            if name is not None:
                found.add(name)
            continue
        kind = type(node).__name__
        if kind in _OPAQUE:
            opaque.add(kind)
        for child, _ in node.next_functions:
            if child is not None and id(child) not in seen:
                stack.append(child)
    count = len(seen)
    while held:
        held.pop()  # deepest first
    return Reachability(tuple(sorted(found)), count, tuple(sorted(opaque)))
