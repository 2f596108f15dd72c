"""A Lightning callback: trace the first optimizer step (or every N), save the run and graph under the
logger's folder, log a summary, stop or raise on an error finding.

A trace spans one optimizer step, every micro-batch of a gradient-accumulation window included: it opens
at the first batch of the window and closes at the batch whose end sees `global_step` advance. A step that
raises is diagnosed in `on_exception` (Lightning hands callbacks the exception, then re-raises it).
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import Callback

from .steps import StepTracing


class LoraTraceLightningCallback(StepTracing, Callback):
    """`lightning.Trainer(..., callbacks=[LoraTraceLightningCallback()])`; the traced model is the LightningModule.

    every_n_steps: None traces the first optimizer step only; N also every N-th after it.
    stop_on_error: set `trainer.should_stop` after a step with an error finding (training ends cleanly).
    raise_on_error: raise `lora_trace.AdapterProblemError` there instead.
    deep: trace with the deep mode (finds the line that cuts a path; costs more).
    output_dir: where runs go (default: `<trainer.log_dir>/lora-trace`, else under `default_root_dir`).
    watch: also watch the whole run (`lora_trace.watch`): a step showing a symptom is logged and the next one
    traced in full (`watch-step-N.json`); `callback.monitor` holds the symptoms and diagnoses.
    `diagnoses`: (global step, Diagnosis) of every traced step; `crashed`: a step that raised, or None.
    """

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.watch and len(trainer.optimizers) == 1:
            self._steps.start_watch(pl_module, optimizer=trainer.optimizers[0], folder=self._folder(trainer),
                                    writes=trainer.is_global_zero)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._steps.stop_watch(None)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self._steps.open or not self._steps.due(step) or any(s == step for s, _ in self.diagnoses):
            return
        optimizers = trainer.optimizers
        self._steps.start(pl_module, optimizer=optimizers[0] if len(optimizers) == 1 else None, step=step,
                          folder=self._folder(trainer), writes=trainer.is_global_zero)

    def _folder(self, trainer: Any) -> str:
        return self.output_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "lora-trace")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._steps.open and trainer.global_step > self._steps.step:
            self._finish(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer)  # an accumulation window the epoch cut short

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._steps.stop_watch(exception)
        self._steps.finish(exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._steps.stop_watch(None)
        self._steps.finish(None)

    def _finish(self, trainer: Any) -> None:
        step = self._steps.step
        diagnosis = self._steps.finish(None)
        if diagnosis is not None and self._steps.act_on(step, diagnosis):
            trainer.should_stop = True
