"""Checks a peer tool makes that lora-trace makes too: base weights left trainable under the adapter, frozen
parameters handed to the optimizer. Each on a real PEFT model, with the healthy cases that must stay quiet."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.fc2(torch.relu(self.fc1(x)))).pow(2).mean()


def _model(**config):
    torch.manual_seed(0)
    return get_peft_model(_Net(), LoraConfig(r=2, target_modules=["fc1", "fc2"], **config))


def _diagnose(model, optimizer=None):
    x = torch.randn(4, 8)
    return lora_trace.diagnose(model, lambda m: m(x), optimizer=optimizer)


def test_a_blanket_requires_grad_after_peft_is_a_warning_with_counts():
    model = _model()
    model.requires_grad_(True)  # what `for p in model.parameters(): p.requires_grad = True` does
    finding, = [f for f in _diagnose(model).findings if f.code == "base-trainable"]
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert finding.severity == "warning"
    assert finding.evidence == {"params": len(base), "values": sum(p.numel() for p in base)}
    assert "6 parameters of the adapted model (" in finding.message


@pytest.mark.parametrize("config", [{}, {"modules_to_save": ["head"]}, {"bias": "all"}, {"bias": "lora_only"}])
def test_what_peft_trains_on_purpose_is_not_warned(config):
    assert "base-trainable" not in _diagnose(_model(**config)).codes()


def test_a_trainable_head_of_the_users_outside_the_adapted_model_is_not_warned():
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.proj = _model(), nn.Linear(1, 1)

        def forward(self, x):
            return self.proj(self.encoder(x).reshape(1, 1)).sum()

    assert "base-trainable" not in _diagnose(WithHead()).codes()


def test_frozen_parameters_in_the_optimizer_are_info():
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # every parameter, frozen ones too
    diagnosis = _diagnose(model, optimizer)
    finding, = [f for f in diagnosis.findings if f.code == "frozen-in-optimizer"]
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert finding.severity == "info" and finding.evidence == {"frozen": frozen} and diagnosis.ok
    trainable = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    assert "frozen-in-optimizer" not in _diagnose(model, trainable).codes()
