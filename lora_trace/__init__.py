"""lora-trace: find out why a LoRA adapter does not learn, from one traced training step.

    with lora_trace.trace(model, optimizer=opt) as t:
        loss = compute_loss(model, batch); loss.backward(); opt.step()
    print(t.diagnosis)

Importing this package has no side effects and imports no torch: reading, diffing and rendering saved
runs stays fast; torch, PEFT and transformers load when a capture function is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .analysis.compare import Comparison
from .analysis.rank_compare import RankComparison
from .analysis.rank_compare import compare_runs as compare
from .core.errors import (
    AdapterProblemError,
    GraphvizMissingError,
    InvalidModelError,
    LoraTraceError,
    LossNotFoundError,
    RunFormatError,
    TraceStateError,
)
from .core.findings import Code, Diagnosis, Finding, Severity
from .core.serialize import load

if TYPE_CHECKING:
    from .capture.monitor import Monitor
    from .capture.tracer import Tracer

__version__ = "0.1.0"


def trace(model: Any, *, optimizer: Any = None, deep: bool = False, label: str | None = None,
          scaler: Any = None) -> Tracer:
    """Observe the training steps run inside the `with` block; read `.diagnosis` after it.

    deep=True also watches detaching calls and direct weight uses, to point at the line that cuts a path.
    Pass the optimizer (and an AMP GradScaler) to have updates checked too.
    """
    from .capture.tracer import Tracer

    return Tracer(model, optimizer=optimizer, deep=deep, label=label, scaler=scaler)


def diagnose(model: Any, step: Any, *, optimizer: Any = None, scaler: Any = None, scheduler: Any = None,
             label: str | None = None, steps: int = 1) -> Diagnosis:
    """Run `step(model)` -> loss, backward, and a trial optimizer step, with full evidence (deep mode).
    With `steps=K` the step runs K times in a row (each call draws its own batch) and is judged across them:
    an adapter the model skips on some steps is healthy, one that got no gradient in any step is an error.

    Afterwards weights, buffers, `.grad`, `requires_grad`, training flags, the optimizer / scaler /
    scheduler state and the CPU/CUDA RNG are exactly what they were. The step's own exception passes through.
    """
    from .capture.dry_run import diagnose as dry_run

    return dry_run(model, step, optimizer=optimizer, scaler=scaler, scheduler=scheduler, label=label, steps=steps)


def watch(model: Any, *, optimizer: Any, deep: bool = False, max_traces: int = 3) -> Monitor:
    """Leave it on for a whole run: per step only a counter per trainable adapter parameter and a few flags read
    at the optimizer's step. A step with a symptom (an adapter parameter with no gradient, lr 0, an adapter
    switched, merged, disabled or frozen) gets the next step traced in full; read `.symptoms`, `.diagnoses`.

        with lora_trace.watch(model, optimizer=opt) as w:
            for batch in loader: train_step(batch)
        print(w)
    """
    from .capture.monitor import Monitor

    return Monitor(model, optimizer=optimizer, deep=deep, max_traces=max_traces)


_LAZY = {"Tracer": ("lora_trace.capture.tracer", "Tracer"), "fixes": ("lora_trace.fixes", None),
         "integrations": ("lora_trace.integrations", None)}


def __getattr__(name: str) -> Any:
    """What needs torch loads on first use: `lora_trace.Tracer`, `lora_trace.fixes`, `lora_trace.integrations`."""
    if name not in _LAZY:
        raise AttributeError(f"module 'lora_trace' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


__all__ = [
    "Code",
    "Comparison",
    "RankComparison",
    "Diagnosis",
    "Finding",
    "AdapterProblemError",
    "GraphvizMissingError",
    "InvalidModelError",
    "LoraTraceError",
    "LossNotFoundError",
    "RunFormatError",
    "Severity",
    "TraceStateError",
    "Tracer",
    "__version__",
    "compare",
    "diagnose",
    "fixes",
    "integrations",
    "load",
    "trace",
    "watch",
]
