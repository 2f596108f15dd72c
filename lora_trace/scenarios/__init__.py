"""Tiny but real models that reproduce each cause of "my LoRA does not learn", with their ground truth."""

from .base import ExpectedFinding, Scenario, Truth
from .ground_truth import GradientState, measure_gradients
from .qwen2_audio import FAULTS, SIZES, STRATEGIES, TARGETS, contrastive_qwen2_audio

__all__ = [
    "FAULTS",
    "SIZES",
    "STRATEGIES",
    "TARGETS",
    "ExpectedFinding",
    "GradientState",
    "Scenario",
    "Truth",
    "contrastive_qwen2_audio",
    "measure_gradients",
]
