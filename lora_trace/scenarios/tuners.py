"""Every PEFT tuner that adds weights, on one small model: a healthy first step and planted failures.

The truth does not come from lora-trace's discovery: the adapter parameters are those `get_peft_model` added
(the wrapped model's parameters minus the base model's), and which get a gradient is read after a real backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import ExpectedFinding, Scenario, Truth

TUNER_FAULTS = ("none", "detached", "frozen")
_TARGETS = ["fc1", "fc2"]
_WIDTH = 64


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(_WIDTH, _WIDTH)
        self.fc2 = nn.Linear(_WIDTH, _WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TwoBlocks(nn.Module):
    """Embedding, two blocks of two linears, a head. `detach_first` cuts the path after block 0."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, _WIDTH)
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(_WIDTH, 1)
        self.detach_first = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](self.emb(ids))
        if self.detach_first:
            x = x.detach()  # fault: detached
        return self.head(self.blocks[1](x)).pow(2).mean()


def _configs() -> dict[str, Callable[[], Any]]:
    import peft

    t = _TARGETS
    return {
        "LoRA": lambda: peft.LoraConfig(r=4, target_modules=t),
        "AdaLora": lambda: peft.AdaLoraConfig(target_modules=t, total_step=10, init_r=4, target_r=2),
        "LoHa": lambda: peft.LoHaConfig(r=4, target_modules=t),
        "LoKr": lambda: peft.LoKrConfig(r=4, target_modules=t),
        "OFT": lambda: peft.OFTConfig(r=0, oft_block_size=4, target_modules=t),
        "BOFT": lambda: peft.BOFTConfig(boft_block_size=4, target_modules=t),
        "IA3": lambda: peft.IA3Config(target_modules=t, feedforward_modules=["fc2"]),
        "Vera": lambda: peft.VeraConfig(r=4, target_modules=t),
        "FourierFT": lambda: peft.FourierFTConfig(n_frequency=16, target_modules=t),
        "HRA": lambda: peft.HRAConfig(r=4, target_modules=t),
        "VBLoRA": lambda: peft.VBLoRAConfig(r=4, vector_length=16, num_vectors=32, target_modules=t),
        "RandLora": lambda: peft.RandLoraConfig(r=4, target_modules=t),
        "C3A": lambda: peft.C3AConfig(block_size=16, target_modules=t),
        "Miss": lambda: peft.MissConfig(r=4, target_modules=t),
        "Shira": lambda: peft.ShiraConfig(r=4, target_modules=t),
        "Road": lambda: peft.RoadConfig(group_size=16, target_modules=t),
        "WaveFT": lambda: peft.WaveFTConfig(target_modules=t),
        "LNTuning": lambda: peft.LNTuningConfig(target_modules=t),
        "TrainableTokens": lambda: peft.TrainableTokensConfig(target_modules=["emb"], token_indices=[1, 2]),
        "Beft": lambda: peft.BeftConfig(target_modules=t),
        "Deft": lambda: peft.DeftConfig(target_modules=t),
        "Delora": lambda: peft.DeloraConfig(r=4, target_modules=t),
        "Glora": lambda: peft.GloraConfig(r=4, target_modules=t),
        "Gralora": lambda: peft.GraloraConfig(r=4, target_modules=t),
        "Hira": lambda: peft.HiraConfig(r=4, target_modules=t),
        "Lily": lambda: peft.LilyConfig(r=4, target_modules=t),
        "OSF": lambda: peft.OSFConfig(target_modules=t),
        "Peanut": lambda: peft.PeanutConfig(r=4, target_modules=t),
        "Psoft": lambda: peft.PsoftConfig(r=4, target_modules=t),
        "Pvera": lambda: peft.PveraConfig(r=4, target_modules=t),
        "Supertuning": lambda: peft.SupertuningConfig(target_modules=t),
        "TinyLora": lambda: peft.TinyLoraConfig(target_modules=t),
        "UniLora": lambda: peft.UniLoraConfig(target_modules=t),
    }


def tuner_names() -> tuple[str, ...]:
    return tuple(_configs())


def tuner_model(tuner: str, *, fault: str = "none", seed: int = 0) -> Scenario:
    """`TwoBlocks` adapted by `tuner`; `fault` is "none", "detached" (the path cut after block 0, deep mode
    names the line) or "frozen" (every adapter parameter has requires_grad=False)."""
    from peft import get_peft_model

    configs = _configs()
    if tuner not in configs or fault not in TUNER_FAULTS:
        raise ValueError(f"tuner must be one of {', '.join(configs)} and fault one of {', '.join(TUNER_FAULTS)}")
    torch.manual_seed(seed)
    base = TwoBlocks()
    base_params = {id(p) for p in base.parameters()}
    model = get_peft_model(base, configs[tuner]())
    adapter = {name: p for name, p in model.named_parameters() if id(p) not in base_params and p.requires_grad}
    if fault == "frozen":
        for param in adapter.values():
            param.requires_grad_(False)
    model.base_model.model.detach_first = fault == "detached"
    ids = torch.randint(0, 16, (4, 6), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad] or [nn.Parameter(torch.zeros(1))],
                                lr=0.1)
    grad_params = _gradients(model, ids, adapter)
    starves = fault == "frozen" or grad_params != frozenset(adapter)  # a cut may starve nothing (one shared param)
    truth = Truth(frozenset(adapter), grad_params, frozenset({""}), _expected(fault) if starves else ())
    return Scenario(f"{tuner}/{fault}", model, lambda m: m(ids), optimizer, truth, {"tuner": tuner, "fault": fault})


def _gradients(model: nn.Module, ids: torch.Tensor, adapter: dict[str, nn.Parameter]) -> frozenset[str]:
    """The adapter parameters a real backward reaches; `.grad` is cleared again, so the scenario starts clean."""
    model.zero_grad(set_to_none=True)
    loss = model(ids)
    if loss.requires_grad:
        loss.backward()
    reached = frozenset(name for name, p in adapter.items() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return reached


def _expected(fault: str) -> tuple[ExpectedFinding, ...]:
    if fault == "detached":
        return (ExpectedFinding("detached", "error", ("",)),)
    if fault == "frozen":
        return (ExpectedFinding("lora-frozen", "error", ("",)),)
    return ()
