"""Find the loss in what a step returned: a tensor, a dict or ModelOutput with `loss`, or a tuple."""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import LossNotFoundError
from ..core.records import LossInfo


def find_loss(result: Any) -> torch.Tensor:
    """The loss tensor in a step's result, or a LossNotFoundError that says how to return it."""
    if isinstance(result, torch.Tensor):
        return result
    loss = None
    if isinstance(result, dict) or hasattr(result, "keys"):
        loss = result.get("loss") if hasattr(result, "get") else None
    elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
        loss = result[0]
    if isinstance(loss, torch.Tensor):
        return loss
    raise LossNotFoundError(
        f"the step returned {type(result).__name__}, which holds no loss tensor lora-trace can identify; "
        "make step(model) return the loss tensor (or a dict / ModelOutput with a 'loss' entry)"
    )


def scalar_candidate(result: Any) -> torch.Tensor | None:
    """A model output that looks like a loss (a floating scalar tensor, or `.loss`), else None."""
    if isinstance(result, torch.Tensor):
        candidate = result
    elif hasattr(result, "get") and hasattr(result, "keys"):
        candidate = result.get("loss")
    elif isinstance(result, (tuple, list)) and result:
        candidate = result[0]
    else:
        return None
    if isinstance(candidate, torch.Tensor) and candidate.is_floating_point() and candidate.numel() == 1:
        return candidate
    return None


def describe_loss(loss: torch.Tensor, source: str, *, read: bool = True) -> LossInfo:
    """What the loss was; its value read now (`read`: one device synchronisation) or left for the caller, who
    keeps `loss_value` and reads every such value at once when the block ends."""
    held = loss_value(loss) if read else None
    return LossInfo(source, bool(loss.requires_grad), loss.grad_fn is not None, tuple(loss.shape),
                    float(held) if held is not None else None)


def loss_value(loss: torch.Tensor) -> torch.Tensor | None:
    """The loss's value now, as a float32 copy left on its device (None where there is none to read)."""
    if loss.numel() != 1 or loss.device.type == "meta":
        return None
    with torch.no_grad():
        return loss.detach().reshape(()).to(torch.float32, copy=True)
