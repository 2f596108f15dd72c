"""What a scenario is: a real model, one training step, and the truth a correct diagnosis must find."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ExpectedFinding:
    """One finding a correct diagnosis of the scenario reports."""

    code: str
    severity: str
    regions: tuple[str, ...]
    source: tuple[str, int] | None = None  # (absolute file path, line) of the offending line


@dataclass(frozen=True)
class Truth:
    """Ground truth of a scenario, written from what the scenario injected and checked by real backward.

    `lora_params` holds every LoRA parameter (names relative to the model), `grad_params` those that
    get a gradient (`p.grad is not None` after backward), `lora_regions` the regions holding LoRA.
    `findings` are the error and warning findings a correct diagnosis reports, root cause first.
    """

    lora_params: frozenset[str]
    grad_params: frozenset[str]
    lora_regions: frozenset[str]
    findings: tuple[ExpectedFinding, ...]

    @property
    def starved_params(self) -> frozenset[str]:
        return self.lora_params - self.grad_params

    @property
    def error_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings if f.severity == "error")


@dataclass
class Scenario:
    """A model, a step `step(model) -> loss` (no backward), its optimizer, and its truth."""

    name: str
    model: nn.Module
    step: Callable[[nn.Module], torch.Tensor]
    optimizer: torch.optim.Optimizer | None
    truth: Truth
    knobs: dict[str, Any] = field(default_factory=dict)
    batch: Any = None  # what `step` feeds the model, for code that calls the model's parts itself
    scaler: Any = None  # an AMP GradScaler the training loop uses, if any


def lora_layer_of(param: str) -> str:
    """The LoRA layer holding a PEFT LoRA parameter, by PEFT's naming: the oracle stays independent of
    lora-trace's own discovery, so a test can catch it being wrong."""
    return param.split(".lora_")[0]


def marked_line(function: Callable[..., Any], marker: str) -> tuple[str, int]:
    """The (file, line) of the line in `function` that carries `# fault: <marker>`.

    Scenario truth names source lines this way, so editing the model code never leaves a stale number.
    """
    lines, first = inspect.getsourcelines(function)
    tag = f"# fault: {marker}"
    for offset, text in enumerate(lines):
        if text.rstrip().endswith(tag):
            return inspect.getsourcefile(function) or "", first + offset
    raise LookupError(f"no line tagged {tag!r} in {function.__qualname__}")
