"""The deep mode's cost per torch call: the same loop of small ops bare, under an empty TorchFunctionMode,
and under lora-trace's `PathWatch`, interleaved in one process (ratios; these machines are noisy).

Run: .venv/bin/python -m benchmarks.mode_calls
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from lora_trace.capture.watch import PathWatch

CALLS = 3000  # torch calls per timed loop: 3 ops per iteration


class Empty(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        return func(*args, **(kwargs or {}))


def _loop(x: torch.Tensor, w: torch.Tensor) -> None:
    for _ in range(CALLS // 3):
        y = x * w  # a tensor that requires grad: the mode checks its result for a graph end
        y = y + 1.0
        y.sum()


def _watch() -> PathWatch:
    return PathWatch(base_weights={}, inside_wrapper=lambda name: False, on_loss=lambda tensor, source: None,
                     in_checkpoint_forward=lambda: False)


def measure(rounds: int = 15) -> dict[str, Any]:
    torch.set_num_threads(1)
    x, w = torch.randn(4, 4), torch.randn(4, 4, requires_grad=True)
    modes = {"bare": None, "empty mode": Empty, "PathWatch": _watch}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds + 2):  # two untimed warm-up rounds
        for name, make in modes.items():
            start = time.perf_counter()
            if make is None:
                _loop(x, w)
            else:
                with make():
                    _loop(x, w)
            times[name].append(time.perf_counter() - start)
    bare = statistics.median(times["bare"][2:])
    per_call = {name: (statistics.median(t[2:]) - bare) / CALLS * 1e6 for name, t in times.items()}
    return {"calls": CALLS, "bare_us_per_call": bare / CALLS * 1e6, "added_us_per_call": per_call}


def main() -> int:
    result = measure()
    print(f"bare: {result['bare_us_per_call']:.2f} us per call")
    for name, added in result["added_us_per_call"].items():
        print(f"{name:>12}: +{added:.2f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
