"""Finding codes, the Finding record, and the Diagnosis a user reads. Torch-free."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .records import Trace


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Code(str, enum.Enum):
    ADAPTER_MISSING = "adapter-missing"
    NO_LORA_PARAMS = "no-lora-params"
    TARGET_UNMATCHED = "target-unmatched"
    LORA_FROZEN = "lora-frozen"
    ADAPTER_INACTIVE = "adapter-inactive"
    LOSS_NO_GRAD = "loss-no-grad"
    GRAD_DISABLED = "grad-disabled"
    DETACHED = "detached"
    LORA_BYPASSED = "lora-bypassed"
    LORA_OFF_PATH = "lora-off-path"
    CHECKPOINT_NO_GRAD = "checkpoint-no-grad"
    NOT_IN_OPTIMIZER = "not-in-optimizer"
    NOT_UPDATED = "not-updated"
    NONFINITE_GRAD = "nonfinite-grad"
    NO_SUPERVISED_TOKENS = "no-supervised-tokens"
    DDP_UNUSED = "ddp-unused"
    DDP_DRIFT = "ddp-drift"
    GRAD_ZERO = "grad-zero"
    ZERO_GRAD_AT_INIT = "zero-grad-at-init"
    FROZEN_REFERENCE = "frozen-reference"
    SKIPPED_BY_MODEL = "skipped-by-model"
    TUNER_UNSUPPORTED = "tuner-unsupported"
    BASE_TRAINABLE = "base-trainable"
    FROZEN_IN_OPTIMIZER = "frozen-in-optimizer"
    EVAL_MODE = "eval-mode"


# Among errors, the most specific cause first (design §1); loss-no-grad last, it is usually a consequence.
_ERROR_RANK = [
    Code.DETACHED, Code.GRAD_DISABLED, Code.CHECKPOINT_NO_GRAD, Code.LORA_BYPASSED, Code.LORA_OFF_PATH,
    Code.ADAPTER_MISSING, Code.NO_LORA_PARAMS, Code.TARGET_UNMATCHED, Code.ADAPTER_INACTIVE, Code.LORA_FROZEN,
    Code.NO_SUPERVISED_TOKENS, Code.NONFINITE_GRAD, Code.GRAD_ZERO, Code.NOT_IN_OPTIMIZER, Code.NOT_UPDATED,
    Code.DDP_UNUSED, Code.DDP_DRIFT, Code.LOSS_NO_GRAD,
]
_CAUSES_WITH_A_LINE = {Code.DETACHED, Code.GRAD_DISABLED, Code.LORA_BYPASSED}
_SEVERITY_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    fix: str
    modules: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    location: str | None = None
    stack: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    adapters: tuple[str, ...] = ()  # the adapter names the finding is about ("default", "policy"), or ()
    translations: dict[str, dict[str, str]] = field(default_factory=dict)  # lang -> {"message", "fix"}

    def text(self, lang: str = "en") -> tuple[str, str]:
        """(message, fix) in `lang`; English where no translation exists."""
        if lang == "en" or lang not in self.translations:
            return self.message, self.fix
        chosen = self.translations[lang]
        return chosen.get("message", self.message), chosen.get("fix", self.fix)

    def sort_key(self) -> tuple[int, int, int, str]:
        code = Code(self.code)
        rank = _ERROR_RANK.index(code) if code in _ERROR_RANK else len(_ERROR_RANK)
        line_first = 0 if self.location and code in _CAUSES_WITH_A_LINE else 1
        return (_SEVERITY_RANK[Severity(self.severity)], line_first, rank, self.location or "")


def make_finding(code: Code, severity: Severity, message: dict[str, str], fix: dict[str, str],
                 **details: Any) -> Finding:
    """A Finding from sentences in every language ({"en": ..., "zh": ...})."""
    others = {lang: {"message": message[lang], "fix": fix[lang]} for lang in message if lang != "en"}
    return Finding(code.value, severity.value, message["en"], fix["en"], translations=others, **details)


def order_findings(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=Finding.sort_key))


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one traced step: ordered findings plus the trace they were drawn from."""

    findings: tuple[Finding, ...]
    trace: Trace
    steps: tuple[Trace, ...] = ()  # judged across several steps (diagnose(..., steps=K)): each step's trace

    @property
    def ok(self) -> bool:
        return not any(f.severity == Severity.ERROR.value for f in self.findings)

    @property
    def complete(self) -> bool:
        return self.trace.complete

    @property
    def label(self) -> str | None:
        return self.trace.label

    @property
    def root_cause(self) -> Finding | None:
        errors = [f for f in self.findings if f.severity == Severity.ERROR.value]
        return errors[0] if errors else None

    def codes(self, severity: str | None = None) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings if severity is None or f.severity == severity)

    def report(self, lang: str = "en", *, color: bool = False) -> str:
        from ..present.text import render_report

        return render_report(self, lang=lang, color=color)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        """Jupyter shows this: the HTML report's content (escaped, no script), styles scoped to it."""
        from ..present.html import render_fragment

        return render_fragment(self)

    def save(self, path: str) -> None:
        from .serialize import save_diagnosis

        save_diagnosis(self, path)

    def lora_states(self) -> dict[str, str]:
        """LoRA module -> "grad" (got a gradient) | "severed" (ran, cut) | "never" (never ran) | "frozen"."""
        from ..analysis.facts import Facts

        return dict(Facts(self.trace).states)

    def render(self, path: str, *, expand: bool = False) -> str:
        """Draw the encoding path: .svg / .png / .pdf / .dot by suffix (needs graphviz's `dot` for images)."""
        from ..present.dot import render

        return render(self, path, expand=expand)

    def to_dict(self) -> dict[str, Any]:
        from .serialize import diagnosis_to_dict

        return diagnosis_to_dict(self)
