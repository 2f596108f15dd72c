"""Reading saved runs: wall time of `lora-trace show / diff / render / report` on the golden demo runs, each
call a fresh interpreter (what a user waits for), and whether the call imported torch. Torch's own import
time is measured beside them, for scale."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .runner import ROOT

GOLDEN = ROOT / "tests" / "golden"
_PROBE = ("import runpy, sys\nsys.argv = ['lora-trace', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('lora_trace', run_name='__main__')\nexcept SystemExit:\n    pass\n"
          "sys.stderr.write('torch imported: %s\\n' % ('torch' in sys.modules))\n")


def _verbs(folder: str) -> dict[str, list[str]]:
    broken, fixed = str(GOLDEN / "demo-broken.run.json"), str(GOLDEN / "demo-fixed.run.json")
    return {
        "show": ["show", broken],
        "diff": ["diff", broken, fixed],
        "render (.svg)": ["render", broken, "-o", os.path.join(folder, "graph.svg")],
        "report (.html)": ["report", broken, "-o", os.path.join(folder, "report.html")],
    }


def _time(command: list[str], repeats: int) -> tuple[list[float], str]:
    times, last = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        last = done.stderr
    return times, last


def measure_cli(repeats: int = 7) -> dict[str, Any]:
    results: dict[str, Any] = {"repeats": repeats, "verbs": {}}
    with tempfile.TemporaryDirectory(prefix="lora-trace-cli-") as folder:
        for name, argv in _verbs(folder).items():
            times, stderr = _time([sys.executable, "-c", _PROBE, *argv], repeats)
            results["verbs"][name] = {"median_s": statistics.median(times), "min_s": min(times),
                                      "torch_imported": "torch imported: True" in stderr}
    times, _ = _time([sys.executable, "-c", "import torch"], repeats)
    results["import_torch_s"] = statistics.median(times)
    times, _ = _time([sys.executable, "-c", "pass"], repeats)
    results["python_s"] = statistics.median(times)
    return results
