"""Jobs for scale: the real-dimension Qwen2-Audio-7B on the meta device, and cost against the LoRA count.

Why the meta device: 8 B parameters do not fit a 24 GiB CPU machine; on meta they take no memory, the
audio-tower path still runs (the full forward calls `.item()` and cannot), and the diagnosis of which
LoRA a gradient reaches is exact. What is measured is lora_trace's own cost at real module counts.

Why the narrow family for the LoRA count: `narrow(N)` has exactly 10 * N LoRA modules with every one on
the step's path, so 20, 320 and 1280 modules differ only in depth. The dry run's cost minus a plain
step's, divided by the number of LoRA modules, must stay flat if the cost grows linearly.
"""

from __future__ import annotations

import time
from typing import Any

from . import measure
from .compare import _import_lora_trace
from .models import narrow
from .profiling import profile_call


def meta7b_job(*, repeats: int = 2) -> dict[str, Any]:
    """Build and diagnose `contrastive_qwen2_audio(size="qwen2-audio-7b")` (meta, strategy audio_tower)."""
    measure.one_thread()
    import lora_trace
    from lora_trace.scenarios import contrastive_qwen2_audio

    _import_lora_trace()
    rss_imported = measure.peak_rss_mb()
    start = time.perf_counter()
    scenario = contrastive_qwen2_audio(size="qwen2-audio-7b")
    build_s = time.perf_counter() - start
    rss_built = measure.peak_rss_mb()
    seconds = []
    diagnosis = None
    for _ in range(repeats):
        start = time.perf_counter()
        diagnosis = lora_trace.diagnose(scenario.model, scenario.step)
        seconds.append(time.perf_counter() - start)
    assert diagnosis is not None
    parameters = sum(p.numel() for p in scenario.model.parameters())
    lora_params = sum(1 for n, _ in scenario.model.named_parameters() if ".lora_" in n)
    expected = sorted(scenario.truth.error_codes)
    return {
        "parameters": parameters,
        "lora_params": lora_params,
        "lora_modules": sum(1 for site in diagnosis.trace.sites),
        "build_s": build_s,
        "diagnose_s": seconds,
        "peak_rss_mb": measure.peak_rss_mb(),
        "rss_after_imports_mb": rss_imported,
        "rss_after_build_mb": rss_built,
        "findings": [{"code": f.code, "severity": f.severity, "modules": len(f.modules), "location": f.location}
                     for f in diagnosis.findings],
        "matches_truth": sorted(diagnosis.codes("error")) == expected,
        "notes": [_note(note) for note in diagnosis.trace.notes],
    }


def _note(note: str) -> str:
    """A trace note in English: notes are message keys where the package has a message catalogue."""
    try:
        from lora_trace.core.messages import MESSAGES
    except ImportError:
        return note
    entry = MESSAGES.get(note)
    return entry["en"] if isinstance(entry, dict) and "en" in entry else note


def lora_count_job(layers: int, *, rounds: int, profile: bool = False) -> dict[str, Any]:
    """Plain step and `lora_trace.diagnose()` interleaved on `narrow(layers)`: 10 * layers LoRA modules."""
    measure.one_thread()
    import lora_trace

    bench = narrow(layers)
    _import_lora_trace()

    def plain() -> None:
        bench.step(bench.model).backward()

    def dry_run() -> None:
        lora_trace.diagnose(bench.model, bench.step)

    def zero(name: str = "") -> None:
        bench.model.zero_grad(set_to_none=True)

    times = measure.interleave({"plain": plain, "diagnose": dry_run}, rounds=rounds, warmup=1, after=zero)
    summary = measure.ratio_summary(times, "plain")
    plain_s, diagnose_s = summary["plain"]["median_s"], summary["diagnose"]["median_s"]
    n = bench.lora_modules
    result = {
        "model": bench.name,
        "description": bench.description,
        "lora_modules": n,
        "modules": sum(1 for _ in bench.model.modules()),
        "plain_s": plain_s,
        "diagnose_s": diagnose_s,
        "ratio": summary["diagnose"]["median_pair_ratio"],
        "diagnose_per_lora_ms": 1000 * diagnose_s / n,
        "added_per_lora_ms": 1000 * (diagnose_s - plain_s) / n,
        "times_s": times,
    }
    if profile:  # where a dry run at this size spends its time, for explaining non-linear growth
        result["profile"] = profile_call(lambda: (dry_run(), zero()))
    return result
