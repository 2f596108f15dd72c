"""Plain-PyTorch ground truth: run a scenario's step and a real backward, then read every LoRA `.grad`.

Independent of the tracer on purpose: the tests use it to check both the scenarios and the diagnoses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from ..core.regions import region_of
from .base import Scenario, lora_layer_of


class GradientState(str, enum.Enum):
    NONE = "none"        # p.grad is None: no gradient reached the parameter
    ZERO = "zero"        # a gradient arrived and is exactly zero (lora_A while lora_B is still zero)
    NONZERO = "nonzero"


@dataclass(frozen=True)
class GradientMeasurement:
    loss: float
    states: dict[str, GradientState]  # LoRA parameter name -> state

    def by_region(self) -> dict[str, dict[GradientState, int]]:
        """Region -> counts of each gradient state, for the report and the demo."""
        table: dict[str, dict[GradientState, int]] = {}
        for name, state in sorted(self.states.items()):
            counts = table.setdefault(region_of(lora_layer_of(name)), dict.fromkeys(GradientState, 0))
            counts[state] += 1
        return table

    def with_grad(self) -> frozenset[str]:
        return frozenset(n for n, s in self.states.items() if s is not GradientState.NONE)


def measure_gradients(scenario: Scenario) -> GradientMeasurement:
    """Run step + backward on the scenario's model and classify each LoRA parameter's gradient.

    Leaves `.grad` set on the model, as a real backward would; build a fresh scenario for a clean one.
    """
    model = scenario.model
    model.zero_grad(set_to_none=True)
    loss = scenario.step(model)
    if loss.requires_grad:
        loss.backward()
    states = {name: gradient_state(param) for name, param in model.named_parameters() if ".lora_" in name}
    return GradientMeasurement(float(loss.detach()), states)


def gradient_state(param: torch.Tensor) -> GradientState:
    """None, exactly zero, or non-zero: what backward left in `param.grad`."""
    if param.grad is None:
        return GradientState.NONE
    return GradientState.ZERO if bool(torch.count_nonzero(param.grad) == 0) else GradientState.NONZERO
