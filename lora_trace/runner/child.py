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
    rank = os.environ.get("RANK")
    folder = options["out"] if rank is None or os.environ.get("WORLD_SIZE", "1") == "1" else os.path.join(
        options["out"], f"rank-{rank}")
    finder = AutoSteps(steps=int(options["steps"]), deep=bool(options["deep"]),
                       on_step=lambda step, diagnoses, error: _save(folder, step, diagnoses, options))
    finder.install()
    _RUNNING.append(finder)
    atexit.register(_at_exit, finder)


def _save(folder: str, step: int, diagnoses: list[Any], options: dict[str, Any]) -> None:
    for index, diagnosis in enumerate(diagnoses):
        stem = f"step-{step}" if index == 0 else f"step-{step}.model-{index}"
        saved = save_artefacts(diagnosis, folder, stem, render=bool(options.get("render", True)))
        _, line = summary_line(f"step {step}", diagnosis, saved)
        print(line, file=sys.stderr, flush=True)


def _at_exit(finder: AutoSteps) -> None:
    """A step left open: the script raised in it (sys.last_value holds that exception) or ended before it."""
    error = getattr(sys, "last_value", None)
    if finder.tracing:
        finder.finish(error or RuntimeError("the script ended inside a traced step, before its optimizer step"))
    else:
        finder.uninstall()
