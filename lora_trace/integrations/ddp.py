"""DDP: gather every rank's run and say which rank took which path, and which LoRA parameters a rank
produced no gradient for (what DDP would blame as unused, one iteration late or as a hang).

`gather(diagnosis)` is a collective: every rank of the group calls it, after its traced step ended
normally. lora-trace never starts a collective by itself (not in a tracer's `__exit__`, not after an
exception), so a rank that raised cannot leave the others waiting in lora-trace. Runs travel as JSON
bytes in uint8 tensors (no pickle), with a bounded wait.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..analysis.facts import Facts
from ..core.findings import Code, Diagnosis, Finding, Severity, make_finding, order_findings
from ..core.messages import join, text
from ..core.regions import short_name
from ..core.serialize import diagnosis_from_dict, diagnosis_to_dict

DEFAULT_TIMEOUT = datetime.timedelta(seconds=120)


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

    def save(self, path: str) -> None:
        data = {"kind": "lora-trace.distributed", "schema_version": 1,
                "findings": [dataclasses.asdict(f) for f in self.findings],
                "ranks": [diagnosis_to_dict(d) for d in self.ranks]}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=1, default=list)


def gather(diagnosis: Diagnosis, *, group: Any = None, timeout: datetime.timedelta = DEFAULT_TIMEOUT
           ) -> DistributedDiagnosis:
    """All-gather every rank's run (a collective: call it on every rank) and find what differs."""
    if not dist.is_available() or not dist.is_initialized():
        return DistributedDiagnosis((diagnosis,), ())
    payload = json.dumps(diagnosis_to_dict(diagnosis), allow_nan=False).encode("utf-8")
    device = _device(group)
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    _wait(dist.all_gather(sizes, size, group=group, async_op=True), timeout, "sizes")
    longest = int(max(s.item() for s in sizes))
    mine = torch.zeros(longest, dtype=torch.uint8, device=device)
    mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    buffers = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    _wait(dist.all_gather(buffers, mine, group=group, async_op=True), timeout, "runs")
    ranks = tuple(diagnosis_from_dict(json.loads(bytes(b[: int(s.item())].cpu().tolist()).decode("utf-8")),
                                      source=f"rank {rank}")
                  for rank, (b, s) in enumerate(zip(buffers, sizes, strict=True)))
    return DistributedDiagnosis(ranks, unused_findings(ranks))


def _device(group: Any) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _wait(work: Any, timeout: datetime.timedelta, what: str) -> None:
    if not work.wait(timeout):
        raise TimeoutError(f"lora-trace: gathering {what} across ranks took longer than {timeout}; "
                           "did every rank call lora_trace.integrations.ddp.gather()?")


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
    parts = []
    for rank, params in sorted(missing.items()):
        shown = ", ".join(short_name(p) for p in params[:4]) + (f" and {len(params) - 4} more" if len(params) > 4
                                                                 else "")
        parts.append(f"rank {rank}: {len(params)} ({shown})")
    message = join(text("ddp-unused", parts="; ".join(parts)),
                   text("ddp-unused.divergent", ranks=sorted(divergent)) if divergent else text("ddp-unused.none"))
    module_of = {m: p for d in ranks for p, m in Facts(d.trace).module_of.items()}
    modules = tuple(sorted({module_of[p] for params in missing.values() for p in params if p in module_of}))
    finding = make_finding(Code.DDP_UNUSED, Severity.ERROR, message, text("ddp-unused.fix"), modules=modules,
                           evidence={"missing": {str(r): p for r, p in missing.items()},
                                     "divergent_ranks": sorted(divergent)})
    return order_findings([finding])
