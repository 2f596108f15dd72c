"""Where training already lives: DDP (`integrations.ddp`), the Hugging Face Trainer (`LoraTraceCallback`)."""

from __future__ import annotations

from typing import Any

__all__ = ["LoraTraceCallback"]


def __getattr__(name: str) -> Any:
    if name == "LoraTraceCallback":  # imports transformers only when asked for
        from .hf_trainer import LoraTraceCallback

        return LoraTraceCallback
    raise AttributeError(name)
