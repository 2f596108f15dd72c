"""diagnose() puts every parameter and buffer back bit for bit, whatever the step does to them."""

import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.enc(x)
        h, _ = self.attn(h[:, None], h[:, None], h[:, None])
        return self.head(self.norm(h[:, 0])).pow(2).mean()


def _model():
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["enc", "attn"], init_lora_weights=False))
    return model.train()


def _state(model):
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {name: (t.detach().clone(), t.dtype) for name, t in tensors}


def _objects(model):
    """Parameter objects by name. PEFT's MultiheadAttention LoRA itself puts fresh Parameter objects in place
    whenever the module tree is walked (even by `modules()`), so its base parameters are left out."""
    return {name: id(t) for name, t in model.named_parameters() if ".attn.base_layer." not in name
            or "lora_" in name}


STEPS = {
    "merge-unmerge": lambda m, x: (m.merge_adapter(), m.unmerge_adapter(), m(x))[-1],
    "merge-never-unmerged": lambda m, x: (m.merge_adapter(), m(x))[-1],
    "data-write": lambda m, x: (m.base_model.model.head.weight.data.mul_(3.0), m(x))[-1],
    "set-adapter-and-disable": lambda m, x: (m.base_model.disable_adapter_layers(), m(x))[-1],
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_tensor_and_the_adapter_state_come_back_exactly(step):
    model = _model()
    x = torch.randn(3, 4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before, objects, flags = _state(model), _objects(model), {n: p.requires_grad for n, p in model.named_parameters()}
    layer = model.base_model.model.enc
    peft_before = (layer.active_adapters, layer.merged, layer.disable_adapters)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="lora-trace")
        lora_trace.diagnose(model, lambda m: STEPS[step](m, x), optimizer=optimizer)
    after = _state(model)
    changed = [n for n in before if not (torch.equal(before[n][0], after[n][0]) and before[n][1] == after[n][1])]
    assert changed == []
    assert _objects(model) == objects  # the optimizer's Parameter objects are the model's again
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert (layer.active_adapters, layer.merged, layer.disable_adapters) == peft_before


def test_a_cast_inside_the_step_comes_back_exactly():
    """Module.to() assigns .data where no torch function sees it; the conversion before it is seen, and the
    tensor is kept then: bf16 and back, the weights are bit-identical afterwards."""
    model = _model()
    x = torch.randn(3, 4)
    before = _state(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="lora-trace")
        lora_trace.diagnose(model, lambda m: (m.to(torch.bfloat16), m.to(torch.float32), m(x))[-1])
    after = _state(model)
    assert [n for n in before if not (torch.equal(before[n][0], after[n][0]) and before[n][1] == after[n][1])] == []


def test_a_deleted_submodule_is_said_not_hidden():
    model = _model()

    def step(m):
        loss = m(torch.randn(3, 4))
        del m.base_model.model.norm
        m.base_model.model.norm = nn.Identity()
        return loss

    with pytest.warns(UserWarning, match="1 submodule"):
        lora_trace.diagnose(model, step)
