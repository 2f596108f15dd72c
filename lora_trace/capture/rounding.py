"""Whether an update too small to see was rounded away: a held parameter that did not move over a step though a
gradient arrived, judged against the float spacing of its own values."""

from __future__ import annotations

import math

import torch

from ..core.records import GradArrival
from .recording import Recording, local_shard


def rounded_away(rec: Recording, still: set[str], arrivals: tuple[GradArrival, ...]) -> tuple[str, ...]:
    """Of the held parameters that did not move though a gradient arrived: those the optimizer's step could not
    move. An optimizer that does not normalise (no `eps`: SGD, with or without momentum) steps by lr x (the
    gradient or a buffer of the parameter's shape it holds) + lr x weight decay x value; under half the float
    spacing of every value that rounds away (a factor whose partner is still near zero, half-precision weights
    at a small lr). A normalising one (Adam, RMSprop: `eps`) moves even tiny gradients by about lr: not judged
    here, the not-updated error stands."""
    if not still or rec.step_lrs is None:
        return ()
    optimizer = rec.optimizer
    rates = {id(p): (lr, group.get("weight_decay") or 0.0)
             for group, lr in zip(optimizer.param_groups, rec.step_lrs, strict=False) if "eps" not in group
             for p in group["params"]}
    current = dict(rec.found.lora_params())
    rounded = []
    for arrival in arrivals:
        name = arrival.param
        if name not in still or not arrival.norm or not math.isfinite(arrival.norm):
            continue
        param = current[name]
        lr, decay = rates.get(id(param), (0.0, 0.0))
        if lr is None or lr <= 0:
            continue  # at lr 0 (or a normalising optimizer's group) the rate is the reason
        held = [v for v in optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor)]
        if step_rounds_away(local_shard(rec.start.values[name]), [param.grad, *held], arrival.norm, lr, decay):
            rounded.append(name)
    return tuple(rounded)


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
