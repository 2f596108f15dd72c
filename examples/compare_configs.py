"""Which configuration trains which region? Sweep the motivating model's target presets and encoding
strategies, diagnose one step of each, and print the matrix. Run: .venv/bin/python examples/compare_configs.py"""

from __future__ import annotations

import itertools

import lora_trace
from lora_trace.scenarios import STRATEGIES, TARGETS, contrastive_qwen2_audio

REGIONS = ("audio_tower", "language_model")


def sweep() -> dict[tuple[str, str], dict[str, tuple[int, int]]]:
    """(targets, strategy) -> region -> (LoRA layers that got a gradient, LoRA layers held)."""
    matrix = {}
    for targets, strategy in itertools.product(TARGETS, STRATEGIES):
        scenario = contrastive_qwen2_audio(targets=targets, strategy=strategy)
        diagnosis = lora_trace.diagnose(scenario.model, scenario.step, label=f"{targets}/{strategy}")
        trained = {module for module, state in diagnosis.lora_states().items() if state == "grad"}
        row = {}
        for region in REGIONS:
            held = [s.module for s in diagnosis.trace.sites if s.region.endswith("." + region)]
            row[region] = (sum(1 for m in held if m in trained), len(held))
        matrix[(targets, strategy)] = row
    return matrix


def format_matrix(matrix: dict[tuple[str, str], dict[str, tuple[int, int]]]) -> str:
    lines = [f"{'target_modules preset':22s} {'encoding':14s} " + " ".join(f"{r:>16s}" for r in REGIONS)]
    for (targets, strategy), row in matrix.items():
        cells = []
        for region in REGIONS:
            trained, held = row[region]
            cells.append(f"{'-' if not held else f'{trained}/{held} trained':>16s}")
        lines.append(f"{targets:22s} {strategy:14s} " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_matrix(sweep()))
