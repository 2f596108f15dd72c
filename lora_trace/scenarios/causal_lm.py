"""A tiny PEFT causal LM (Qwen2) with the configuration and update faults of real bug reports.

Each fault is one line of set-up code a user really writes; the truth says which findings it must give.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from .base import ExpectedFinding, Scenario, Truth
from .qwen2_audio import quiet_transformers

CAUSAL_FAULTS = (
    "none", "not-in-optimizer", "lr-zero", "nonfinite", "all-ignored", "not-active", "merged", "scaled-zero",
    "merge-and-unload", "loaded-frozen", "glob-target", "eval", "disabled", "scaler-skip",
)
_VOCAB, _HIDDEN, _LAYERS = 64, 32, 2


def _base() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=_HIDDEN, num_hidden_layers=_LAYERS, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=_VOCAB)
    config._attn_implementation = "eager"
    return Qwen2ForCausalLM(config)


def _lora(targets: object = ("q_proj", "v_proj"), lora_alpha: int = 8) -> object:
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=lora_alpha, target_modules=list(targets))


def causal_lm(*, fault: str = "none", seed: int = 0) -> Scenario:
    """A Qwen2ForCausalLM with LoRA on q_proj/v_proj; `step` returns the LM loss on a fixed batch."""
    from peft import PeftModel, get_peft_model

    if fault not in CAUSAL_FAULTS:
        raise ValueError(f"fault={fault!r} is not one of: {', '.join(sorted(CAUSAL_FAULTS))}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, _VOCAB, (2, 12), generator=generator)
    labels = torch.full_like(input_ids, -100) if fault == "all-ignored" else input_ids.clone()
    batch = {"input_ids": input_ids, "labels": labels}
    expected: list[ExpectedFinding] = []
    lr = 0.0 if fault == "lr-zero" else 1e-3
    with quiet_transformers():
        base = _base()
        early_optimizer = torch.optim.AdamW(base.parameters(), lr=lr) if fault == "not-in-optimizer" else None
        targets = ["q_proj", "layers.*.mlp.down_proj"] if fault == "glob-target" else ["q_proj", "v_proj"]
        model = get_peft_model(base, _lora(targets, lora_alpha=0 if fault == "scaled-zero" else 8))
        if fault == "nonfinite":
            with torch.no_grad():  # an exploded weight, as after a too-large step
                model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight[0, 0] = float("inf")
        elif fault == "not-active":
            model.add_adapter("other", _lora())
            model.set_adapter("other")  # trains "other"; "default" is what the optimizer was meant for
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)
        elif fault == "merged":
            model.merge_adapter()
        elif fault == "disabled":
            model.base_model.disable_adapter_layers()
        elif fault == "merge-and-unload":
            model = model.merge_and_unload()
        elif fault == "loaded-frozen":
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                model = PeftModel.from_pretrained(_base(), folder)  # is_trainable defaults to False
    model.train()
    if fault == "eval":
        model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = early_optimizer or torch.optim.AdamW(trainable or list(model.parameters())[:1], lr=lr)

    def step(m: nn.Module) -> torch.Tensor:
        return m(**batch).loss

    expected = _expected(fault)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127) if fault == "scaler-skip" else None  # overflows
    lora_params = frozenset(n for n, _ in model.named_parameters() if ".lora_" in n)
    return Scenario(f"causal_lm[{fault}]", model, step, optimizer,
                    Truth(lora_params, _grad_params(fault, lora_params), frozenset(), tuple(expected)),
                    {"fault": fault, "seed": seed}, batch, scaler)


def _grad_params(fault: str, lora_params: frozenset[str]) -> frozenset[str]:
    if fault in ("merged", "disabled", "loaded-frozen", "merge-and-unload"):
        return frozenset()
    if fault == "not-active":
        return frozenset(n for n in lora_params if ".other." in n)
    return lora_params


def _expected(fault: str) -> list[ExpectedFinding]:
    codes = {
        "not-in-optimizer": [("not-in-optimizer", "error")],
        "lr-zero": [("not-updated", "error")],
        "scaler-skip": [("not-updated", "error")],
        "nonfinite": [("nonfinite-grad", "error")],
        "all-ignored": [("no-supervised-tokens", "error")],
        "not-active": [("adapter-inactive", "error")],
        "merged": [("adapter-inactive", "error")],
        "disabled": [("adapter-inactive", "error")],
        "scaled-zero": [("adapter-inactive", "error")],
        "merge-and-unload": [("adapter-missing", "error")],
        "loaded-frozen": [("lora-frozen", "error")],
        "glob-target": [("target-unmatched", "warning")],
        "eval": [("eval-mode", "warning")],
    }.get(fault, [])
    return [ExpectedFinding(code, severity, ()) for code, severity in codes]
