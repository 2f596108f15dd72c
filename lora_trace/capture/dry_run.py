"""The one-shot dry run: run a step with full evidence, then put everything back exactly as it was."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.errors import BadInputError
from ..core.findings import Diagnosis
from .discovery import unwrap
from .losses import find_loss
from .restore import SavedState
from .tracer import Tracer


def diagnose(
    model: nn.Module,
    step: Callable[[nn.Module], Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    scheduler: Any = None,
    label: str | None = None,
    steps: int = 1,
) -> Diagnosis:
    """Run `step(model)` -> loss, backward, and a trial optimizer step, with full evidence (deep mode), `steps`
    times in a row (each call draws its own batch; updates carry over as in training), judged together.
    A step that runs backward itself (and its own optimizer step) is traced as it is: nothing runs twice.

    Afterwards weights, buffers, `.grad`, `requires_grad`, training flags, the optimizer / scaler /
    scheduler state and the CPU/CUDA RNG are exactly what they were. The step's own exception passes through.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise BadInputError(f"steps= takes a whole number of steps to judge together (1 or more); got {steps!r}.")
    root = unwrap(model)
    stateful = [obj for obj in (optimizer, scaler, scheduler) if obj is not None]
    saved = SavedState(root, stateful, optimizer)
    try:
        diagnoses = [_one_step(model, root, step, optimizer, scaler, label, saved) for _ in range(steps)]
        if steps == 1:
            diagnoses[0] = _with_origins(model, step, diagnoses[0], saved)
    finally:
        saved.restore()
    from ..analysis.steps import judge_steps  # analysis is read lazily from capture

    return judge_steps(diagnoses)


def _with_origins(model: nn.Module, step: Callable[[nn.Module], Any], diagnosis: Diagnosis,
                  saved: SavedState) -> Diagnosis:
    """For grad-zero / nonfinite-grad: re-run the step from the same state and name the node where the zero
    or the non-finite value was born (capture/origin.py)."""
    findings = {f.code: f for f in diagnosis.findings if f.severity == "error"}
    wanted = [(kind, findings[code]) for code, kind in (("grad-zero", "zero"), ("nonfinite-grad", "nonfinite"))
              if code in findings]
    if not wanted or (torch.distributed.is_available() and torch.distributed.is_initialized()
                      and torch.distributed.get_world_size() > 1):
        return diagnosis  # a re-run on some ranks only would start collectives the others never join
    from ..analysis import diagnose_trace
    from .discovery import discover
    from .origin import find_origin

    params = dict(discover(model).lora_params())
    origins = []
    for kind, finding in wanted:
        seen = {a.param for a in diagnosis.trace.arrivals if (a.zero if kind == "zero" else a.finite is False)}
        held = {p.name for s in diagnosis.trace.sites if s.module in finding.modules for p in s.params}
        saved.restore()
        try:
            origin = find_origin(model, step, params, kind, seen, seen & held, saved.before_write)
        except Exception:  # noqa: BLE001 - the re-run only adds evidence: a step that cannot run twice (an
            origin = None  # exhausted iterator) keeps the first run's diagnosis, which stands on its own
        if origin is not None:
            origins.append(origin)
    if not origins:
        return diagnosis
    return diagnose_trace(dataclasses.replace(diagnosis.trace, origins=tuple(origins)))


def _one_step(model: nn.Module, root: nn.Module, step: Callable[[nn.Module], Any], optimizer: Any, scaler: Any,
              label: str | None, saved: SavedState) -> Diagnosis:
    for param in root.parameters():
        param.grad = None  # clean evidence: which parameters this step reaches
    with Tracer(model, optimizer=optimizer, deep=True, label=label, scaler=scaler,
                before_write=saved.before_write) as tracer:
        loss = find_loss(step(model))
        if not loss.requires_grad:
            tracer.note_loss(loss)
        elif not tracer.saw_backward():  # a step that runs its own backward (and step) is used as it is
            if loss.numel() != 1:
                loss = loss.sum()  # a non-scalar loss: its sum reaches the same parameters
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if optimizer is not None and loss.device.type != "meta" and not tracer.saw_optimizer_step():
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
    return tracer.diagnosis
