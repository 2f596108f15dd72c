"""The plain-text report (placeholder replaced by the step-by-step report)."""
from __future__ import annotations

from typing import Any


def render_report(diagnosis: Any, *, lang: str = "en", color: bool = False) -> str:
    lines = [f"lora-trace: {'OK' if diagnosis.ok else 'LoRA gradient problems found'}"]
    for f in diagnosis.findings:
        lines.append(f"[{f.severity}] {f.code}" + (f" at {f.location}" if f.location else ""))
        lines.append(f"  {f.message}")
        lines.append(f"  fix: {f.fix}")
    return "\n".join(lines)
