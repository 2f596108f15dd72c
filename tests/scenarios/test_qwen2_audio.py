"""Ground truth of every scenario, established with plain PyTorch, independent of the tracer."""

import itertools
import linecache

import pytest
import torch

from lora_trace.core.regions import region_of
from lora_trace.scenarios import FAULTS, STRATEGIES, TARGETS, contrastive_qwen2_audio, measure_gradients
from lora_trace.scenarios.ground_truth import GradientState

ALL = list(itertools.product(TARGETS, STRATEGIES, FAULTS))


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_truth_matches_a_real_backward(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    measured = measure_gradients(scenario)
    assert set(measured.states) == scenario.truth.lora_params
    assert measured.with_grad() == scenario.truth.grad_params
    for name, state in measured.states.items():
        if name not in scenario.truth.grad_params:
            assert state is GradientState.NONE, name
        elif ".lora_B." in name:
            assert state is GradientState.NONZERO, name  # lora_B gets the signal first
        else:
            assert state is GradientState.ZERO, name  # lora_A: zero because lora_B starts at zero


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_truth_names_only_real_regions_and_lines(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    modules = dict(scenario.model.named_modules())
    for finding in scenario.truth.findings:
        assert finding.regions, finding
        assert all(region in modules for region in finding.regions), finding
        if finding.source is not None:
            path, line = finding.source
            text = linecache.getline(path, line)
            assert {"detached": ".detach()", "grad-disabled": "torch.no_grad()"}[finding.code] in text


def test_every_fault_starves_the_speech_lora_it_should():
    healthy = contrastive_qwen2_audio(targets="audio-and-lm", strategy="full_forward").truth
    assert healthy.starved_params == frozenset() and healthy.findings == ()
    for fault in ("no-grad", "detach", "frozen", "disabled"):
        truth = contrastive_qwen2_audio(targets="audio-and-lm", strategy="full_forward", fault=fault).truth
        assert {n for n in truth.starved_params} == {n for n in truth.lora_params if n.startswith("speech")}


def test_the_guides_hypothesis_is_a_bypass_of_the_language_model():
    truth = contrastive_qwen2_audio(targets="language-model-only", strategy="audio_tower").truth
    assert truth.error_codes == ("lora-bypassed",)
    assert [region.rsplit(".", 1)[-1] for region in truth.findings[0].regions] == ["language_model"]


def test_seed_list_also_adapts_the_audio_tower_at_real_size():
    scenario = contrastive_qwen2_audio(size="qwen2-audio-7b")
    speech = [n for n in scenario.truth.lora_params if n.startswith("speech_encoder.")]
    by_region = {}
    for name in speech:
        key = region_of(name.split(".lora_")[0]).rsplit(".", 1)[-1]
        by_region[key] = by_region.get(key, 0) + 1
    assert len(speech) == 640
    assert by_region == {"audio_tower": 192, "language_model": 448}
    assert next(scenario.model.parameters()).device.type == "meta"
    assert scenario.optimizer is None


def test_the_audio_tower_path_runs_on_the_meta_device():
    scenario = contrastive_qwen2_audio(size="qwen2-audio-7b")
    loss = scenario.step(scenario.model)
    assert loss.device.type == "meta" and loss.requires_grad


def test_the_optimizer_holds_every_trainable_parameter():
    scenario = contrastive_qwen2_audio()
    held = {id(p) for group in scenario.optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in scenario.model.parameters() if p.requires_grad}
    assert held == trainable
    assert scenario.model.proj_speech.weight.requires_grad  # heads stay trainable


def test_a_scenario_is_deterministic():
    first = contrastive_qwen2_audio(seed=3)
    second = contrastive_qwen2_audio(seed=3)
    assert torch.equal(first.step(first.model), second.step(second.model))


@pytest.mark.parametrize("knob", ["targets", "strategy", "fault", "size"])
def test_an_unknown_knob_value_says_what_is_allowed(knob):
    with pytest.raises(ValueError, match="is not one of"):
        contrastive_qwen2_audio(**{knob: "nonsense"})
