"""Whether an update too small to see was rounded away: a held parameter that did not move over a step though a
gradient arrived, judged against the float spacing of its own values."""

from __future__ import annotations

import math

import torch

from ..core.records import GradArrival
from .recording import Recording, local_shard


def rounded_away(rec: Recording, still: set[str], arrivals: tuple[GradArrival, ...]
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Of the held parameters that did not move though a gradient arrived, at a learning rate above 0: those
    whose update rounded away, proven and likely.

    Proven (every element): an optimizer that does not normalise (no `eps`: SGD, with or without momentum)
    steps by lr x (the gradient or a buffer of the parameter's shape it holds) + lr x weight decay x value;
    under half the float spacing of every value that rounds away (a factor whose partner is still near zero).
    Likely (the typical element): the typical step, about lr for a normalising optimizer (Adam, RMSprop: `eps`)
    and lr x the typical gradient for another, is under half the spacing of the median value: most of the
    update is lost to the values' precision (bf16/fp16 adapter weights at a small learning rate)."""
    if not still or rec.step_lrs is None:
        return (), ()
    optimizer = rec.optimizer
    rates = {id(p): (lr, group.get("weight_decay") or 0.0, "eps" in group)
             for group, lr in zip(optimizer.param_groups, rec.step_lrs, strict=False) for p in group["params"]}
    current = dict(rec.found.lora_params())
    proven, likely = [], []
    for arrival in arrivals:
        name = arrival.param
        if name not in still or not arrival.norm or not math.isfinite(arrival.norm):
            continue
        param = current[name]
        lr, decay, normalises = rates.get(id(param), (None, 0.0, False))
        if lr is None or lr <= 0:
            continue  # at lr 0 the rate is the reason
        values = local_shard(rec.start.values[name])
        held = [v for v in optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor)]
        if not normalises and step_rounds_away(values, [param.grad, *held], arrival.norm, lr, decay):
            proven.append(name)
        elif typical_step_rounds_away(values, None if normalises else param.grad, arrival.norm, lr):
            likely.append(name)
    return tuple(proven), tuple(likely)


def typical_step_rounds_away(values: torch.Tensor, grad: torch.Tensor | None, norm: float, lr: float) -> bool:
    """Whether the typical step is under half the float spacing of the median |value| (in the values' dtype).
    `grad` None: a normalising optimizer, whose step is about lr whatever the gradient; else the step is lr x the
    median |gradient| (`.grad` where it is still the one that arrived, else the norm's root mean square)."""
    if not values.is_floating_point() or values.numel() == 0:
        return False
    middle = values.abs().median().reshape(1)
    spacing = float((torch.nextafter(middle, torch.full_like(middle, math.inf)) - middle).double())
    step = lr
    if grad is not None:
        local = _magnitude(grad, values.shape)
        typical = norm / math.sqrt(values.numel())
        if local is not None and math.isclose(float(local.norm()), norm, rel_tol=1e-5):
            typical = float(local.median())
        step = lr * typical
    return step < spacing / 2


def step_rounds_away(values: torch.Tensor, held: list[torch.Tensor | None], norm: float, lr: float,
                     decay: float) -> bool:
    """Whether lr x (the largest of |gradient| and each held buffer + decay x |value|) is under half the spacing
    of floats (in the values' own dtype) at every element. `held[0]` is `.grad`: used where it is still the
    gradient that arrived (same norm), else that norm bounds every element."""
    if not values.is_floating_point() or values.numel() == 0:
        return False
    magnitude = values.abs()
    spacing = (torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude).double()
    grad, *buffers = (_magnitude(t, values.shape) for t in held)
    largest = grad if grad is not None and math.isclose(float(grad.norm()), norm, rel_tol=1e-5) else \
        torch.full_like(spacing, norm)
    for buffer in buffers:
        if buffer is not None:
            largest = torch.maximum(largest, buffer)
    return bool((lr * (largest + decay * magnitude.double()) < spacing / 2).all())


def _magnitude(tensor: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """|tensor| in float64 where it has the values' shape (a step counter or another shape bounds nothing)."""
    if tensor is None:
        return None
    local = local_shard(tensor)
    return local.double().abs() if local.shape == shape else None
