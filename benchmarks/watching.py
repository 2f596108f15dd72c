"""`lora_trace.watch()` per step, against the same training step unwatched (issue 16: <= 1.02x at 320 LoRA).

The step here is a whole training step: forward, backward, an optimizer step and zero_grad, since watch's
cost sits in the gradient hooks and at the optimizer's step. The monitor's hooks stay on its model between
rounds, so the unwatched step runs on a copy of the model (same weights, same batch) and the two are
interleaved round by round.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from . import measure
from .models import build


def watch_job(model: str, rounds: int = 20, warmup: int = 2) -> dict[str, Any]:
    measure.one_thread()
    bench = build(model)
    import lora_trace

    watched, unwatched = bench.model, copy.deepcopy(bench.model)

    def trainer(m: torch.nn.Module) -> tuple[Any, Any]:
        # A learning rate far too small to change what the step computes, and not 0 (which watch reports).
        optimizer = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-12)

        def step() -> None:
            bench.step(m).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return optimizer, step

    optimizer, watched_step = trainer(watched)
    _, plain_step = trainer(unwatched)
    monitor = lora_trace.watch(watched, optimizer=optimizer)
    with monitor:
        times = measure.interleave({"plain": plain_step, "lora_trace-watch": watched_step}, rounds=rounds,
                                   warmup=warmup, after=lambda name: None)
    summary = measure.ratio_summary(times, "plain")
    return {"model": bench.name, "description": bench.description, "lora_modules": bench.lora_modules,
            "variants": {name: {**stats, "times_s": times[name]} for name, stats in summary.items()},
            "symptoms": [str(s) for s in monitor.symptoms], "traced_in_full": len(monitor.diagnoses)}
