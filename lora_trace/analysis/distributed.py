"""Runs of several ranks together: which rank took which LoRA path, and which trainable LoRA parameters a
rank produced no gradient for (what DDP would blame as unused). Torch-free: the collective that gathers
the runs lives in `lora_trace.integrations.ddp`; a saved distributed run loads and reads anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core.findings import Code, Diagnosis, Finding, Severity, make_finding, order_findings
from ..core.messages import join, listing, series, text
from ..core.serialize import from_document, read_document, to_document, write_document
from .facts import Facts

KIND = "lora-trace.distributed"


@dataclass(frozen=True)
class DistributedDiagnosis:
    """Every rank's diagnosis, and the findings that only the ranks together show."""

    ranks: tuple[Diagnosis, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings) and all(d.ok for d in self.ranks)

    @property
    def divergent_ranks(self) -> tuple[int, ...]:
        paths = [_trained(d) for d in self.ranks]
        return tuple(rank for rank, path in enumerate(paths) if path != paths[0])

    def report(self, lang: str = "en") -> str:
        lines = [f"lora-trace: {len(self.ranks)} ranks" + ("" if not self.divergent_ranks else
                 f"; ranks {list(self.divergent_ranks)} took a different LoRA path than rank 0")]
        for finding in self.findings:
            message, fix = finding.text(lang)
            lines += [f"[{finding.severity}] {finding.code}", f"  {message}", f"  Fix: {fix}"]
        lines += ["", "Rank 0:", self.ranks[0].report(lang=lang)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def to_dict(self) -> dict[str, Any]:
        return to_document(KIND, self)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_document(self.to_dict(), path)


def _trained(diagnosis: Diagnosis) -> frozenset[str]:
    return frozenset(Facts(diagnosis.trace).trained_modules)


def unused_findings(ranks: tuple[Diagnosis, ...]) -> tuple[Finding, ...]:
    """ddp-unused: trainable LoRA parameters some rank produced no gradient for, with the ranks named."""
    got = [{a.param for a in d.trace.arrivals} for d in ranks]
    trainable = set().union(*({p for s in d.trace.sites for p in s.trainable_params} for d in ranks))
    if not any(d.trace.backward for d in ranks):
        return ()
    missing = {rank: sorted(trainable - got[rank]) for rank in range(len(ranks)) if trainable - got[rank]}
    if not missing:
        return ()
    used_elsewhere = {rank: [p for p in params if any(p in got[o] for o in range(len(ranks)) if o != rank)]
                      for rank, params in missing.items()}
    divergent = {rank: params for rank, params in used_elsewhere.items() if params}
    parts = [text("ddp-unused.rank", rank=rank, count=len(params), params=listing(params))
             for rank, params in sorted(missing.items())]
    module_of = {p: m for d in ranks for p, m in Facts(d.trace).module_of.items()}
    modules = tuple(sorted({module_of[p] for params in missing.values() for p in params if p in module_of}))
    kind = Facts(ranks[0].trace).kind_of(modules)
    message = join(text("ddp-unused", parts=series(*parts), kind=kind),
                   text("ddp-unused.divergent", ranks=sorted(divergent)) if divergent else text("ddp-unused.none"))
    finding = make_finding(Code.DDP_UNUSED, Severity.ERROR, message, text("ddp-unused.fix", kind=kind),
                           modules=modules,
                           evidence={"missing": {str(r): p for r, p in missing.items()},
                                     "divergent_ranks": sorted(divergent)})
    return order_findings([finding])


def drift_findings(ranks: tuple[Diagnosis, ...], checksums: list[list[list[float]]], wrapped: bool
                   ) -> tuple[Finding, ...]:
    """ddp-drift: adapter parameters whose values differ between ranks after the step (a checksum per
    parameter, gathered explicitly): their gradients were not averaged, so the replicas drift apart."""
    names = [p.name for s in ranks[0].trace.sites for p in s.params]
    if not checksums or any(len(c) != len(names) for c in checksums):
        return ()  # the ranks hold different adapters: ddp-unused and the per-rank runs say more
    differing = sorted({names[i] for c in checksums[1:] for i, (a, b) in enumerate(zip(checksums[0], c, strict=True))
                        if a != b})  # each entry: [sum, sum of squares] of one parameter on one rank
    if not differing:
        return ()
    ranks_off = [r for r, c in enumerate(checksums) if r and c != checksums[0]]
    modules = Facts(ranks[0].trace).modules_of(differing)
    why = text("ddp-drift.unwrapped" if not wrapped else "ddp-drift.late")
    finding = make_finding(Code.DDP_DRIFT, Severity.ERROR,
                           join(text("ddp-drift", count=len(differing), ranks=ranks_off), why),
                           text("ddp-drift.fix"), modules=modules, regions=Facts(ranks[0].trace).regions_of(modules),
                           evidence={"params": differing, "ranks": ranks_off, "wrapped": wrapped})
    return (finding,)


def load_distributed(path: str | os.PathLike[str]) -> DistributedDiagnosis:
    """Read a distributed run saved by `DistributedDiagnosis.save`."""
    return from_document(read_document(path), KIND, DistributedDiagnosis, source=os.fspath(path))
