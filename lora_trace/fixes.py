"""Fixes the diagnosis proposes, as functions a user can call. Each is checked against the model."""

from __future__ import annotations

from torch import nn

from .capture.discovery import lora_modules, unwrap
from .capture.matching import suggest_target_modules


def enable_lora_gradients(model: nn.Module) -> list[str]:
    """Set requires_grad on the adapter parameters of each layer's active adapters; returns the names changed.

    The fix for `lora-frozen` (an adapter loaded without is_trainable=True, a blanket requires_grad_(False)
    after get_peft_model, prepare_model_for_kbit_training applied after PEFT).
    """
    changed = []
    for name, layer in lora_modules(unwrap(model)).items():
        for local, param in layer.named_parameters():
            parts = local.split(".")
            if parts[0] in layer.adapter_layer_names and len(parts) > 1 and parts[1] in layer.active_adapters:
                if not param.requires_grad:
                    param.requires_grad_(True)
                    changed.append(f"{name}.{local}")
    return changed


__all__ = ["enable_lora_gradients", "suggest_target_modules"]
