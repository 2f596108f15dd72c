"""Every LoRA layer kind: ground truth by real backward, then the tracer agrees and finds no error."""

import itertools

import pytest

import lora_trace
from lora_trace.capture.discovery import discover
from lora_trace.scenarios import measure_gradients
from lora_trace.scenarios.layer_kinds import KIND_FAULTS, layer_kinds

CASES = list(itertools.product([False, True], [False, True], KIND_FAULTS))


@pytest.mark.parametrize(("dora", "two", "fault"), CASES)
def test_truth_matches_a_real_backward(dora, two, fault):
    scenario = layer_kinds(dora=dora, two_adapters=two, fault=fault)
    assert measure_gradients(scenario).with_grad() == scenario.truth.grad_params


@pytest.mark.parametrize(("dora", "two", "fault"), CASES)
def test_the_diagnosis_matches_the_truth(dora, two, fault):
    scenario = layer_kinds(dora=dora, two_adapters=two, fault=fault)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    assert {a.param for a in diagnosis.trace.arrivals} == scenario.truth.grad_params
    assert diagnosis.codes("error") == scenario.truth.error_codes, diagnosis.report()
    if fault == "direct-weight":
        finding = diagnosis.findings[0]
        assert finding.modules == ("base_model.model.proj",)
        path, line = scenario.truth.findings[0].source
        assert finding.location == lora_trace.capture.locate.format_location(path, line)


def test_every_kind_is_found_with_its_parameters():
    sites = {s.module.rsplit(".", 1)[-1]: s for s in discover(layer_kinds(dora=True).model).sites}
    assert sites["embed"].layer_type == "Embedding"
    assert {p.role for p in sites["embed"].params} == {"lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}
    assert {sites[k].layer_type for k in ("conv1", "conv2", "proj")} == {"Conv1d", "Conv2d", "Linear"}
    attn = lora_trace.capture.discovery.discover(layer_kinds().model).sites
    assert "MultiheadAttention" in {s.layer_type for s in attn}


def test_two_active_adapters_are_both_trained():
    scenario = layer_kinds(two_adapters=True)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step)
    adapters = {p.split(".lora_")[1].split(".")[1] for p in (a.param for a in diagnosis.trace.arrivals)}
    assert adapters == {"default", "second"} and diagnosis.ok


@pytest.mark.filterwarnings("ignore:Already following adapters were merged")
def test_peft_multihead_attention_with_two_active_adapters_loses_gradients_and_we_say_where():
    """Found while building the scenarios: PEFT merges MultiheadAttention LoRA through `.data` when two
    adapters are active, so some of its LoRA parameters get no gradient. The diagnosis points into the merge."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_trace.scenarios.layer_kinds import LayerZoo

    torch.manual_seed(0)
    model = get_peft_model(LayerZoo(), LoraConfig(r=2, target_modules=["attn", "proj"]))
    model.add_adapter("second", LoraConfig(r=2, target_modules=["attn", "proj"]))
    model.base_model.set_adapter(["default", "second"])
    ids = torch.randint(0, 20, (2, 5))
    diagnosis = lora_trace.diagnose(model, lambda m: m(ids))
    model(ids).backward()
    starved = {n for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n and p.grad is None}
    assert starved and all(".attn." in n for n in starved)
    detached = next(f for f in diagnosis.findings if f.code == "detached")
    assert "Tensor.data" in detached.message and "peft" in detached.stack[-1]
