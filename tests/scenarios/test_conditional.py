"""The model's own conditional paths (sparse MoE routing, layer drop, a batch without audio) on real
transformers models: no error on one step, the right verdict across K steps, each against a real backward."""

import pytest

import lora_trace
from lora_trace.scenarios.conditional import CONDITIONAL_KINDS, STEPS, conditional_model

CASES = [(kind, broken) for kind in CONDITIONAL_KINDS for broken in (False, True)]


@pytest.mark.parametrize(("kind", "broken"), CASES)
def test_one_step_is_no_error_and_the_skip_is_named_with_its_evidence(kind, broken):
    scenario = conditional_model(kind, broken=broken)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    assert diagnosis.ok, diagnosis.report()
    skipped = [f for f in diagnosis.findings if f.code == "skipped-by-model"]
    assert len(skipped) == 1 and skipped[0].severity == "info"
    ran = {a.param for a in diagnosis.trace.arrivals}
    starved = {p for s in diagnosis.trace.sites for p in s.trainable_params} - ran
    held = {p for s in diagnosis.trace.sites if s.module in skipped[0].modules for p in s.trainable_params}
    assert starved == held  # every adapter without a gradient is one the model skipped, and only those
    assert skipped[0].evidence["ran"] and skipped[0].evidence["skipped"]
    report = diagnosis.report()
    assert f"{len(starved)} more belong to layers the model itself skipped" in report and "[FAIL] Step 6" not in report


@pytest.mark.parametrize(("kind", "broken"), CASES)
def test_across_steps_the_broken_twin_is_an_error_and_the_healthy_one_is_not(kind, broken):
    scenario = conditional_model(kind, broken=broken)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer, steps=STEPS)
    assert len(diagnosis.steps) == STEPS
    got = set().union(*({a.param for a in trace.arrivals} for trace in diagnosis.steps))
    assert got == scenario.truth.grad_params
    assert diagnosis.codes("error") == scenario.truth.error_codes, diagnosis.report()
    assert f"Judged across {STEPS} steps" in diagnosis.report()
    if broken:
        finding = diagnosis.root_cause
        starved = scenario.truth.lora_params - scenario.truth.grad_params
        assert {p for s in diagnosis.trace.sites if s.module in finding.modules for p in s.trainable_params} == starved
        reason = {"moe": "routing", "layerdrop": "drop rate of 1.0", "text-only": "that modality"}[kind]
        assert reason in finding.message


def test_the_model_state_is_restored_after_several_steps():
    import torch

    scenario = conditional_model("moe")
    before = {n: p.detach().clone() for n, p in scenario.model.named_parameters()}
    rng = torch.get_rng_state()
    lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer, steps=3)
    assert all(torch.equal(before[n], p) for n, p in scenario.model.named_parameters())
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "2"])
def test_steps_must_be_a_whole_positive_number(steps):
    scenario = conditional_model("moe")
    with pytest.raises(lora_trace.LoraTraceError, match="steps="):
        lora_trace.diagnose(scenario.model, scenario.step, steps=steps)


def test_a_user_calling_a_part_directly_is_still_a_bypass_not_a_skip():
    """The motivating case: the audio tower called directly while LoRA sits in the language model. The model
    around the language model never ran, yet something inside it did: the path went around it."""
    from lora_trace.scenarios import contrastive_qwen2_audio

    scenario = contrastive_qwen2_audio()  # the audio tower called directly, LoRA also in the language model
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    assert "lora-bypassed" in diagnosis.codes("error")
    assert "skipped-by-model" not in diagnosis.codes()
