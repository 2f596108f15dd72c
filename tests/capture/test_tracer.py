"""The tracer on every scenario: right codes, regions and lines; an oracle against real backward."""

import itertools

import pytest
import torch

import lora_trace
from lora_trace.core.regions import region_of
from lora_trace.scenarios import FAULTS, STRATEGIES, TARGETS, contrastive_qwen2_audio

from ..helpers import traced_step

ALL = list(itertools.product(TARGETS, STRATEGIES, FAULTS))


def _relative(source):
    path, line = source
    return lora_trace.capture.locate.format_location(path, line)


def _assert_matches_truth(diagnosis, truth):
    got = [f for f in diagnosis.findings if f.severity != "info"]
    assert [f.code for f in got] == [e.code for e in truth.findings], diagnosis.report()
    for finding, expected in zip(got, truth.findings, strict=True):
        assert finding.severity == expected.severity
        assert set(finding.regions) == set(expected.regions), finding
        if expected.source is not None:
            assert finding.location == _relative(expected.source)


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_deep_trace_names_the_injected_cause(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    _assert_matches_truth(traced_step(scenario, deep=True).diagnosis, scenario.truth)


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_dry_run_diagnose_names_the_injected_cause(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    _assert_matches_truth(diagnosis, scenario.truth)
    assert diagnosis.ok == (scenario.truth.error_codes == ())


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_oracle_arrivals_equal_real_gradients(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    tracer = traced_step(scenario)
    with_grad = {n for n, p in scenario.model.named_parameters() if ".lora_" in n and p.grad is not None}
    assert {a.param for a in tracer.trace.arrivals} == with_grad == scenario.truth.grad_params


@pytest.mark.parametrize(("targets", "strategy", "fault"), ALL)
def test_default_mode_agrees_except_that_it_cannot_name_the_detaching_line(targets, strategy, fault):
    scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy, fault=fault)
    diagnosis = traced_step(scenario).diagnosis
    expected = [e.code for e in scenario.truth.findings]
    if "detached" in expected:
        expected[expected.index("detached")] = "lora-off-path"  # the honest answer without deep evidence
        assert "deep=True" in diagnosis.findings[0].message + "".join(
            f.message for f in diagnosis.findings if f.code == "lora-off-path")
    assert sorted(f.code for f in diagnosis.findings if f.severity != "info") == sorted(expected)


def test_the_demo_case_reports_no_grad_at_the_with_line_and_the_bypassed_language_model():
    scenario = contrastive_qwen2_audio(targets="seed-list", strategy="audio_tower", fault="no-grad")
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    root, bypass = diagnosis.findings[0], diagnosis.findings[1]
    assert root.code == "grad-disabled"
    path, line = root.location.rsplit(":", 1)
    with open(path, encoding="utf-8") as handle:
        assert "with torch.no_grad():" in handle.read().splitlines()[int(line) - 1]
    assert all(region_of(m).endswith("audio_tower") for m in root.modules)
    assert bypass.code == "lora-bypassed" and bypass.regions[0].endswith("language_model")
    assert root.stack and root.stack[-1].startswith(root.location.split(":")[0])


def test_the_guides_hypothesis_names_the_traversed_and_the_holding_region():
    scenario = contrastive_qwen2_audio(targets="language-model-only", strategy="audio_tower")
    finding = lora_trace.diagnose(scenario.model, scenario.step).findings[0]
    assert finding.code == "lora-bypassed"
    assert any(r.endswith(".audio_tower") for r in finding.evidence["regions_traversed"])
    assert [r.rsplit(".", 1)[-1] for r in finding.evidence["regions_holding"]] == ["language_model"]
    assert "audio_tower" in finding.message and "language_model" in finding.message


def test_healthy_zero_init_lora_is_information_not_an_error():
    scenario = contrastive_qwen2_audio(targets="audio-and-lm", strategy="full_forward")
    diagnosis = traced_step(scenario).diagnosis
    assert diagnosis.ok
    assert diagnosis.codes() == ("zero-grad-at-init",)


def test_gradient_accumulation_counts_every_backward():
    scenario = contrastive_qwen2_audio(targets="audio-only")
    with lora_trace.trace(scenario.model) as tracer:
        for _ in range(3):
            scenario.step(scenario.model).backward()
    counts = {a.count for a in tracer.trace.arrivals}
    assert counts == {3}
    assert tracer.diagnosis.ok


def test_the_loss_can_be_given_explicitly_without_backward():
    scenario = contrastive_qwen2_audio(targets="seed-list", strategy="full_forward", fault="detach")
    with lora_trace.trace(scenario.model) as tracer:
        loss = scenario.step(scenario.model) * 1.0  # not the model's own output
    diagnosis = tracer.diagnose(loss=loss)
    assert diagnosis.trace.losses[0].source == "explicit"
    assert diagnosis.codes("error") == ("lora-off-path",)
    assert not tracer.trace.backward


def test_autograd_grad_users_are_seen_in_deep_mode():
    scenario = contrastive_qwen2_audio(targets="audio-only", fault="detach")
    params = [p for p in scenario.model.parameters() if p.requires_grad]
    with lora_trace.trace(scenario.model, deep=True) as tracer:
        torch.autograd.grad(scenario.step(scenario.model), params, allow_unused=True)
    assert tracer.trace.losses[0].source == "autograd.grad"
    assert tracer.diagnosis.findings[0].code == "detached"


def test_no_grad_that_starves_nothing_is_not_an_error():
    scenario = contrastive_qwen2_audio(targets="audio-only")
    model = scenario.model
    with lora_trace.trace(model, deep=True) as tracer:
        with torch.no_grad():  # a frozen reference pass, as in distillation: harmless
            model.speech_encoder.predict(_batch_of(scenario))
        model(_batch_of(scenario)).backward()
    assert tracer.diagnosis.ok, tracer.diagnosis.report()


def _batch_of(scenario):
    return scenario.step.__closure__[0].cell_contents
