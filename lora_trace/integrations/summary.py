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
    """(logging level, message) for one traced step."""
    errors, warnings = (list(dict.fromkeys(diagnosis.codes(severity))) for severity in ("error", "warning"))
    parts = [f"lora-trace {what}:"]
    if not diagnosis.complete:
        parts.append(f"the step raised ({diagnosis.trace.error or 'unknown error'});")
    if errors:
        root = diagnosis.root_cause
        parts.append(f"LoRA problems: {', '.join(errors)}")
        if root is not None and root.location:
            parts.append(f"(root cause at {root.location})")
    else:
        parts.append("ok")
    if warnings:
        parts.append(f"{'; warnings' if errors else 'with warnings'}: {', '.join(warnings)}")
    if saved:
        parts.append(f"- report: lora-trace show {saved}")
    level = logging.ERROR if errors else logging.WARNING if warnings or not diagnosis.complete else logging.INFO
    return level, " ".join(parts).replace(": ok with", ": ok, with")


def log_summary(logger: logging.Logger, what: str, diagnosis: Any, saved: str | None = None) -> None:
    level, message = summary_line(what, diagnosis, saved)
    logger.log(level, "%s", message)
