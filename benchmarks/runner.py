"""Start a job in a fresh interpreter (worker.py), wait for it, and return its JSON result.

Torch is held to one thread in the worker (measure.one_thread) and by the OpenMP/MKL variables here, so
the OpenMP pool is never sized for the whole machine in the first place.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]


# glibc: allocations from 128 KiB up are mmap()ed and unmapped when freed, and the heap is trimmed: the
# peak RSS then follows live memory, not fragmentation. Only for memory jobs; it slows allocation a little.
EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def run_job(job: str, *args: Any, timeout_s: float = 600, env: dict[str, str] | None = None,
            **kwargs: Any) -> dict[str, Any]:
    """Run `job(*args, **kwargs)` in a worker process with `env` added; its result, or {"error": ...}."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **(env or {}))
    with tempfile.TemporaryDirectory(prefix="lora-trace-bench-") as folder:
        out = pathlib.Path(folder) / "result.json"
        command = [sys.executable, "-m", "benchmarks.worker", job, str(out),
                   json.dumps({"args": list(args), "kwargs": kwargs})]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"TimeoutExpired: the job ran past {timeout_s:.0f} s", "wall_s": timeout_s}
        wall = time.perf_counter() - start
        if out.exists():
            result = json.loads(out.read_text(encoding="utf-8"))
        else:
            tail = (done.stderr or done.stdout).strip().splitlines()
            result = {"error": f"the worker exited with {done.returncode}: {tail[-1] if tail else 'no output'}"}
    result["wall_s"] = wall
    return result
