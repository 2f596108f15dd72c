"""Gradients delivered by torch.autograd.grad() fill no .grad and fire no post-accumulate hook: they count."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.enc(x)).pow(2).mean()


@pytest.mark.parametrize("deep", [False, True])
def test_autograd_grad_users_get_no_false_off_path(deep):
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["enc"], init_lora_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    with lora_trace.trace(model, deep=deep) as tracer:
        loss = model(torch.randn(2, 4))
        grads = torch.autograd.grad(loss, params)
    assert all(p.grad is None for p in params) and all(g is not None for g in grads)
    assert tracer.diagnosis.ok and tracer.diagnose(loss=loss).ok
    assert len(tracer.trace.arrivals) == 2 and all(a.norm and a.norm > 0 for a in tracer.trace.arrivals)


def test_autograd_grad_on_part_of_the_parameters_still_finds_the_rest_starved():
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["enc"], init_lora_weights=False))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    with lora_trace.trace(model) as tracer:
        torch.autograd.grad(model(torch.randn(2, 4)), lora_b)
    assert [a.param.split(".")[-3] for a in tracer.trace.arrivals] == ["lora_B"]
