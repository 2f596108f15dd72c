"""`lora-trace demo`: the troubleshooting guide's case, built for real and diagnosed.

The broken configuration is the guide's: its target_modules list, audio encoded through audio_tower
only, and `torch.no_grad()` inside the speech encoder's predict(). The fixed one encodes through the
whole model without no_grad. The tiny model runs on the CPU with real gradients; the real
Qwen2-Audio-7B dimensions are built on the meta device (path and counts, no values).
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from .capture.dry_run import diagnose
from .scenarios import contrastive_qwen2_audio, measure_gradients
from .scenarios.contrastive_model import AUDIO_TOWER

BROKEN = dict(targets="seed-list", strategy="audio_tower", fault="no-grad")
FIXED = dict(targets="seed-list", strategy="full_forward", fault="none")


def run_demo(*, fixed: bool, out: str | None, stream: TextIO, lang: str = "en", color: bool = False) -> int:
    knobs = FIXED if fixed else BROKEN
    label = "fixed" if fixed else "broken"

    def say(text: str = "") -> None:
        print(text, file=stream)

    say(f"lora-trace demo ({label}): contrastive Qwen2-Audio, target_modules = the guide's list, "
        f"encoding = {knobs['strategy']}, fault = {knobs['fault']}")
    say("")
    scenario = contrastive_qwen2_audio(size="tiny", **knobs)
    diagnosis = diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer, label=label)
    say(diagnosis.report(lang=lang, color=color))

    say("")
    say("Cross-check with plain PyTorch (one real backward, no tracer):")
    measured = measure_gradients(contrastive_qwen2_audio(size="tiny", **knobs))
    speech = {n: s for n, s in measured.states.items() if n.startswith("speech_encoder.")}
    starved = sum(1 for s in speech.values() if s.value == "none")
    agree = {n for n, s in measured.states.items() if s.value != "none"} == {a.param for a in diagnosis.trace.arrivals}
    say(f"  speech-encoder LoRA parameters without a gradient: {starved} of {len(speech)}; "
        f"tracer {'agrees' if agree else 'DISAGREES'} on every parameter")

    real = contrastive_qwen2_audio(size="qwen2-audio-7b", **knobs)
    real_speech = [n for n in real.truth.lora_params if n.startswith("speech_encoder.")]
    say("")
    say(f"At the real Qwen2-Audio-7B dimensions (meta device): {len(real_speech)} speech-encoder LoRA parameters.")
    if knobs["strategy"] == AUDIO_TOWER:
        real_diagnosis = diagnose(real.model, real.step, label=f"{label}-7b-meta")
        for finding in real_diagnosis.findings:
            if finding.severity == "error":
                say(f"  {finding.code}: {finding.evidence.get('starved_params', '?')} parameters "
                    f"in {', '.join(r.rsplit('.', 1)[-1] for r in finding.regions)}")
    else:
        say("  (the full forward calls .item() and cannot run on meta; the tiny run above checks the path)")

    if out:
        _write_artefacts(diagnosis, out, lang, say)
    return 0


def _write_artefacts(diagnosis: Any, out: str, lang: str, say: Any) -> None:
    """run.json, graph.svg (graph.dot without graphviz) and report.html."""
    from .core.errors import GraphvizMissingError
    from .present.html import write_html

    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "run.json")]
    diagnosis.save(written[0])
    try:
        written.append(diagnosis.render(os.path.join(out, "graph.svg")))
    except GraphvizMissingError as error:
        say(f"lora-trace: {error}")
        written.append(os.path.join(out, "graph.dot"))
    written.append(write_html(diagnosis, os.path.join(out, "report.html"), lang=lang))
    say("")
    say("Wrote " + ", ".join(written))
