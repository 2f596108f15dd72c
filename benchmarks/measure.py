"""Clocks and memory gauges shared by the jobs: interleaved timing, medians, peak RSS.

Why interleaved: on a shared 2-core machine the speed drifts over minutes (another process, thermal
state). Running the variants in turn (A B A B ...) and taking the ratio within each round cancels the
drift that a block of A's followed by a block of B's would turn into a false overhead; the median of the
per-round ratios then discards the rounds that a burst of outside load hit on one side only.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleave(variants: dict[str, Callable[[], Any]], *, rounds: int, warmup: int,
               after: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run each variant once per round, `warmup` untimed rounds first; the order rotates by one each round,
    so that no variant always runs first or always right after another (a systematic position effect).

    `after(name)` (e.g. zeroing gradients) runs after every call, outside the clock; so does a garbage
    collection before each call, so that one variant does not pay for the garbage of the previous one.
    Returns the seconds of each timed call, per variant, in round order (so index i of two variants
    belongs to the same round: per-pair ratios are meaningful).
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - start
            if after is not None:
                after(name)
            if index >= warmup:
                times[name].append(elapsed)
    return times


def ratio_summary(times: dict[str, list[float]], base: str) -> dict[str, dict[str, float]]:
    """Median seconds of each variant, the ratio of medians, and the median of per-round ratios to `base`."""
    summary = {}
    for name, values in times.items():
        pairs = [v / b for v, b in zip(values, times[base], strict=True) if b > 0]
        summary[name] = {
            "median_s": median(values),
            "min_s": min(values) if values else float("nan"),
            "ratio_of_medians": median(values) / median(times[base]),
            "median_pair_ratio": median(pairs),
            "n": len(values),
        }
    return summary


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (ru_maxrss: KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """The process's resident set size now, from /proc/self/statm (falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def one_thread() -> None:
    """Torch on one thread: steadier timings, and the other core stays free for the rest of the machine."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # only settable before the first inter-op parallel work; intra-op threads matter here
