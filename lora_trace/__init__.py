"""lora-trace: find out why a LoRA adapter does not learn, from one traced training step.

    with lora_trace.trace(model, optimizer=opt) as t:
        loss = compute_loss(model, batch); loss.backward(); opt.step()
    print(t.diagnosis)

Importing this package has no side effects.
"""

from __future__ import annotations

from typing import Any

from . import fixes, integrations
from .analysis.compare import Comparison, compare
from .capture.dry_run import diagnose
from .capture.tracer import Tracer
from .core.errors import (
    GraphvizMissingError,
    InvalidModelError,
    LoraTraceError,
    LossNotFoundError,
    RunFormatError,
    TraceStateError,
)
from .core.findings import Code, Diagnosis, Finding, Severity
from .core.serialize import load

__version__ = "0.1.0"


def trace(model: Any, *, optimizer: Any = None, deep: bool = False, label: str | None = None,
          scaler: Any = None) -> Tracer:
    """Observe the training steps run inside the `with` block; read `.diagnosis` after it.

    deep=True also watches detaching calls and direct weight uses, to point at the line that cuts a path.
    Pass the optimizer (and an AMP GradScaler) to have updates checked too.
    """
    return Tracer(model, optimizer=optimizer, deep=deep, label=label, scaler=scaler)


__all__ = [
    "Code",
    "Comparison",
    "Diagnosis",
    "Finding",
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
]
