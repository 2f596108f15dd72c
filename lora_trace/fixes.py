"""Fixes the diagnosis proposes, as functions a user can call. Each is checked against the model."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .capture.discovery import lora_modules, unwrap
from .capture.matching import candidate_modules, exact_target_regex

_LINEAR = {"Linear", "Conv1D"}


def enable_lora_gradients(model: nn.Module) -> list[str]:
    """Set requires_grad on the LoRA parameters of each layer's active adapters; returns the names changed.

    The fix for `lora-frozen` (an adapter loaded without is_trainable=True, a blanket requires_grad_(False)
    after get_peft_model, prepare_model_for_kbit_training applied after PEFT).
    """
    changed = []
    for name, layer in lora_modules(unwrap(model)).items():
        for local, param in layer.named_parameters():
            parts = local.split(".")
            if parts[0].startswith("lora_") and len(parts) > 1 and parts[1] in layer.active_adapters:
                if not param.requires_grad:
                    param.requires_grad_(True)
                    changed.append(f"{name}.{local}")
    return changed


def suggest_target_modules(base_model: nn.Module, ran: Iterable[str], *, config: object = None) -> str | None:
    """A target_modules regex that PEFT's matching confirms selects exactly the linear layers in `ran`.

    `base_model` is the model PEFT wraps (`peft_model.get_base_model()`); `ran` holds module names relative
    to it (what a traced step ran through). The model's output embedding (lm_head) is never suggested.
    """
    from peft import LoraConfig

    named = list(base_model.named_modules())
    output = getattr(base_model, "get_output_embeddings", lambda: None)()
    head = {name for name, module in named if output is not None and module is output}
    modules = {n: t for n, t in candidate_modules(named).items() if t in _LINEAR and n not in head}
    wanted = [n for n in ran if n in modules]
    return exact_target_regex(wanted, modules, config if config is not None else LoraConfig(target_modules="x"))
