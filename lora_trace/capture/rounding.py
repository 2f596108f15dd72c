"""Why a held parameter did not move over a step though a gradient arrived, read from what the update used: a
gradient that was all zero by then, or a step too small for the float spacing of its own values."""

from __future__ import annotations

import math

import torch

from ..core.records import GradArrival
from .recording import WIDE_FLOATS, Recording, local_shard


def rounded_away(rec: Recording, still: set[str], arrivals: tuple[GradArrival, ...]
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Of the held parameters that did not move though a gradient arrived, at a learning rate above 0: those
    whose update rounded away, proven and likely.

    Proven (every element): an optimizer that steps by the gradient (no `eps` or `betas`: SGD, with or without
    momentum) moves each element by at most lr x (|gradient| + its buffers of the parameter's shape) + lr x weight
    decay x |value|; under half the float spacing of every value that rounds away (a factor whose partner is
    still near zero). Likely (the typical element): the typical step, about lr for an optimizer that normalises
    or takes signs (Adam, RMSprop, Lion: `eps` or `betas`) and lr x the typical gradient for SGD, is under half the
    spacing of the median value: most of the update is lost to the values' precision (bf16/fp16 adapter weights
    at a small learning rate)."""
    if not still or rec.step_lrs is None:
        return (), ()
    optimizer = rec.optimizer
    rates = {id(p): (lr, group.get("weight_decay") or 0.0, "eps" in group or "betas" in group)
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
        grad = _used_gradient(rec, name, param, arrival.norm)
        held = [v for v in optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor)]
        if not normalises and step_rounds_away(values, grad, held, arrival.norm, lr, decay):
            proven.append(name)
        elif typical_step_rounds_away(values, grad, held, arrival.norm, lr, decay, normalises=normalises):
            # SGD in full precision: a tiny gradient, as proven above; else the weights' own precision
            (proven if not normalises and values.dtype in WIDE_FLOATS else likely).append(name)
    return tuple(proven), tuple(likely)


_SPACED = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})  # nextafter and median take
# these; float8 and the rest are not judged (the not-updated error stands)


def _judged(values: torch.Tensor) -> bool:
    return values.dtype in _SPACED and values.numel() > 0 and values.device.type != "meta"


def zero_at_step(rec: Recording, still: set[str]) -> tuple[str, ...]:
    """Of the held parameters that did not move: those whose gradient was all zero as the update began (and
    unchanged since): something between backward() and step() zeroed what arrived (clip_grad_norm_ with
    max_norm=0, a mask on the gradients, zero_grad(set_to_none=False)). One read per such parameter: rare."""
    zeroed = []
    for name in sorted(still):
        seen = rec.grads_at_step.get(name)
        if seen is not None and seen[0]._version == seen[1] and seen[0].device.type != "meta" \
                and not bool(local_shard(seen[0]).any()):
            zeroed.append(name)
    return tuple(zeroed)


def _used_gradient(rec: Recording, name: str, param: torch.Tensor, norm: float) -> torch.Tensor | None:
    """The gradient the update used, where known: as the step began, if nothing changed it since (a zero_grad()
    in the block clears .grad; a GradScaler had unscaled it by then); else `.grad` now if it is still the one that
    arrived (same norm). None: only the arrival's norm is known."""
    seen = rec.grads_at_step.get(name)
    if seen is not None and seen[0]._version == seen[1]:
        return seen[0]
    now = param.grad
    if now is not None and math.isclose(float(local_shard(now).double().norm()), norm, rel_tol=1e-5):
        return now
    return None


def typical_step_rounds_away(values: torch.Tensor, grad: torch.Tensor | None, buffers: list[torch.Tensor],
                             norm: float, lr: float, decay: float = 0.0, *, normalises: bool) -> bool:
    """Whether the typical step is under half the float spacing of the median |value| (in the values' dtype): about
    lr for a normalising optimizer whatever the gradient; else lr x (the median of |gradient| + its buffers, and
    weight decay x the median |value|) (`grad`, or where only its norm is known, the norm's root mean square)."""
    if not _judged(values):
        return False
    middle = values.abs().median().reshape(1)
    spacing = float((torch.nextafter(middle, torch.full_like(middle, math.inf)) - middle).double())
    step = lr
    if not normalises:
        local = _magnitude(grad, values.shape)
        bound = local if local is not None else torch.full_like(values, norm / math.sqrt(values.numel()),
                                                                dtype=torch.float64)
        for buffer in map(_magnitude, buffers, [values.shape] * len(buffers)):
            if buffer is not None:
                bound = bound + buffer
        step = lr * (float(bound.median()) + decay * float(middle.double()))
    return step < spacing / 2


def step_rounds_away(values: torch.Tensor, grad: torch.Tensor | None, buffers: list[torch.Tensor], norm: float,
                     lr: float, decay: float) -> bool:
    """Whether lr x (|gradient| + each held buffer of the values' shape + decay x |value|) is under half the spacing
    of floats (in the values' own dtype) at every element: a bound on SGD's step with momentum, Nesterov's
    included. Where only the gradient's norm is known (`grad` None), that norm bounds every element."""
    if not _judged(values):
        return False
    magnitude = values.abs()
    spacing = (torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude).double()
    local = _magnitude(grad, values.shape)
    bound = local if local is not None else torch.full_like(spacing, norm)
    for buffer in map(_magnitude, buffers, [values.shape] * len(buffers)):
        if buffer is not None:
            bound = bound + buffer
    return bool((lr * (bound + decay * magnitude.double()) < spacing / 2).all())


def _magnitude(tensor: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """|tensor| in float64 where it has the values' shape (a step counter or another shape bounds nothing)."""
    if tensor is None:
        return None
    local = local_shard(tensor)
    return local.double().abs() if local.shape == shape else None
