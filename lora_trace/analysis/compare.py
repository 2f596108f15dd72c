"""Compare two runs: which LoRA layers each trains, what changed in between, which findings went away.

Torch-free: runs saved anywhere compare anywhere. A finding's identity across runs is its code, its
location and its modules; that is what "fixed" and "introduced" compare.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..core.findings import Diagnosis, Finding
from ..core.regions import short_name
from ..core.serialize import from_document, load, read_document, to_document, write_document
from .facts import Facts

KIND = "lora-trace.comparison"
_CONFIG_KEYS = ("target_modules", "exclude_modules", "r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora",
                "layers_to_transform", "layers_pattern", "modules_to_save", "init_lora_weights", "bias")


@dataclass(frozen=True)
class Comparison:
    a_label: str
    b_label: str
    a_trained: tuple[str, ...]  # LoRA modules that got a gradient in a
    b_trained: tuple[str, ...]
    gained: tuple[str, ...]  # trained in b, not in a
    lost: tuple[str, ...]  # trained in a, not in b
    regions: dict[str, tuple[int, int]]  # region -> (LoRA layers trained in a, in b)
    norm_ratios: dict[str, float]  # module -> gradient norm in b / in a, where both exist
    fixed: tuple[str, ...]  # findings of a that b no longer has ("code @ location")
    introduced: tuple[str, ...]
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # what differs, a -> b
    a_path: tuple[str, ...] = ()  # regions traversed
    b_path: tuple[str, ...] = ()

    @property
    def same_path(self) -> bool:
        return not self.gained and not self.lost

    def to_dict(self) -> dict[str, Any]:
        """The saved form (`load_comparison` reads it back), plus `same_path` for readers."""
        return {**to_document(KIND, self), "same_path": self.same_path}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_document(self.to_dict(), path)

    def __str__(self) -> str:
        from ..present.comparison import format_comparison

        return format_comparison(self)

    def _repr_html_(self) -> str:
        """Jupyter shows this: the comparison's text, escaped, in the report's style (no script)."""
        from ..present.html import text_fragment

        return text_fragment("lora-trace diff", str(self))


def as_diagnosis(run: Diagnosis | str | os.PathLike[str]) -> Diagnosis:
    return run if isinstance(run, Diagnosis) else load(run)


def _identity(finding: Finding) -> str:
    return f"{finding.code} @ {finding.location or '-'} [{', '.join(short_name(m) for m in finding.modules[:3])}" \
           f"{', ...' if len(finding.modules) > 3 else ''}]"


def _configs(diagnosis: Diagnosis) -> dict[str, Any]:
    """Flattened configuration: PEFT settings per adapter, model class, versions."""
    flat: dict[str, Any] = {"model_class": diagnosis.trace.model_class}
    for prefix, adapters in diagnosis.trace.peft_configs.items():
        for adapter, config in adapters.items():
            for key in _CONFIG_KEYS:
                if key in config:
                    flat[f"{short_name(prefix) or '(model)'}[{adapter}].{key}"] = config[key]
    for package, version in diagnosis.trace.versions.items():
        flat[f"version.{package}"] = version
    return flat


def _path_labels(a: str, b: str) -> tuple[str, str]:
    """The shortest trailing parts of the two paths that differ (runs/a/step-0.json, runs/b/step-0.json ->
    a/step-0.json, b/step-0.json)."""
    parts_a, parts_b = os.path.normpath(a).split(os.sep), os.path.normpath(b).split(os.sep)
    for depth in range(1, max(len(parts_a), len(parts_b)) + 1):
        label_a, label_b = os.path.join(*parts_a[-depth:]), os.path.join(*parts_b[-depth:])
        if label_a != label_b:
            return label_a, label_b
    return a, b


def compare(a: Diagnosis | str | os.PathLike[str], b: Diagnosis | str | os.PathLike[str]) -> Comparison:
    """What changed from run `a` to run `b` (diagnoses or paths of saved runs)."""
    run_a, run_b = as_diagnosis(a), as_diagnosis(b)
    facts_a, facts_b = Facts(run_a.trace), Facts(run_b.trace)
    trained_a, trained_b = facts_a.trained_modules, facts_b.trained_modules
    regions: dict[str, list[int]] = {}
    for index, run in enumerate((run_a, run_b)):
        for site in run.trace.sites:
            regions.setdefault(site.region, [0, 0])
        for module in (trained_a, trained_b)[index]:
            region = next(s.region for s in run.trace.sites if s.module == module)
            regions[region][index] += 1
    norms_a, norms_b = facts_a.module_norms, facts_b.module_norms
    ratios = {m: (norms_b[m] / norms_a[m] if norms_a[m] else (math.inf if norms_b[m] else math.nan))
              for m in sorted(set(norms_a) & set(norms_b))}
    ids_a = {_identity(f): f for f in run_a.findings if f.severity != "info"}
    ids_b = {_identity(f): f for f in run_b.findings if f.severity != "info"}
    config_a, config_b = _configs(run_a), _configs(run_b)
    changes = {k: (config_a.get(k), config_b.get(k)) for k in sorted(set(config_a) | set(config_b))
               if config_a.get(k) != config_b.get(k)}
    a_label, b_label = run_a.label or "a", run_b.label or "b"
    if a_label == b_label and not isinstance(a, Diagnosis) and not isinstance(b, Diagnosis):
        a_label, b_label = _path_labels(os.fspath(a), os.fspath(b))  # two "step-0" runs: say which file is which
    return Comparison(
        a_label=a_label, b_label=b_label,
        a_trained=trained_a, b_trained=trained_b,
        gained=tuple(sorted(set(trained_b) - set(trained_a))), lost=tuple(sorted(set(trained_a) - set(trained_b))),
        regions={r: (v[0], v[1]) for r, v in sorted(regions.items())}, norm_ratios=ratios,
        fixed=tuple(sorted(set(ids_a) - set(ids_b))), introduced=tuple(sorted(set(ids_b) - set(ids_a))),
        config_changes=changes,
        a_path=facts_a.traversed_regions, b_path=facts_b.traversed_regions,
    )


def load_comparison(path: str | os.PathLike[str]) -> Comparison:
    """Read a comparison saved by `Comparison.save` (or `lora-trace diff --json`)."""
    return from_document(read_document(path), KIND, Comparison, source=os.fspath(path), derived=("same_path",))
