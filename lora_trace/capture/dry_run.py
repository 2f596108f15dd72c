"""The one-shot dry run: run a step with full evidence, then put everything back exactly as it was."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.findings import Diagnosis
from .discovery import unwrap
from .losses import find_loss
from .peft import is_lora_layer
from .tracer import Tracer


class _SavedState:
    """Weights, buffers, .grad, requires_grad, training flags, optimizer / scaler / scheduler, RNG.

    Weight values are copied only where the dry run may change them: the parameters the optimizer holds
    (the trial step) and the base weights PEFT merges into for MultiheadAttention LoRA (merged for the
    forward, unmerged after: rounding changes them). Every other parameter's version counter is kept;
    restore() says so if the step changed one in place, instead of copying a 7B model's weights.
    """

    def __init__(self, root: nn.Module, stateful: list[Any], optimizer: Any) -> None:
        groups = optimizer.param_groups if optimizer is not None else ()
        changing = {id(p) for group in groups for p in group["params"]}
        changing |= {id(p) for module in root.modules() if is_lora_layer(module)
                     and isinstance(module.get_base_layer(), nn.MultiheadAttention)
                     for p in module.get_base_layer().parameters()}
        with torch.no_grad():
            self.params = [(p, p.detach().clone() if id(p) in changing else None, p._version, p.grad,
                            p.requires_grad) for p in root.parameters()]
            self.grad_values = [g.detach().clone() if g is not None else None for *_, g, _ in self.params]
            self.buffers = [(b, b.detach().clone()) for b in root.buffers()]
        self.training = [(m, m.training) for m in root.modules()]
        self.stateful = [(obj, copy.deepcopy(obj.state_dict())) for obj in stateful]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        changed_in_place = 0
        with torch.no_grad():
            for (param, value, version, grad, flag), grad_value in zip(self.params, self.grad_values, strict=True):
                if value is not None and param.device.type != "meta":
                    param.copy_(value)
                elif value is None and param._version != version:
                    changed_in_place += 1
                if grad is not None and grad_value is not None and grad.device.type != "meta":
                    grad.copy_(grad_value)  # backward accumulates into an existing .grad in place
                param.grad = grad
                param.requires_grad_(flag)
            for buffer, value in self.buffers:
                if buffer.device.type != "meta":
                    buffer.copy_(value)
        for module, flag in self.training:
            module.training = flag
        for obj, state in self.stateful:
            obj.load_state_dict(state)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if changed_in_place:
            warnings.warn(f"lora-trace: step(model) changed {changed_in_place} parameter(s) that no optimizer "
                          "holds in place; diagnose() restores the weights an optimizer step changes, not these",
                          stacklevel=3)


def diagnose(
    model: nn.Module,
    step: Callable[[nn.Module], Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    scheduler: Any = None,
    label: str | None = None,
) -> Diagnosis:
    """Run `step(model)` -> loss, backward, and a trial optimizer step, with full evidence (deep mode).
    A step that runs backward itself (and its own optimizer step) is traced as it is: nothing runs twice.

    Afterwards weights, buffers, `.grad`, `requires_grad`, training flags, the optimizer / scaler /
    scheduler state and the CPU/CUDA RNG are exactly what they were. The step's own exception passes through.
    """
    root = unwrap(model)
    stateful = [obj for obj in (optimizer, scaler, scheduler) if obj is not None]
    saved = _SavedState(root, stateful, optimizer)
    try:
        for param in root.parameters():
            param.grad = None  # clean evidence: which parameters this step reaches
        with Tracer(model, optimizer=optimizer, deep=True, label=label, scaler=scaler) as tracer:
            loss = find_loss(step(model))
            if not loss.requires_grad:
                tracer.note_loss(loss)
            elif not tracer.saw_backward():  # a step that runs its own backward (and step) is used as it is
                if loss.numel() != 1:
                    loss = loss.sum()  # a non-scalar loss: its sum reaches the same parameters
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if optimizer is not None and loss.device.type != "meta" and not tracer.saw_optimizer_step():
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
        return tracer.diagnosis
    finally:
        saved.restore()
