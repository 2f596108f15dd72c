"""A Hugging Face TrainerCallback: trace the first training step (or every N), save the run and the
graph under output_dir, log a summary, and stop training on an error finding if asked.

The tracer spans on_step_begin to on_step_end: the forward and backward passes of every micro-batch of
the step and the optimizer step. If training raises inside a step, the Trainer calls no callback;
`on_train_end` and `close()` remove the hooks, and a new step never starts while a tracer is open.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from transformers import TrainerCallback

from ..capture.tracer import Tracer
from ..core.errors import AdapterProblemError, GraphvizMissingError

logger = logging.getLogger("lora_trace")


class LoraTraceCallback(TrainerCallback):
    """`Trainer(..., callbacks=[LoraTraceCallback()])`.

    every_n_steps: None traces the first step only; N also traces every N-th step after it.
    stop_on_error: stop training after a step whose diagnosis has an error finding (the Trainer ends cleanly).
    raise_on_error: raise `lora_trace.AdapterProblemError` there instead, so a script or a CI job fails loudly.
    deep: trace with the deep mode (finds the line that cuts a path; costs more).
    output_dir: where runs go (default: `<args.output_dir>/lora-trace`).
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
        self.diagnoses: list[Any] = []  # (global step, Diagnosis) for every traced step
        self._tracer: Tracer | None = None

    def _due(self, step: int) -> bool:
        return step == 0 or (self.every_n_steps is not None and step % self.every_n_steps == 0)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                      **kwargs: Any) -> None:
        self.close()
        if model is None or not self._due(state.global_step):
            return
        self._tracer = Tracer(model, optimizer=optimizer, deep=self.deep, label=f"step-{state.global_step}")
        self._tracer.__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return control
        tracer.__exit__(None, None, None)
        diagnosis = tracer.diagnosis
        step = state.global_step - 1  # the step that just ran
        self.diagnoses.append((step, diagnosis))
        folder = self.output_dir or os.path.join(args.output_dir, "lora-trace")
        if state.is_world_process_zero:
            self._save(diagnosis, folder, step)
        codes = ", ".join(diagnosis.codes("error")) or "none"
        logger.warning("lora-trace step %d: %s (errors: %s)%s", step, "ok" if diagnosis.ok else "LoRA problems",
                       codes, f"; root cause at {diagnosis.root_cause.location}"
                       if diagnosis.root_cause is not None and diagnosis.root_cause.location else "")
        if self.raise_on_error and not diagnosis.ok:
            root = diagnosis.root_cause
            raise AdapterProblemError(f"lora-trace stopped training after step {step}: {root.code}: {root.message}"
                                      f"\nFix: {root.fix}", diagnosis)
        if self.stop_on_error and not diagnosis.ok:
            control.should_training_stop = True
        return control

    def _save(self, diagnosis: Any, folder: str, step: int) -> None:
        os.makedirs(folder, exist_ok=True)
        diagnosis.save(os.path.join(folder, f"step-{step}.json"))
        if self.render:
            try:
                diagnosis.render(os.path.join(folder, f"step-{step}.svg"))
            except GraphvizMissingError as error:
                logger.warning("lora-trace: %s", error)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks of a step that never ended (training raised inside it)."""
        tracer, self._tracer = self._tracer, None
        if tracer is not None:
            tracer.__exit__(RuntimeError, RuntimeError("the traced training step did not end"), None)
