"""The layout discovery keeps between traces: used while the model keeps its structure, dropped on any change,
never holding the model alive, and never giving another answer than a discovery from scratch."""

import gc
import weakref

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from torch import nn

from lora_trace.capture.discovery import discover
from lora_trace.capture.layout import forget_layouts, kept_layout, walk
from lora_trace.scenarios import contrastive_qwen2_audio
from lora_trace.scenarios.tuners import tuner_model, tuner_names

from .conftest import TwoLayers


def _lora(**config):
    torch.manual_seed(0)
    return get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"], **config))


def _kept(model):
    return kept_layout(model, walk(model))


def _answer(found):
    """Everything a trace reads from discovery, with modules and parameters by identity."""
    return (found.root, _by_id(found.named), _by_id(found.lora.items()), found.sites, _by_id(found.regions.items()),
            found.param_names, _by_id(found.tuners.items()), found.targets, found.unsupported, found.trainable_base,
            _by_id(found.params), _by_id(found.enclosing), _by_id(found.holders), [id(p) for p in found.every],
            _by_id(found.configured), _by_id(found.adaptable))


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
    found = discover(model)  # the walk reads breadth first; what discovery gives is in the model's own order
    assert _by_id(found.named) == _by_id(model.named_modules())
    assert [id(p) for p in found.every] == [id(p) for p in model.parameters()]


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
    assert (b.requires_grad, site.disabled) == (False, True)  # all-zero: read at the end, where asked


def test_a_state_record_is_reused_only_while_the_layer_reads_the_same():
    model = _lora()
    first = discover(model).sites
    assert discover(model).sites == first and all(a is b for a, b in zip(discover(model).sites, first, strict=True))
    model.base_model.model.decoder.lora_A["default"].weight.requires_grad_(False)
    model.base_model.model.encoder.scaling["default"] = 0.0
    encoder, decoder = discover(model).sites
    assert encoder is not first[0] and encoder.scalings == (("default", 0.0),)
    assert decoder is not first[1] and not next(p for p in decoder.params if p.role == "lora_A").requires_grad


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
    model = get_peft_model(TwoLayers(), IA3Config(target_modules=["encoder", "decoder"], feedforward_modules=[]))
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


class Activated(nn.Module):
    """Net with a ReLU module between its layers: a leaf visited right before the decoder."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.decoder = nn.Linear(8, 8)

    def forward(self, x):
        return self.decoder(self.act(self.encoder(x))).mean()


def _fresh(model):
    forget_layouts()
    return _answer(discover(model))


def test_a_child_moved_under_the_module_walked_before_it_is_named_where_it_is():
    """The same modules in the same walk order, under another parent: the names change."""
    torch.manual_seed(0)
    model = get_peft_model(Activated(), LoraConfig(r=2, target_modules=["encoder", "decoder"]))
    discover(model)
    inner = model.base_model.model
    inner.act.add_module("decoder", inner._modules.pop("decoder"))
    found = discover(model)
    assert "base_model.model.act.decoder" in found.lora
    assert _answer(found) == _fresh(model)


def test_an_alias_pointed_elsewhere_is_named_as_it_is_now():
    torch.manual_seed(0)
    model = get_peft_model(Activated(), LoraConfig(r=2, target_modules=["encoder", "decoder"]))
    inner = model.base_model.model
    inner.add_module("alias", inner.act)  # a second name for a module already listed: not listed again
    discover(model)
    inner._modules["alias"] = inner.decoder
    del inner._modules["decoder"]
    found = discover(model)
    assert "base_model.model.alias" in found.lora
    assert _answer(found) == _fresh(model)


def test_a_parameter_moved_to_the_next_module_is_named_where_it_is():
    model = _lora()
    inner = model.base_model.model
    discover(model)
    bias = inner.encoder.base_layer._parameters.pop("bias")
    inner.decoder.base_layer.register_parameter("extra", bias)
    bias.requires_grad_(True)
    found = discover(model)
    assert found.trainable_base.examples == ("base_model.model.decoder.base_layer.extra",)
    assert _answer(found) == _fresh(model)


def test_the_walk_lists_what_named_modules_lists():
    """Shared children, a child listed twice, None children, a cycle back to the root."""
    torch.manual_seed(0)
    root = nn.Module()
    shared = nn.Linear(2, 2)
    root.a = nn.Sequential(shared, nn.ReLU(), shared)
    root.b = nn.ModuleDict({"x": nn.Linear(2, 2), "y": shared})
    root.register_module("empty", None)
    root.b.add_module("back", root)
    root.c = nn.ModuleList([nn.Identity(), root.a])
    modules = walk(root).modules
    assert sorted(map(id, modules)) == sorted(id(module) for _, module in root.named_modules())


def test_an_adapter_parameter_no_module_registers_is_traced_and_never_kept():
    model = _lora()
    layer = model.base_model.model.encoder
    loose = nn.Parameter(torch.zeros(2, 8))
    object.__setattr__(layer, "lora_loose", {"default": loose})  # a plain dict: nothing registers it
    type(layer).adapter_layer_names = (*type(layer).adapter_layer_names, "lora_loose")
    try:
        found = discover(model)
        assert any(p is loose for _, p in found.params)
        assert _kept(model) is None
    finally:
        type(layer).adapter_layer_names = type(layer).adapter_layer_names[:-1]


def test_configs_are_listed_in_the_models_order_though_the_walk_is_breadth_first():
    torch.manual_seed(0)
    root = nn.Module()
    root.a = nn.Sequential(nn.Sequential(get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder"]))))
    root.b = get_peft_model(TwoLayers(), LoraConfig(r=4, target_modules=["decoder"]))
    order = [name for name, _ in root.named_modules()]
    for _ in range(2):  # fresh, then kept
        names = [name for name, _ in discover(root).configured]
        assert names == sorted(names, key=order.index) and names[0] == "a.0.0" and "b" in names


def test_an_instance_listing_its_own_modules_is_never_kept():
    model = _lora()
    head = model.base_model.model.head

    def named_modules(self, *args, **kwargs):
        head.weight = nn.Parameter(head.weight.detach().clone())  # re-registers, as PEFT's MHA layer does
        return nn.Module.named_modules(self, *args, **kwargs)

    model.named_modules = named_modules.__get__(model)
    for _ in range(2):
        assert any(p is head.weight for p in discover(model).every)
        assert _kept(model) is None
