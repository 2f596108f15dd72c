"""The layout discovery keeps between traces: used while the model keeps its structure, dropped on any change,
never holding the model alive, and never giving another answer than a discovery from scratch."""

import gc
import weakref

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from torch import nn

from lora_trace.capture.discovery import discover
from lora_trace.capture.layout import forget_layouts, kept_layout, shape_of, walk
from lora_trace.scenarios import contrastive_qwen2_audio
from lora_trace.scenarios.tuners import tuner_model, tuner_names


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.decoder(torch.relu(self.encoder(x)))).mean()


def _lora(**config):
    torch.manual_seed(0)
    return get_peft_model(Net(), LoraConfig(r=2, target_modules=["encoder", "decoder"], **config))


def _kept(model):
    return kept_layout(model, shape_of(*walk(model)))


def _answer(found):
    """Everything a trace reads from discovery, with modules and parameters by identity."""
    return (found.root, _by_id(found.named), _by_id(found.lora.items()), found.sites, _by_id(found.regions.items()),
            found.param_names, _by_id(found.tuners.items()), found.targets, found.unsupported, found.trainable_base,
            _by_id(found.params))


def _by_id(pairs):
    return [(name, id(value)) for name, value in pairs]


@pytest.mark.parametrize("model", [
    pytest.param(lambda: contrastive_qwen2_audio().model, id="contrastive-qwen2-audio"),
    pytest.param(lambda: contrastive_qwen2_audio(targets="language-model-only", fault="frozen").model, id="lm-frozen"),
    pytest.param(_lora, id="lora"),
    *[pytest.param(lambda t=t: tuner_model(t).model, id=t) for t in tuner_names()],
])
def test_a_kept_layout_gives_the_answer_of_a_fresh_discovery(model):
    model = model()
    forget_layouts()
    fresh = _answer(discover(model))
    assert _kept(model) is not None
    assert _answer(discover(model)) == fresh


def test_state_is_read_at_every_trace_even_with_a_kept_layout():
    model = _lora()
    discover(model)
    layer = model.base_model.model.encoder
    layer.lora_B["default"].weight.requires_grad_(False)
    with torch.no_grad():
        layer.lora_B["default"].weight.fill_(1.0)
    model.base_model.disable_adapter_layers()
    assert _kept(model) is not None
    site = next(s for s in discover(model).sites if s.module.endswith("encoder"))
    b = next(p for p in site.params if p.role == "lora_B")
    assert (b.requires_grad, b.all_zero, site.disabled) == (False, False, True)


def test_a_kept_layout_never_keeps_the_model_alive():
    model = _lora()
    discover(model)
    assert _kept(model) is not None
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_a_replaced_parameter_is_the_one_traced():
    """Sharding (fully_shard) and load_state_dict(assign=True) put new Parameter objects in unchanged modules."""
    model = _lora()
    discover(model)
    holder = model.base_model.model.decoder.lora_A["default"]
    holder.weight = nn.Parameter(torch.ones_like(holder.weight))
    assert _kept(model) is None
    found = discover(model)
    assert any(p is holder.weight for _, p in found.params)


def test_an_adapter_added_inside_parameter_dicts_is_seen():
    """IA3 keeps its vectors in ParameterDicts: a new adapter adds parameters, not modules."""
    torch.manual_seed(0)
    model = get_peft_model(Net(), IA3Config(target_modules=["encoder", "decoder"], feedforward_modules=[]))
    assert {s.adapters for s in discover(model).sites} == {("default",)}
    model.add_adapter("second", IA3Config(target_modules=["encoder", "decoder"], feedforward_modules=[]))
    assert {s.adapters for s in discover(model).sites} == {("default", "second")}


def test_a_child_renamed_in_place_is_named_as_it_is_now():
    model = _lora()
    discover(model)
    inner = model.base_model.model
    head = inner._modules.pop("head")
    inner.add_module("score", head)
    assert [n for n, _ in discover(model).named if n.endswith(("head", "score"))] == ["base_model.model.score"]


def test_a_model_listing_its_own_modules_is_never_kept():
    """PEFT's LoRA MultiheadAttention re-registers its base weights inside named_modules(): that model is
    walked by named_modules() at every trace."""

    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0].mean()

    model = get_peft_model(WithAttention(), LoraConfig(r=2, target_modules=["attn"]))
    discover(model)
    assert _kept(model) is None
