"""Runs of several ranks together: which rank took which LoRA path, which trainable LoRA parameters a
rank produced no gradient for (what DDP would blame as unused), and, for sharded parameters (FSDP2), the
answers no single rank has: each parameter's whole gradient norm and whether its value is all zero across
the shards. Torch-free: the collective that gathers the runs lives in `lora_trace.integrations.ddp`; a saved
distributed run loads and reads anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ..core.findings import Code, Diagnosis, Finding, Severity, make_finding, order_findings
from ..core.messages import join, listing, series, text
from ..core.serialize import from_document, read_document, to_document, write_document
from . import diagnose_trace
from .facts import Facts

KIND = "lora-trace.distributed"


@dataclass(frozen=True)
class RankPlace:
    """Where one rank ran: torchrun's node (group rank) and local rank, and the host."""

    rank: int
    node: int | None
    local_rank: int | None
    host: str

    def __str__(self) -> str:
        parts = [f"node {self.node}" if self.node is not None else "", f"local rank {self.local_rank}"
                 if self.local_rank is not None else "", self.host]
        return f"rank {self.rank} (" + ", ".join(p for p in parts if p) + ")"


@dataclass(frozen=True)
class ShardedParam:
    """One adapter parameter over every rank's shard (FSDP2): what no single rank can say."""

    name: str
    grad_norm: float | None  # of the whole gradient (the shards' norms combined); None: no rank got one
    ranks_with_grad: tuple[int, ...]  # arrived anywhere: non-empty; everywhere: every rank listed
    all_zero: bool | None  # the value, over every shard; None where a rank could not say


@dataclass(frozen=True)
class DistributedDiagnosis:
    """Every rank's diagnosis, and the findings that only the ranks together show."""

    ranks: tuple[Diagnosis, ...]
    findings: tuple[Finding, ...]
    places: tuple[RankPlace, ...] = ()  # where each rank ran, in rank order
    shards: tuple[ShardedParam, ...] = ()  # sharded models only: each adapter parameter across the shards
    combined: Diagnosis | None = None  # sharded models only: rank 0's step judged with every shard's values

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings) and all(d.ok for d in self.ranks) and (
            self.combined is None or self.combined.ok)

    @property
    def divergent_ranks(self) -> tuple[int, ...]:
        paths = [_trained(d) for d in self.ranks]
        return tuple(rank for rank, path in enumerate(paths) if path != paths[0])

    def report(self, lang: str = "en") -> str:
        nodes = {p.node for p in self.places if p.node is not None}
        lines = [f"lora-trace: {len(self.ranks)} ranks" + (f" on {len(nodes)} nodes" if len(nodes) > 1 else "")
                 + ("" if not self.divergent_ranks else
                    f"; ranks {list(self.divergent_ranks)} took a different LoRA path than rank 0")]
        lines += [f"  {place}" for place in self.places if len(nodes) > 1]
        for finding in self.findings:
            message, fix = finding.text(lang)
            lines += [f"[{finding.severity}] {finding.code}", f"  {message}", f"  Fix: {fix}"]
        if self.combined is not None:
            lines += ["", f"All {len(self.ranks)} shards together (gradient norms and values over every rank):",
                      self.combined.report(lang=lang)]
        else:
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


def unused_findings(ranks: tuple[Diagnosis, ...], *, sharded: bool = False) -> tuple[Finding, ...]:
    """ddp-unused: trainable LoRA parameters some rank produced no gradient for, with the ranks named. Sharded
    (FSDP2), only where the ranks differ: a parameter no rank used breaks no collective there, and the
    combined diagnosis names its cause."""
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
    if sharded and not divergent:
        return ()
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


def combine_shards(ranks: tuple[Diagnosis, ...]) -> tuple[tuple[ShardedParam, ...], Diagnosis]:
    """Each sharded parameter over all ranks, and rank 0's step judged again with those values: the whole
    gradient's norm (the root of the shards' squared norms), zero or not, finite or not; the value at the
    start all zero when every shard was; updated when any shard moved. The rules are the single-rank ones:
    nothing is decided twice."""
    base = ranks[0].trace
    seen: dict[str, dict[int, Any]] = {}
    for rank, diagnosis in enumerate(ranks):
        for arrival in diagnosis.trace.arrivals:
            seen.setdefault(arrival.param, {})[rank] = arrival
    flags: dict[str, list[bool | None]] = {}
    for diagnosis in ranks:
        for site in diagnosis.trace.sites:
            for param in site.params:
                flags.setdefault(param.name, []).append(param.shard_zero)
    all_zero = {name: all(f) for name, f in flags.items() if len(f) == len(ranks) and None not in f}
    arrivals, shards = [], []
    for site in base.sites:
        for param in site.params:
            on = seen.get(param.name, {})
            norms = [a.norm for a in on.values()]
            norm = None if not on or None in norms else math.sqrt(sum(n * n for n in norms))
            shards.append(ShardedParam(param.name, norm, tuple(sorted(on)), all_zero.get(param.name)))
            if on:
                arrivals.append(dataclasses.replace(
                    next(iter(on.values())), count=max(a.count for a in on.values()), norm=norm, shard=False,
                    zero=None if norm is None else norm == 0.0, finite=None if norm is None else math.isfinite(norm)))
    sites = tuple(dataclasses.replace(site, params=tuple(
        dataclasses.replace(p, all_zero=all_zero.get(p.name, p.all_zero)) for p in site.params)) for site in base.sites)
    optimizer = base.optimizer
    if optimizer is not None and all(d.trace.optimizer and d.trace.optimizer.updated is not None for d in ranks):
        moved = sorted({n for d in ranks for n in d.trace.optimizer.updated})
        optimizer = dataclasses.replace(optimizer, updated=tuple(moved))
    whole = dataclasses.replace(base, sites=sites, arrivals=tuple(sorted(arrivals, key=lambda a: a.param)),
                                optimizer=optimizer, label="all shards")
    return tuple(shards), diagnose_trace(whole)


def load_distributed(path: str | os.PathLike[str]) -> DistributedDiagnosis:
    """Read a distributed run saved by `DistributedDiagnosis.save`."""
    return from_document(read_document(path), KIND, DistributedDiagnosis, source=os.fspath(path))
