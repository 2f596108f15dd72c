"""The message catalogue: every word lora-trace prints, keyed, in every language. Rules and views use keys
and values; words, punctuation and plurals live only here. Stdlib only."""

from __future__ import annotations

from typing import Any

from .distributed import DISTRIBUTED
from .findings import FINDINGS
from .report import REPORT
from .targets import TARGETS
from .updates import UPDATES

LANGUAGES = ("en", "zh")
MESSAGES: dict[str, dict[str, Any]] = {**FINDINGS, **DISTRIBUTED, **REPORT, **TARGETS, **UPDATES}
