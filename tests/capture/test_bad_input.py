"""The bad-input matrix: every odd thing real training code hands the tool gets a clear error or a correct
result, and no state changes."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

import lora_trace
from lora_trace.scenarios.causal_lm import causal_lm

from ..helpers import hook_snapshot


class Shared(nn.Module):
    """One LoRA layer called twice per step (shared weights), the second time with keyword arguments."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.proj(x=torch.relu(self.proj(x)))).pow(2).mean()


def _shared():
    torch.manual_seed(0)
    return get_peft_model(Shared(), LoraConfig(r=2, target_modules=["proj"]))


def test_a_model_without_lora_is_adapter_missing_and_unchanged():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    before = hook_snapshot(model)
    diagnosis = lora_trace.diagnose(model, lambda m: m(torch.randn(2, 4)).sum())
    assert diagnosis.codes("error") == ("adapter-missing",)
    assert hook_snapshot(model) == before and all(p.grad is None for p in model.parameters())


def test_shared_weights_and_keyword_only_calls_are_counted_not_doubled():
    model = _shared()
    x = torch.randn(2, 4)
    with lora_trace.trace(model) as tracer:
        model(x).backward()
    calls = [c for c in tracer.trace.calls if c.module.endswith("proj") and "head" not in c.module]
    assert len(calls) == 2 and calls[1].inputs[0].shape == (2, 4)  # the keyword call's input is seen
    assert {a.count for a in tracer.trace.arrivals} == {1}  # one accumulation per parameter per backward
    assert tracer.diagnosis.ok


def test_a_model_output_with_a_loss_is_found():
    model = _shared()
    diagnosis = lora_trace.diagnose(model, lambda m: CausalLMOutput(loss=m(torch.randn(2, 4))))
    assert diagnosis.ok and diagnosis.trace.losses[0].has_grad_fn


def test_a_non_scalar_loss_is_reduced_for_the_dry_run_and_accepted_by_backward():
    model = _shared()
    inner = model.base_model.model
    diagnosis = lora_trace.diagnose(model, lambda m: inner.head(inner.proj(torch.randn(3, 4))))  # shape (3, 1)
    assert diagnosis.ok and {a.count for a in diagnosis.trace.arrivals} == {1}


def test_a_non_tensor_result_says_how_to_return_the_loss():
    with pytest.raises(lora_trace.LossNotFoundError, match="make step\\(model\\) return the loss"):
        lora_trace.diagnose(_shared(), lambda m: 3.0)


def test_bf16_model():
    model = _shared().to(torch.bfloat16)
    diagnosis = lora_trace.diagnose(model, lambda m: m(torch.randn(2, 4, dtype=torch.bfloat16)))
    assert diagnosis.ok
    assert {c.inputs[0].dtype for c in diagnosis.trace.calls} == {"bfloat16"}
    assert all(a.norm is not None and a.finite for a in diagnosis.trace.arrivals)


@pytest.mark.parametrize("reentrant", [True, False])
def test_healthy_activation_checkpointing_is_not_an_error(reentrant):
    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(4, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            hidden = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=reentrant)
            return self.head(hidden).pow(2).mean()

    torch.manual_seed(0)
    model = get_peft_model(Checkpointed(), LoraConfig(r=2, target_modules=["block"]))
    x = torch.randn(2, 4, requires_grad=True)  # inputs that require grad: the healthy reentrant case
    diagnosis = lora_trace.diagnose(model, lambda m: m(x))
    assert diagnosis.ok, diagnosis.report()
    phases = [c.phase.value for c in diagnosis.trace.calls]
    assert phases == ["forward", "recompute"]  # the re-run in backward is tagged, not counted twice


def test_an_optimizer_holding_no_lora_parameter():
    scenario = causal_lm(fault="not-in-optimizer")
    state = {k: v for k, v in scenario.optimizer.state_dict().items()}
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    assert diagnosis.codes("error") == ("not-in-optimizer",)
    assert "get_peft_model" in diagnosis.findings[0].fix
    assert scenario.optimizer.state_dict()["param_groups"] == state["param_groups"]


def test_a_step_that_raises_inside_a_deep_trace_passes_through_unchanged():
    model = _shared()
    before = hook_snapshot(model)
    error = ValueError("user bug")
    with pytest.raises(ValueError) as caught:
        with lora_trace.trace(model, deep=True):
            model(torch.randn(2, 4))
            raise error
    assert caught.value is error
    assert hook_snapshot(model) == before
    assert torch.overrides._get_current_function_mode_stack() == []


def test_an_optimizer_that_is_not_one_gets_a_plain_error():
    model = _shared()
    with pytest.raises(lora_trace.LoraTraceError, match="optimizer= takes the torch.optim.Optimizer"):
        lora_trace.trace(model, optimizer="adamw")


def test_deepspeed_zero3_partitioned_adapters_are_refused_with_what_works_instead(caplog):
    """ZeRO-3 marks every partitioned parameter with `ds_id` (deepspeed's own is_zero_param test); .grad stays
    None there, so tracing would call every adapter starved. DeepSpeed itself is not installed here: the
    marker is set by hand, as its partitioning would."""
    from lora_trace.integrations.steps import TracedSteps

    model = causal_lm().model
    before = hook_snapshot(model)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.ds_id = 0
    with pytest.raises(lora_trace.InvalidModelError, match="ZeRO-3.*stage 0-2 or without DeepSpeed"):
        with lora_trace.trace(model):
            pass
    assert hook_snapshot(model) == before
    steps = TracedSteps(every_n_steps=1, stop_on_error=False, raise_on_error=False, deep=False, render=False)
    with caplog.at_level("ERROR", logger="lora_trace"):
        steps.start(model, optimizer=None, step=0, folder="", writes=False)  # a callback: said once, no raise
    assert not steps.open and not steps.due(1) and "not tracing this run" in caplog.text
