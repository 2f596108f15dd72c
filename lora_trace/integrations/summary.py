"""What every integration does with a finished diagnosis: save the run (and its graph) and log one line
whose level says how it went: INFO when healthy, WARNING when a warning finding stands, ERROR on errors."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..core.errors import GraphvizMissingError


def save_artefacts(diagnosis: Any, folder: str, stem: str, *, render: bool = True) -> str:
    """`<folder>/<stem>.json` and, when graphviz is there, `<stem>.svg`; returns the JSON path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{stem}.json")
    diagnosis.save(path)
    if render:
        try:
            diagnosis.render(os.path.join(folder, f"{stem}.svg"))
        except GraphvizMissingError as error:
            logging.getLogger("lora_trace").warning("lora-trace: %s", error)
    return path


def summary_line(what: str, diagnosis: Any, saved: str | None = None) -> tuple[int, str]:
    """(logging level, message) for one traced step, e.g. "lora-trace step 0: LoRA problems: lora-frozen;
    warnings: base-trainable (root cause at train.py:12) - report: lora-trace show runs/step-0.json"."""
    errors, warnings = (list(dict.fromkeys(diagnosis.codes(severity))) for severity in ("error", "warning"))
    root = diagnosis.root_cause
    verdict = f"LoRA problems: {', '.join(errors)}" if errors else "ok"
    if warnings:
        verdict += f"; warnings: {', '.join(warnings)}" if errors else f", with warnings: {', '.join(warnings)}"
    if root is not None and root.location:
        verdict += f" (root cause at {root.location})"
    if not diagnosis.complete:
        error = diagnosis.trace.error or "unknown error"
        verdict = f"the step raised ({error}); {verdict}"
        if not errors and "grad" in error and not diagnosis.trace.deep:  # a lost graph the default mode can't place
            verdict += "; to find where the graph was cut, trace with deep=True (lora-trace run --deep)"
        elif not errors:
            verdict += " (no LoRA problem was seen before the error)"
    if saved:
        verdict += f" - report: lora-trace show {saved}"
    level = logging.ERROR if errors else logging.WARNING if warnings or not diagnosis.complete else logging.INFO
    return level, f"lora-trace {what}: {verdict}"


def log_summary(logger: logging.Logger, what: str, diagnosis: Any, saved: str | None = None) -> None:
    level, message = summary_line(what, diagnosis, saved)
    logger.log(level, "%s", message)
