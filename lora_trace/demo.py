"""`lora-trace demo`: the motivating case from the troubleshooting guide, built for real and diagnosed."""

from __future__ import annotations

import os
from typing import TextIO

from .regions import short_name
from .scenarios import contrastive_qwen2_audio, measure_gradients
from .scenarios.ground_truth import GradientState

BROKEN = dict(targets="seed-list", strategy="audio_tower", fault="no-grad")
FIXED = dict(targets="seed-list", strategy="full_forward", fault="none")


def run_demo(*, fixed: bool, out: str | None, lang: str, stream: TextIO) -> int:
    knobs = FIXED if fixed else BROKEN
    say = lambda text="": print(text, file=stream)  # noqa: E731
    real_size = contrastive_qwen2_audio(size="qwen2-audio-7b", **knobs)
    real_count = sum(1 for n in real_size.truth.lora_params if n.startswith("speech_encoder."))
    scenario = contrastive_qwen2_audio(size="tiny", **knobs)
    say(f"lora-trace demo: {'fixed' if fixed else 'broken'} configuration")
    say(f"  targets={knobs['targets']}  encoding={knobs['strategy']}  fault={knobs['fault']}")
    say(f"  speech encoder LoRA parameters at the real Qwen2-Audio-7B size (meta device): {real_count}")
    say("")
    measured = measure_gradients(scenario)
    say("Ground truth, measured with plain PyTorch (tiny model, one real backward):")
    say(f"  {'region':58s} {'none':>6s} {'zero':>6s} {'nonzero':>8s}")
    for region, counts in measured.by_region().items():
        say(f"  {short_name(region):58s} {counts[GradientState.NONE]:6d} {counts[GradientState.ZERO]:6d}"
            f" {counts[GradientState.NONZERO]:8d}")
    starved = [n for n, s in measured.states.items() if s is GradientState.NONE and n.startswith("speech")]
    say(f"  speech-encoder LoRA parameters without a gradient: {len(starved)}")
    if out:
        os.makedirs(out, exist_ok=True)
    return 0
