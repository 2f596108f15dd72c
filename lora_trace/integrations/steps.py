"""What every training-loop integration shares: which steps to trace, the one tracer open at a time, and
what happens to a finished (or crashed) step's diagnosis: kept, saved, logged, and acted on."""

from __future__ import annotations

import logging
from typing import Any

from ..capture.monitor import Monitor
from ..capture.tracer import Tracer
from ..core.errors import AdapterProblemError, InvalidModelError, TraceStateError
from .summary import log_summary, save_artefacts

logger = logging.getLogger("lora_trace")


class StepCrashedError(RuntimeError):
    """Stands for the exception that left a traced step when the integration was not handed it."""


class TracedSteps:
    """every_n_steps: None traces the first step only; N also every N-th. A diagnosis with an error finding
    raises `AdapterProblemError` (raise_on_error) or asks the loop to stop (stop_on_error)."""

    def __init__(self, *, every_n_steps: int | None, stop_on_error: bool, raise_on_error: bool, deep: bool,
                 render: bool) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive number of steps or None, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.stop_on_error = stop_on_error
        self.raise_on_error = raise_on_error
        self.deep = deep
        self.render = render
        self.diagnoses: list[tuple[int, Any]] = []  # (step, Diagnosis) of every traced step
        self.crashed: Any = None  # the diagnosis of a step that raised
        self.monitor: Monitor | None = None  # watch=True: the run-long monitor (symptoms, steps traced after one)
        self.refused: InvalidModelError | None = None  # a model lora-trace cannot trace (ZeRO-3): said once
        self._tracer: Tracer | None = None
        self._step, self._folder, self._writes = 0, "", False

    @property
    def open(self) -> bool:
        return self._tracer is not None

    @property
    def step(self) -> int:
        """The step the open tracer is tracing."""
        return self._step

    def due(self, step: int) -> bool:
        if self.refused is not None:
            return False
        return step == 0 or (self.every_n_steps is not None and step % self.every_n_steps == 0)

    def start(self, model: Any, *, optimizer: Any, step: int, folder: str, writes: bool) -> None:
        """Trace from now on; `writes`: this process saves the artefacts (rank zero)."""
        tracer = Tracer(model, optimizer=optimizer, deep=self.deep, label=f"step-{step}")
        try:
            tracer.__enter__()
        except TraceStateError:  # traced already: watch=True traces this step after a symptom
            logger.info("lora-trace: step %d is traced by the watch already", step)
            return
        except InvalidModelError as error:  # said once, at ERROR; the training itself goes on untouched
            self.refused = error
            logger.error("lora-trace: not tracing this run: %s", error)
            return
        self._tracer, self._step, self._folder, self._writes = tracer, step, folder, writes

    def finish(self, error: BaseException | None = None) -> Any:
        """End the open trace (`error`: what the step raised), keep, save and log its diagnosis; returns it,
        or None when nothing was open. Never raises for the diagnosis: see `act_on`."""
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return None
        tracer.__exit__(type(error) if error is not None else None, error, None)
        diagnosis = tracer.diagnosis
        if error is not None:
            self.crashed = diagnosis
        self.diagnoses.append((self._step, diagnosis))
        saved = None
        if self._writes and self._folder:
            saved = save_artefacts(diagnosis, self._folder, f"step-{self._step}", render=self.render)
        log_summary(logger, f"step {self._step}", diagnosis, saved)
        return diagnosis

    def start_watch(self, model: Any, *, optimizer: Any, folder: str, writes: bool) -> None:
        """A run-long `lora_trace.watch()`: each symptom logged, the step after it traced, saved and logged."""
        if self.monitor is not None or optimizer is None:
            return

        def traced(step: int, diagnosis: Any) -> None:
            saved = save_artefacts(diagnosis, folder, f"watch-step-{step}", render=self.render) if writes else None
            log_summary(logger, f"watch, step {step} (after a symptom)", diagnosis, saved)

        self.monitor = Monitor(model, optimizer=optimizer, deep=self.deep, on_diagnosis=traced,
                               on_symptom=lambda s: logger.warning("lora-trace watch: %s; tracing the next step", s))
        self.monitor.__enter__()

    def stop_watch(self, error: BaseException | None = None) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.__exit__(type(error) if error is not None else None, error, None)

    def act_on(self, step: int, diagnosis: Any) -> bool:
        """Raise on an error finding when asked; True when the loop should stop."""
        if diagnosis.ok:
            return False
        root = diagnosis.root_cause
        if self.raise_on_error:
            raise AdapterProblemError(f"lora-trace stopped training after step {step}: {root.code}: {root.message}"
                                      f"\nFix: {root.fix}", diagnosis)
        if self.stop_on_error:
            logger.error("lora-trace: stopping training after step %d (stop_on_error): %s", step, root.code)
        return self.stop_on_error


class StepTracing:
    """The options and the public state the Trainer and Lightning callbacks share (see their docstrings)."""

    def __init__(self, *, every_n_steps: int | None = None, stop_on_error: bool = False, deep: bool = False,
                 output_dir: str | None = None, render: bool = True, raise_on_error: bool = False,
                 watch: bool = False) -> None:
        self.output_dir = output_dir
        self.watch = watch
        self._steps = TracedSteps(every_n_steps=every_n_steps, stop_on_error=stop_on_error,
                                  raise_on_error=raise_on_error, deep=deep, render=render)

    @property
    def diagnoses(self) -> list[tuple[int, Any]]:
        """(step, Diagnosis) of every traced step, a crashed one too (its `complete` is False)."""
        return self._steps.diagnoses

    @property
    def crashed(self) -> Any:
        """The diagnosis of a traced step that raised, or None."""
        return self._steps.crashed

    @property
    def monitor(self) -> Any:
        """With watch=True, the run-long monitor while training runs (its symptoms and diagnoses); else None."""
        return self._steps.monitor
