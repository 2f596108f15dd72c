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
import os
import sys
from typing import Any

from transformers import TrainerCallback

from .steps import StepCrashedError, StepTracing


class LoraTraceCallback(StepTracing, TrainerCallback):
    """`Trainer(..., callbacks=[LoraTraceCallback()])`.

    every_n_steps: None traces the first step only; N also traces every N-th step after it.
    stop_on_error: stop training after a step whose diagnosis has an error finding (the Trainer ends cleanly).
    raise_on_error: raise `lora_trace.AdapterProblemError` there instead, so a script or a CI job fails loudly.
    deep: trace with the deep mode (finds the line that cuts a path; costs more).
    output_dir: where runs go (default: `<args.output_dir>/lora-trace`).
    watch: also watch the whole run (`lora_trace.watch`): cheap counters on every step; a step showing a symptom
    (an adapter parameter with no gradient, lr 0, an adapter switched or frozen) is logged and the next one
    traced in full, saved as `watch-step-N.json`. `callback.monitor` holds its symptoms and diagnoses.

    `diagnoses` holds (global step, Diagnosis) for every traced step, a crashed one too (its
    `diagnosis.complete` is False); `crashed` is that crashed step's diagnosis, or None.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self.close()  # a step of an earlier train() call that raised
        if self.watch and model is not None:
            self._steps.start_watch(model, optimizer=optimizer, folder=self._folder(args),
                                    writes=bool(state.is_world_process_zero))
            atexit.register(self.close)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                      **kwargs: Any) -> None:
        self._crashed_step(getattr(sys, "last_value", None))
        if model is None or not self._steps.due(state.global_step):
            return
        self._steps.start(model, optimizer=optimizer, step=state.global_step, folder=self._folder(args),
                          writes=bool(state.is_world_process_zero))
        atexit.register(self.close)  # the step may raise: then nothing but exit would call us again

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not self._steps.open:
            return control
        if self._steps.monitor is None:
            atexit.unregister(self.close)
        step = self._steps.step
        diagnosis = self._steps.finish(None)
        if self._steps.act_on(step, diagnosis):
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close(finished=True)

    def close(self, *, finished: bool = False) -> Any:
        """Diagnose a traced step that never ended (training raised inside it): remove its hooks, log,
        save and keep its diagnosis; returns it (None when no step was left open). Ends a watch too."""
        atexit.unregister(self.close)
        error = None if finished else getattr(sys, "last_value", None)  # the exception that reached the top level
        self._steps.stop_watch(error)
        return self._crashed_step(error)

    def _crashed_step(self, error: BaseException | None = None) -> Any:
        if not self._steps.open:
            return None
        return self._steps.finish(error or StepCrashedError("the traced training step raised"))

    def _folder(self, args: Any) -> str:
        return self.output_dir or os.path.join(args.output_dir, "lora-trace")
