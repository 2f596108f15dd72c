"""Distributed runs compared rank by rank: one gathered run (each rank against rank 0: which ranks took
another path), or two (rank i of A against rank i of B: which ranks a change moved). Torch-free."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core.findings import Diagnosis
from ..core.regions import short_name
from ..core.serialize import from_document, read_document, to_document, write_document
from .compare import Comparison, _path_labels, compare
from .distributed import KIND as DISTRIBUTED
from .distributed import DistributedDiagnosis, load_distributed

KIND = "lora-trace.rank-comparison"
Run = Diagnosis | DistributedDiagnosis | str | os.PathLike[str]


@dataclass(frozen=True)
class RankComparison:
    """One comparison per rank; `ranks[i]` is the rank `pairs[i]` compares."""

    a_label: str
    b_label: str
    ranks: tuple[int, ...]
    pairs: tuple[Comparison, ...]
    note: str = ""  # what could not be compared (ranks missing on one side)

    @property
    def same_path(self) -> bool:
        return all(pair.same_path for pair in self.pairs)

    @property
    def divergent_ranks(self) -> tuple[int, ...]:
        return tuple(rank for rank, pair in zip(self.ranks, self.pairs, strict=True) if not pair.same_path)

    def to_dict(self) -> dict[str, Any]:
        return {**to_document(KIND, self), "same_path": self.same_path, "divergent_ranks": list(self.divergent_ranks)}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_document(self.to_dict(), path)

    def __str__(self) -> str:
        lines = [f"lora-trace diff, rank by rank: {self.a_label} -> {self.b_label}",
                 "same LoRA path on every rank" if self.same_path else
                 f"LoRA path differs on ranks {list(self.divergent_ranks)}", ""]
        for rank, pair in zip(self.ranks, self.pairs, strict=True):
            if pair.same_path:
                lines.append(f"  rank {rank}: same path ({len(pair.b_trained)} layers trained)")
                continue
            lines.append(f"  rank {rank}: {len(pair.gained)} layers gained, {len(pair.lost)} lost")
            for title, items in (("gained", pair.gained), ("lost", pair.lost)):
                if items:
                    shown = ", ".join(short_name(m) for m in items[:6]) + (" ..." if len(items) > 6 else "")
                    lines.append(f"    {title}: {shown}")
            lines += [f"    introduced: {item}" for item in pair.introduced[:4]]
            lines += [f"    fixed: {item}" for item in pair.fixed[:4]]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


def compare_runs(a: Run, b: Run | None = None) -> Comparison | RankComparison:
    """`lora_trace.compare`: two single runs give a Comparison; a distributed run (alone, or on either side)
    gives a RankComparison, rank by rank."""
    if b is not None and not is_distributed(a) and not is_distributed(b):
        return compare(a, b)  # type: ignore[arg-type]
    return compare_ranks(a, b)


def is_distributed(run: Run) -> bool:
    if isinstance(run, DistributedDiagnosis):
        return True
    if isinstance(run, Diagnosis):
        return False
    data = read_document(run)
    return isinstance(data, dict) and data.get("kind") == DISTRIBUTED


def compare_ranks(a: Run, b: Run | None = None) -> RankComparison:
    """Rank by rank. With only `a` (a distributed run): each rank against rank 0. With `b`: A's rank i against
    B's rank i; a single-process run counts as rank 0."""
    runs_a = _ranks(a)
    label_a = _label(a, "a")
    if b is None:
        pairs = tuple(compare(runs_a[0], run) for run in runs_a[1:])
        return RankComparison(f"{label_a} rank 0", f"{label_a} rank i", tuple(range(1, len(runs_a))), pairs)
    runs_b = _ranks(b)
    label_b = _label(b, "b")
    if label_a == label_b and isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike)):
        label_a, label_b = _path_labels(os.fspath(a), os.fspath(b))  # two ddp-run.json: which folder is which
    common = min(len(runs_a), len(runs_b))
    note = "" if len(runs_a) == len(runs_b) else (
        f"{len(runs_a)} ranks in {label_a}, {len(runs_b)} in {label_b}: the first {common} compared")
    pairs = tuple(compare(runs_a[i], runs_b[i]) for i in range(common))
    return RankComparison(label_a, label_b, tuple(range(common)), pairs, note)


def _ranks(run: Run) -> tuple[Diagnosis, ...]:
    if isinstance(run, DistributedDiagnosis):
        return run.ranks
    if isinstance(run, Diagnosis):
        return (run,)
    from ..core.serialize import load

    return load_distributed(run).ranks if is_distributed(run) else (load(run),)


def _label(run: Run, default: str) -> str:
    return os.path.basename(os.fspath(run)) if isinstance(run, (str, os.PathLike)) else default


def load_rank_comparison(path: str | os.PathLike[str]) -> RankComparison:
    """Read a rank-by-rank comparison saved by `RankComparison.save` (or `lora-trace diff --json`)."""
    return from_document(read_document(path), KIND, RankComparison, source=os.fspath(path),
                         derived=("same_path", "divergent_ranks"))
