"""Where training already lives: DDP (`integrations.ddp`), the Hugging Face Trainer (`LoraTraceCallback`, TRL's
trainers too), Lightning (`LoraTraceLightningCallback`)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LoraTraceCallback", "LoraTraceLightningCallback", "ddp"]


def __getattr__(name: str) -> Any:
    """Import on first use: the Trainer callback needs transformers, Lightning's lightning, ddp torch.distributed."""
    if name == "LoraTraceCallback":
        from .hf_trainer import LoraTraceCallback

        return LoraTraceCallback
    if name == "LoraTraceLightningCallback":
        from .lightning import LoraTraceLightningCallback

        return LoraTraceLightningCallback
    if name == "ddp":
        return importlib.import_module(f"{__name__}.ddp")
    raise AttributeError(name)
