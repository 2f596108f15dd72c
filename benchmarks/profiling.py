"""Where a traced step spends its time beyond the plain step: a cProfile of one call, cut to lora_trace.

Why only lora_trace's own functions: the step itself (the model's forward and backward) is the same with
and without the tracer; what a failing overhead target needs explained is the tracer's share.
"""

from __future__ import annotations

import cProfile
import os
import pstats
from collections.abc import Callable
from typing import Any

import lora_trace

_PACKAGE = os.path.dirname(os.path.abspath(lora_trace.__file__)) + os.sep
_SCENARIOS = os.path.join(_PACKAGE, "scenarios") + os.sep


def profile_call(run: Callable[[], Any], *, top: int = 12) -> dict[str, Any]:
    """Profile `run()` once; the total, and lora_trace's functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        path = os.path.abspath(filename)
        if path.startswith(_PACKAGE) and not path.startswith(_SCENARIOS):
            rows.append({"function": f"lora_trace/{os.path.relpath(path, _PACKAGE)}:{line}({function})",
                         "calls": calls, "own_s": own, "cumulative_s": cumulative})
    return {
        "total_s": stats.total_tt,  # type: ignore[attr-defined]
        "by_cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:top],
        "by_own": sorted(rows, key=lambda r: -r["own_s"])[:top],
    }
