"""The job that sets a plain step beside tool variants on one model: extra peak memory, then interleaved time.

Order inside one fresh process, and why:
1. build the model, import lora_trace (all of it) and the tools, so no import lands inside a measurement;
2. mode "memory" (a process of its own, started with glibc's mmap threshold fixed at 128 KiB, so freed
   tensor memory goes back to the system at once and the peak RSS tracks live memory instead of heap
   fragmentation, which otherwise drifts by ~10% over plain steps alone): plain steps, then each variant
   in turn; `ru_maxrss` after each. The peak only grows, so a variant's extra peak, (peak after it) -
   (peak after the plain steps), is an upper bound that includes any variant before it in the list. A
   plain step's working set is its peak minus the RSS of the built model before its first step;
3. mode "time" (default malloc, as users run): each variant once (warm-up, and the verdict at
   initialisation), then rounds of plain, variant 1, variant 2, ... interleaved (the order rotating each
   round), gradients zeroed between calls, `warmup` untimed rounds first; then one call of each
   lora_trace variant under cProfile, for explaining a target that fails.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from . import measure, variants
from .models import build
from .profiling import profile_call


def _import_lora_trace() -> None:
    import lora_trace

    for module in pkgutil.walk_packages(lora_trace.__path__, "lora_trace."):
        if module.name.endswith("__main__"):
            continue  # running it would start the command line
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001 - an optional part (a CLI extra); not what is measured
            continue


def compare_job(model: str, names: list[str], *, mode: str = "time", rounds: int = 5, warmup: int = 1,
                memory_steps: int = 2, truth: bool = False, profile: bool = False) -> dict[str, Any]:
    """mode "memory": the extra peak RSS of each variant; mode "time": interleaved timing (and profiles)."""
    measure.one_thread()
    bench = build(model)
    _import_lora_trace()
    result: dict[str, Any] = {"model": bench.name, "description": bench.description,
                              "lora_modules": bench.lora_modules, "variants": {}, "errors": {}}
    plain = variants.make("plain", bench)
    ready: list[variants.Variant] = []
    for name in names:
        variant = variants.make(name, bench)
        try:
            variant.prepare()
        except Exception as exc:  # noqa: BLE001 - a tool that does not install or import is a result
            result["errors"][name] = _error_line(exc)
            continue
        ready.append(variant)
    if truth:
        result["init_truth"] = variants.init_truth(bench)
    if mode == "memory":
        result["memory"] = _memory(bench, plain, ready, memory_steps, result["errors"])
        return result

    working = []
    for variant in ready:  # the first call of each: warm-up, and the verdict at initialisation
        try:
            variant.run()
            variant.cleanup()
        except Exception as exc:  # noqa: BLE001 - a tool that fails on this torch / model is a result
            result["errors"][variant.name] = _error_line(exc)
            bench.model.zero_grad(set_to_none=True)
            continue
        variant.details.clear()
        working.append(variant)
    runs = {"plain": plain.run, **{v.name: v.run for v in working}}
    cleanups = {"plain": plain.cleanup, **{v.name: v.cleanup for v in working}}
    times = measure.interleave(runs, rounds=rounds, warmup=warmup, after=lambda name: cleanups[name]())
    for name, stats in measure.ratio_summary(times, "plain").items():
        variant = next((v for v in working if v.name == name), plain)
        details = {key: measure.median(values[-rounds:]) for key, values in variant.details.items()}
        result["variants"][name] = {"label": variant.label, **stats, "times_s": times[name],
                                    "verdict": variant.verdict(), "details": details}
    if profile:
        result["profiles"] = {v.name: profile_call(lambda v=v: (v.run(), v.cleanup())) for v in working if v.profile}
    return result


def _memory(bench: Any, plain: variants.Variant, ready: list[variants.Variant], steps: int,
            errors: dict[str, str]) -> dict[str, Any]:
    """Peak RSS after plain steps, then after each variant's calls, in order (the peak only grows)."""
    rss_built = measure.current_rss_mb()
    for _ in range(steps):
        plain.run()
        plain.cleanup()
    peak_plain = measure.peak_rss_mb()
    memory: dict[str, Any] = {"rss_before_steps_mb": rss_built, "peak_plain_mb": peak_plain,
                              "plain_working_set_mb": peak_plain - rss_built, "extra_peak_mb": {}, "kept_alive": {}}
    for variant in ready:
        try:
            for _ in range(steps):
                variant.run()
                variant.cleanup()
        except Exception as exc:  # noqa: BLE001 - a tool that fails on this torch / model is a result
            errors[variant.name] = _error_line(exc)
            bench.model.zero_grad(set_to_none=True)
            continue
        memory["extra_peak_mb"][variant.name] = measure.peak_rss_mb() - peak_plain
        if isinstance(variant, variants.LoraTrace):  # no garbage collection ran on purpose: as in a user's loop
            memory["kept_alive"][variant.name] = variant.kept_alive()
    return memory


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
