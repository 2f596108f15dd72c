"""A model changed between two traces is traced as it is now: whatever discovery remembers from one trace to
the next (memos of structure) must never show the model as it was. Each test traces once, changes the
model the way users do between steps, and checks the next trace against the changed model."""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace
from lora_trace.capture.discovery import discover

from .conftest import TwoLayers


def _model(**config):
    torch.manual_seed(0)
    return get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"], **config))


def _trace(model):
    with lora_trace.trace(model) as tracer:
        loss = model(torch.randn(4, 8))
        if loss.requires_grad:  # every adapter frozen or disabled: nothing to backward through
            loss.backward()
    model.zero_grad(set_to_none=True)
    return tracer.diagnosis


def _adapters(diagnosis):
    return {param.name.rsplit(".", 2)[-2] for site in diagnosis.trace.sites for param in site.params}


def _layers(diagnosis):
    return {site.module.rsplit(".", 1)[-1] for site in diagnosis.trace.sites}


def test_an_added_adapter_and_set_adapter_show_in_the_next_trace():
    model = _model()
    assert _trace(model).ok
    model.add_adapter("second", LoraConfig(r=4, target_modules=["encoder"]))
    model.set_adapter("second")
    diagnosis = _trace(model)
    assert _adapters(diagnosis) == {"default", "second"}
    assert {site.active_adapters for site in diagnosis.trace.sites} == {("second",)}
    assert {a.param.split(".")[-2] for a in diagnosis.trace.arrivals} == {"second"}
    assert {row.adapter for row in diagnosis.trace.targets} == {"default", "second"}


def test_a_deleted_adapter_is_gone_from_the_next_trace():
    model = _model()
    model.add_adapter("second", LoraConfig(r=4, target_modules=["encoder"]))
    assert _adapters(_trace(model)) == {"default", "second"}
    model.delete_adapter("second")
    diagnosis = _trace(model)
    assert _adapters(diagnosis) == {"default"}
    assert {row.adapter for row in diagnosis.trace.targets} == {"default"}
    assert diagnosis.ok


def test_freezing_and_unfreezing_between_traces():
    model = _model()
    assert _trace(model).ok
    decoder = model.base_model.model.decoder
    decoder.lora_A.requires_grad_(False)
    decoder.lora_B.requires_grad_(False)
    diagnosis = _trace(model)
    assert "lora-frozen" in diagnosis.codes("error")
    assert {s.module.rsplit(".", 1)[-1] for f in diagnosis.findings if f.code == "lora-frozen" for s in
            diagnosis.trace.sites if s.module in f.modules} == {"decoder"}
    decoder.lora_A.requires_grad_(True)
    decoder.lora_B.requires_grad_(True)
    assert _trace(model).ok


def test_a_replaced_submodule_is_traced_as_it_is_now():
    model = _model()
    assert _layers(_trace(model)) == {"encoder", "decoder"}
    model.base_model.model.decoder = nn.Linear(8, 8)  # a plain layer where the adapter layer was
    diagnosis = _trace(model)
    assert _layers(diagnosis) == {"encoder"}
    assert diagnosis.ok


def test_a_disabled_then_merged_adapter_between_traces():
    model = _model()
    assert _trace(model).ok
    with model.disable_adapter():
        assert "adapter-inactive" in _trace(model).codes("error")
    assert _trace(model).ok
    merged = model.merge_and_unload()
    assert not discover(merged).sites
    assert "adapter-missing" in _trace(merged).codes("error")


def test_a_config_changed_in_place_shows_in_the_target_table():
    model = _model()
    first = _trace(model).trace.targets
    assert {row.entry for row in first} == {"encoder", "decoder"}
    model.peft_config["default"].target_modules = {"encoder", "decoder", "missing_layer"}
    rows = {row.entry: row for row in _trace(model).trace.targets}
    assert set(rows) == {"encoder", "decoder", "missing_layer"}
    assert rows["missing_layer"].matched == ()


def test_a_class_swapped_in_place_is_seen():
    """A module whose class changes (what some quantisation and patching tools do) is no longer an adapter
    layer: discovery reads the types, not remembered names."""
    model = _model()
    assert _layers(_trace(model)) == {"encoder", "decoder"}
    layer = model.base_model.model.decoder
    base = layer.base_layer
    model.base_model.model.decoder = base
    assert _layers(_trace(model)) == {"encoder"}


def test_wrapping_in_ddp_between_traces_keeps_the_names(single_rank_group):
    model = _model()
    before = _trace(model)
    ddp = nn.parallel.DistributedDataParallel(model)
    after = _trace(ddp)
    assert [s.module for s in after.trace.sites] == [s.module for s in before.trace.sites]
    assert after.ok
