"""Errors lora-trace raises. Each also subclasses the builtin a caller would naturally catch."""

from __future__ import annotations


class LoraTraceError(Exception):
    """Base class of every error lora-trace raises on purpose."""


class InvalidModelError(LoraTraceError, TypeError):
    """What was passed is not something lora-trace can trace (not an nn.Module, no LoRA, ...)."""


class TraceStateError(LoraTraceError, RuntimeError):
    """A tracer was used out of order: nested on the same model, read before it ran, re-entered."""


class LossNotFoundError(LoraTraceError, ValueError):
    """The step's result holds no loss tensor that lora-trace can identify."""


class RunFormatError(LoraTraceError, ValueError):
    """A saved run is malformed, foreign, too large, or of an unsupported schema version."""


class GraphvizMissingError(LoraTraceError, RuntimeError):
    """The graphviz `dot` program is needed for this output format and is not installed."""


class BadInputError(LoraTraceError, ValueError):
    """An argument lora-trace cannot use (an unknown language, an image format it cannot write)."""


class AdapterProblemError(LoraTraceError, RuntimeError):
    """A traced training step has an error finding, and the caller asked to stop with an exception
    (`LoraTraceCallback(raise_on_error=True)`). `.diagnosis` holds the verdict."""

    def __init__(self, message: str, diagnosis: object = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
