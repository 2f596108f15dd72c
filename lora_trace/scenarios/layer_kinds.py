"""Every kind of layer PEFT puts LoRA on: Embedding, Conv1d, Conv2d, MultiheadAttention, Linear, DoRA,
and two adapters active at once. Embedding LoRA uses parameters directly (no sub-module), and
MultiheadAttention LoRA merges its delta into the weights for the forward (lora_A/lora_B never called)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ExpectedFinding, Scenario, Truth, marked_line

KIND_FAULTS = ("none", "direct-weight")


class LayerZoo(nn.Module):
    def __init__(self, *, direct_weight: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.conv1 = nn.Conv1d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 2, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.proj = nn.Linear(8, 4)
        self.head = nn.Linear(4, 1)
        self.direct_weight = direct_weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = self.conv1(h.transpose(1, 2)).transpose(1, 2)
        h = h + self.conv2(h.unsqueeze(1)).mean(1)
        h, _ = self.attn(h, h, h)
        if self.direct_weight:
            h = F.linear(h, self.proj.weight, self.proj.bias)  # fault: direct-weight
        else:
            h = self.proj(h)
        return self.head(h).pow(2).mean()


def layer_kinds(*, dora: bool = False, two_adapters: bool = False, fault: str = "none", seed: int = 0) -> Scenario:
    """LoRA on each layer kind; `dora` adds magnitude vectors; `two_adapters` trains adapters "default" and
    "second" together. MultiheadAttention is left out of both: PEFT has no DoRA for it, and with two active
    adapters its merge goes through `.data`, so out_proj's LoRA gets no gradient (lora-trace reports that as
    `detached` inside PEFT's merge; see tests/scenarios/test_layer_kinds.py)."""
    from peft import LoraConfig, get_peft_model

    if fault not in KIND_FAULTS:
        raise ValueError(f"fault={fault!r} is not one of: {', '.join(KIND_FAULTS)}")
    torch.manual_seed(seed)
    targets = ["embed", "conv1", "conv2", "proj"] + ([] if dora or two_adapters else ["attn"])
    model = get_peft_model(LayerZoo(direct_weight=fault == "direct-weight"),
                           LoraConfig(r=2, lora_alpha=4, target_modules=targets, use_dora=dora))
    if two_adapters:
        model.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=targets, use_dora=dora))
        model.base_model.set_adapter(["default", "second"])
    ids = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(seed))
    lora_params = frozenset(n for n, _ in model.named_parameters() if ".lora_" in n)
    findings: tuple[ExpectedFinding, ...] = ()
    grad_params = lora_params
    if fault == "direct-weight":
        grad_params = frozenset(n for n in lora_params if ".proj." not in n)
        findings = (ExpectedFinding("lora-bypassed", "error", ("base_model.model",),
                                    marked_line(LayerZoo.forward, "direct-weight")),)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return Scenario(f"layer_kinds[dora={dora},two={two_adapters},{fault}]", model, lambda m: m(ids), optimizer,
                    Truth(lora_params, grad_params, frozenset({"base_model.model"}), findings),
                    {"dora": dora, "two_adapters": two_adapters, "fault": fault}, ids)
