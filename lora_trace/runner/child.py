"""Inside the script's process: trace its first K optimizer steps (capture/autostep.py), save each step's
run under the folder `lora-trace run` chose (one folder per rank under torchrun), print one line per step
to stderr, and at exit save a step the script crashed in, with the script's own exception."""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

from ..capture.autostep import AutoSteps
from ..integrations.summary import save_artefacts, summary_line

_RUNNING: list[AutoSteps] = []  # the one step finder of this process


def start(spec: str) -> None:
    """Start from the LORA_TRACE_RUN JSON: {"out": folder, "steps": K, "deep": bool}."""
    if _RUNNING:
        return
    options = json.loads(spec)
    finder = AutoSteps(steps=int(options["steps"]), deep=bool(options["deep"]),
                       on_step=lambda step, diagnoses, error: _save(_folder(options["out"]), step, diagnoses, options))
    finder.install()
    _RUNNING.append(finder)
    atexit.register(_at_exit, finder)


def _folder(out: str) -> str:
    """One folder per rank, read when a step is saved: torch.multiprocessing.spawn sets no RANK variable, but
    by then the process group knows the rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return os.path.join(out, f"rank-{dist.get_rank()}")
    if os.environ.get("RANK") is not None and os.environ.get("WORLD_SIZE", "1") != "1":
        return os.path.join(out, f"rank-{os.environ['RANK']}")
    return out


def _save(folder: str, step: int, diagnoses: list[Any], options: dict[str, Any]) -> None:
    for index, diagnosis in enumerate(diagnoses):
        stem = f"step-{step}" if index == 0 else f"step-{step}.model-{index}"
        saved = save_artefacts(diagnosis, folder, stem, render=bool(options.get("render", True)))
        _, line = summary_line(f"step {step}", diagnosis, saved)
        print(line, file=sys.stderr, flush=True)


def _at_exit(finder: AutoSteps) -> None:
    """A step left open: the script raised in it (sys.last_value holds that exception) or ended before it."""
    finder.finish(getattr(sys, "last_value", None))  # None: ended normally (a step with no optimizer step kept
    # only if it ran a backward)
    if finder.foreign:
        print("lora-trace run: WARNING: the optimizer that stepped holds none of the traced model's parameters, "
              "so the update was not checked. If it was built before get_peft_model or for another module, the "
              "adapter is never updated; pass the optimizer to lora_trace.trace(model, optimizer=...) to check "
              "(a master-weight optimizer also looks like this).", file=sys.stderr)
