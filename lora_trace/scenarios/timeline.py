"""Scenarios where the model changes during the step, or a gradient arrives and is exactly zero (issue 17).

`timeline_case(name)` builds one of `TIMELINE_CASES`: a tiny PEFT model, a step, its optimizer and its truth.
`Truth.grad_params` holds the LoRA parameters whose `.grad` is not None after a real backward, exactly-zero
ones included; the knobs say the rest, for the tests and for whoever drives the step:

    runs_backward        the step calls loss.backward() itself: do not call it again
    runs_optimizer_step  the step also calls optimizer.step() (and scheduler.step()); drive it with
                         `lora_trace.trace(model, optimizer=...)` around `step(model)`, or pass
                         `scheduler=knobs["scheduler"]` to `diagnose`
    scheduler            the LR scheduler the step advances, or None
    zero_grad_params     LoRA parameters whose gradient arrives and is exactly zero (lora_B is not zero:
                         every case builds LoRA with init_lora_weights=False)
    frozen_at_backward   LoRA parameters trainable before the step whose requires_grad the step itself
                         turned off (PEFT's set_adapter / disable_adapter_layers do that)
    adapters             code -> the adapter names that finding must name
    healthy              no error finding is expected
    first_step_updates   one optimizer step changes the LoRA values that get a gradient
    tolerated            (code, severity) pairs a correct diagnosis may add (a warm-up's lr 0)
    peft_state_after     the PEFT state the step leaves behind: active_adapter, merged, disabled
    judgement            why the expected code is what it is, where design.md leaves room

`measure_timeline(scenario)` is the plain-PyTorch ground truth that honours these knobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .base import Scenario, marked_line
from .ground_truth import GradientMeasurement, GradientState, gradient_state
from .timeline_steps import (
    batch_of,
    disable_adapter_forward,
    disable_layers_never_reenabled,
    dpo_reference_pass,
    finding,
    frozen_reference_copy,
    grad_zero_alora_absent,
    grad_zero_alpha0,
    grad_zero_dropout1,
    grad_zero_mask,
    lora,
    lora_names,
    lr_zero_no_schedule,
    merge_copy_unmerge,
    merged_weight_sync,
    peft_qwen2,
    quiet,
    scenario,
    set_adapter_mid_step,
    warmup_lr_zero,
)

# 8. target_parameters with an entry that matches nothing ---------------------------------------------------


def target_parameters_unmatched(seed: int) -> Scenario:
    """A tiny Qwen2-MoE (transformers 5 fuses each layer's experts into 3-D `gate_up_proj` / `down_proj`)."""
    from peft import get_peft_model
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(seed)
    config = Qwen2MoeConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                            intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=32,
                            num_experts=4, num_experts_per_tok=2, vocab_size=64)
    config._attn_implementation = "eager"
    # "mlp.experts.down_proj.weight": a state-dict style name; the fused parameter has no ".weight"
    targets = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj.weight"]
    with quiet():
        model = get_peft_model(Qwen2MoeForCausalLM(config), lora(target_modules=None, target_parameters=targets))
    model.train()
    batch = batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        return m(**batch).loss

    return scenario("target-parameters-unmatched", model, step, batch, findings=(finding("target-unmatched",
                    "warning"),), healthy=True, first_step_updates=True, targets=tuple(targets))


# 9. a step that runs its own backward ----------------------------------------------------------------------


def step_runs_own_backward(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        loss = m(**batch).loss
        loss.backward()
        return loss

    return scenario("step-runs-own-backward", model, step, batch, runs_backward=True)


# 10. a loss rebuilt from its value, made a leaf that requires grad (backward then runs, silently) -------


def rebuilt_leaf_loss(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        loss = m(**batch).loss
        return torch.tensor(loss.item(), requires_grad=True)  # fault: rebuilt-leaf

    return scenario("rebuilt-leaf-loss", model, step, batch, grad=frozenset(),
                    findings=(finding("detached", source=marked_line(step, "rebuilt-leaf")),),
                    judgement="design.md: `detached` covers a tensor rebuilt from values (here through .item()) and "
                              "comes before loss-no-grad, which it explains and folds in; both name this line")


_BUILDERS: dict[str, Callable[[int], Scenario]] = {
    "set-adapter-mid-step": set_adapter_mid_step,
    "merged-weight-sync": merged_weight_sync,
    "merge-copy-unmerge": merge_copy_unmerge,
    "disable-adapter-forward": disable_adapter_forward,
    "dpo-reference-pass": dpo_reference_pass,
    "disable-layers-never-reenabled": disable_layers_never_reenabled,
    "grad-zero-alpha0": grad_zero_alpha0,
    "grad-zero-dropout1": grad_zero_dropout1,
    "grad-zero-mask": grad_zero_mask,
    "grad-zero-alora-absent": grad_zero_alora_absent,
    "frozen-reference-copy": frozen_reference_copy,
    "warmup-lr-zero": warmup_lr_zero,
    "lr-zero-no-schedule": lr_zero_no_schedule,
    "target-parameters-unmatched": target_parameters_unmatched,
    "step-runs-own-backward": step_runs_own_backward,
    "rebuilt-leaf-loss": rebuilt_leaf_loss,
}
TIMELINE_CASES: tuple[str, ...] = tuple(_BUILDERS)


def timeline_case(name: str, seed: int = 0) -> Scenario:
    """Build the scenario `name` (one of TIMELINE_CASES) afresh."""
    if name not in _BUILDERS:
        raise ValueError(f"{name!r} is not one of: {', '.join(TIMELINE_CASES)}")
    return _BUILDERS[name](seed)


@dataclass(frozen=True)
class TimelineMeasurement:
    """What a real step did: the gradients, and the LoRA `requires_grad` flags the step itself turned off."""

    gradients: GradientMeasurement
    frozen_by_step: frozenset[str]
    loss_requires_grad: bool
    loss_is_leaf: bool

    def with_grad(self) -> frozenset[str]:
        return self.gradients.with_grad()

    def zero(self) -> frozenset[str]:
        return frozenset(n for n, s in self.gradients.states.items() if s is GradientState.ZERO)


def measure_timeline(scenario: Scenario) -> TimelineMeasurement:
    """Run the step and, unless the step runs it, a real backward; read every LoRA `.grad`.

    When the step runs its own optimizer step, the gradients read are those it left (its zero_grad comes
    first). Leaves the model as the step left it; build a fresh scenario for a clean one.
    """
    model = scenario.model
    model.zero_grad(set_to_none=True)
    lora = [(n, p) for n, p in model.named_parameters() if ".lora_" in n]
    trainable = {n for n, p in lora if p.requires_grad}
    loss = scenario.step(model)
    frozen = frozenset(n for n, p in lora if n in trainable and not p.requires_grad)
    if loss.requires_grad and not scenario.knobs.get("runs_backward"):
        loss.backward()
    states = {name: gradient_state(param) for name, param in lora}
    return TimelineMeasurement(GradientMeasurement(float(loss.detach()), states), frozen,
                               loss.requires_grad, loss.grad_fn is None)


def lora_values(model: nn.Module, names: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
    """Copies of the LoRA values (all, or `names`), to tell whether an optimizer step changed them."""
    wanted = lora_names(model) if names is None else names
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in wanted}
