"""A Hugging Face TrainerCallback: trace the first training step (or every N), save the run and the
graph under output_dir, log a summary, and stop training on an error finding if asked.

The tracer spans on_step_begin to on_step_end: the forward and backward passes of every micro-batch of
the step and the optimizer step. If the step raises, the Trainer calls no callback and its exception
leaves `train()`; the classic LoRA failure does exactly that (reentrant checkpointing with frozen inputs:
the loss has no grad_fn and backward raises). The evidence gathered up to the crash is not thrown away:
the unfinished step is diagnosed, logged and saved when the interpreter exits (a crashed script), when
`train()` is called again, or at once by `close()` (a notebook). The Trainer's exception is never touched.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from transformers import TrainerCallback

from ..capture.tracer import Tracer
from ..core.errors import AdapterProblemError
from .summary import log_summary, save_artefacts

logger = logging.getLogger("lora_trace")


class StepCrashedError(RuntimeError):
    """Stands for the exception that left a traced step when Python no longer holds it."""


class LoraTraceCallback(TrainerCallback):
    """`Trainer(..., callbacks=[LoraTraceCallback()])`.

    every_n_steps: None traces the first step only; N also traces every N-th step after it.
    stop_on_error: stop training after a step whose diagnosis has an error finding (the Trainer ends cleanly).
    raise_on_error: raise `lora_trace.AdapterProblemError` there instead, so a script or a CI job fails loudly.
    deep: trace with the deep mode (finds the line that cuts a path; costs more).
    output_dir: where runs go (default: `<args.output_dir>/lora-trace`).

    `diagnoses` holds (global step, Diagnosis) for every traced step, a crashed one too (its
    `diagnosis.complete` is False); `crashed` is that crashed step's diagnosis, or None.
    """

    def __init__(self, *, every_n_steps: int | None = None, stop_on_error: bool = False, deep: bool = False,
                 output_dir: str | None = None, render: bool = True, raise_on_error: bool = False) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps or None, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.stop_on_error = stop_on_error
        self.raise_on_error = raise_on_error
        self.deep = deep
        self.output_dir = output_dir
        self.render = render
        self.diagnoses: list[Any] = []
        self.crashed: Any = None
        self._tracer: Tracer | None = None
        self._open: tuple[int, str, bool] | None = None  # (step, folder, writes artefacts) of the open trace

    def _due(self, step: int) -> bool:
        return step == 0 or (self.every_n_steps is not None and step % self.every_n_steps == 0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()  # a step of an earlier train() call that raised

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                      **kwargs: Any) -> None:
        self.close()
        if model is None or not self._due(state.global_step):
            return
        folder = self.output_dir or os.path.join(args.output_dir, "lora-trace")
        self._tracer = Tracer(model, optimizer=optimizer, deep=self.deep, label=f"step-{state.global_step}")
        self._tracer.__enter__()
        self._open = (state.global_step, folder, bool(state.is_world_process_zero))
        atexit.register(self.close)  # the step may raise: then nothing but exit would call us again

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return control
        atexit.unregister(self.close)
        step, folder, writes = self._open or (state.global_step - 1, "", False)
        self._open = None
        tracer.__exit__(None, None, None)
        diagnosis = tracer.diagnosis
        self._report(step, diagnosis, folder, writes)
        if self.raise_on_error and not diagnosis.ok:
            root = diagnosis.root_cause
            raise AdapterProblemError(f"lora-trace stopped training after step {step}: {root.code}: {root.message}"
                                      f"\nFix: {root.fix}", diagnosis)
        if self.stop_on_error and not diagnosis.ok:
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> Any:
        """Diagnose a traced step that never ended (training raised inside it): remove its hooks, log,
        save and keep its diagnosis; returns it (None when no step was left open)."""
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return None
        atexit.unregister(self.close)
        step, folder, writes = self._open or (0, "", False)
        self._open = None
        error = getattr(sys, "last_value", None) or StepCrashedError("the traced training step raised")
        tracer.__exit__(type(error), error, None)
        diagnosis = tracer.diagnosis
        self.crashed = diagnosis
        self._report(step, diagnosis, folder, writes)
        return diagnosis

    def _report(self, step: int, diagnosis: Any, folder: str, writes: bool) -> None:
        self.diagnoses.append((step, diagnosis))
        saved = save_artefacts(diagnosis, folder, f"step-{step}", render=self.render) if writes and folder else None
        log_summary(logger, f"step {step}", diagnosis, saved)
