"""DDP and FSDP2: gather every rank's run and say which rank took which path, and which LoRA parameters a
rank produced no gradient for (what DDP would blame as unused, one iteration late or as a hang). With FSDP2's
sharded parameters, each rank sees its shard only: the gather combines them (whole gradient norms, values
all zero across shards) and judges the step again with them.

`gather(diagnosis)` is a collective: every rank of the group calls it, after its traced step ended
normally. lora-trace never starts a collective by itself (not in a tracer's `__exit__`, not after an
exception), so a rank that raised cannot leave the others waiting in lora-trace. Runs travel as JSON
bytes in uint8 tensors (no pickle), with a bounded wait.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any

import torch
import torch.distributed as dist

from ..analysis.distributed import (
    DistributedDiagnosis,
    RankPlace,
    combine_shards,
    drift_findings,
    load_distributed,
    unused_findings,
)
from ..core.findings import Diagnosis, order_findings
from ..core.serialize import diagnosis_from_dict, diagnosis_to_dict

DEFAULT_TIMEOUT = datetime.timedelta(seconds=120)


def gather(diagnosis: Diagnosis, *, group: Any = None, timeout: datetime.timedelta = DEFAULT_TIMEOUT,
           model: Any = None) -> DistributedDiagnosis:
    """All-gather every rank's run (a collective: call it on every rank) and find what differs. With `model`
    (the model as trained, wrapped or not), also a checksum of every adapter parameter: values that differ
    between ranks after the step are `ddp-drift` (gradients not averaged)."""
    if not dist.is_available() or not dist.is_initialized():
        return DistributedDiagnosis((diagnosis,), ())
    sharded = model is not None and _sharded(model)
    mine = {"run": diagnosis_to_dict(diagnosis), "place": _place(group)}
    payload = json.dumps(mine, allow_nan=False).encode("utf-8")
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
    everyone = [json.loads(bytes(b[: int(s.item())].cpu().tolist()).decode("utf-8"))
                for b, s in zip(buffers, sizes, strict=True)]
    ranks = tuple(diagnosis_from_dict(one["run"], source=f"rank {rank}") for rank, one in enumerate(everyone))
    places = tuple(RankPlace(**one["place"]) for one in everyone)
    findings = unused_findings(ranks, sharded=sharded)
    if sharded:  # one copy, sharded: nothing to drift apart, and each rank holds a part of every answer
        shards, combined = combine_shards(ranks)
        findings = order_findings([*findings, *(f for f in combined.findings if f.severity == "error")])
        return DistributedDiagnosis(ranks, findings, places, shards, combined)
    if model is not None:
        checksums = _gather_checksums(model, device, world, group, timeout)
        findings = order_findings([*findings, *drift_findings(ranks, checksums, _wrapped(model))])
    return DistributedDiagnosis(ranks, findings, places)


def _place(group: Any) -> dict[str, Any]:
    """Where this rank runs, as torchrun says it (GROUP_RANK is the node's rank, LOCAL_RANK the process's)."""
    def number(key: str) -> int | None:
        value = os.environ.get(key, "")
        return int(value) if value.isdigit() else None

    return {"rank": dist.get_rank(group), "node": number("GROUP_RANK"), "local_rank": number("LOCAL_RANK"),
            "host": socket.gethostname()}



def _gather_checksums(model: Any, device: torch.device, world: int, group: Any, timeout: datetime.timedelta
                      ) -> list[list[list[float]]]:
    """Each rank's (sum, sum of squares) per adapter parameter, in discovery order; [] when the ranks hold
    different numbers of adapter parameters."""
    from ..capture.discovery import discover

    params = [p for _, p in discover(model).lora_params()]
    with torch.no_grad():
        mine = torch.stack([torch.stack([p.double().sum(), p.double().pow(2).sum()]) for p in params]).to(device) \
            if params else torch.zeros(0, 2, dtype=torch.float64, device=device)
    count = torch.tensor([len(params)], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    _wait(dist.all_gather(counts, count, group=group, async_op=True), timeout, "adapter counts")
    if any(int(c.item()) != len(params) for c in counts):
        return []
    sums = [torch.zeros_like(mine) for _ in range(world)]
    _wait(dist.all_gather(sums, mine, group=group, async_op=True), timeout, "adapter checksums")
    return [s.cpu().tolist() for s in sums]


def _sharded(model: Any) -> bool:
    """FSDP (FSDP1's flat parameters, or FSDP2's DTensors): each rank holds its shard, not a replica."""
    module = getattr(model, "module", model)
    return type(model).__name__ == "FullyShardedDataParallel" or any(
        hasattr(p, "to_local") for p in module.parameters())


def _wrapped(model: Any) -> bool:
    """DDP / DataParallel around it, or FSDP (its own class, or parameters sharded as DTensors)."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return True
    name = type(model).__name__
    if name.startswith("FSDP") or name == "FullyShardedDataParallel":  # fully_shard's FSDP<cls>, or FSDP1
        return True
    return any(hasattr(p, "to_local") for p in model.parameters())


def _device(group: Any) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _wait(work: Any, timeout: datetime.timedelta, what: str) -> None:
    if not work.wait(timeout):
        raise TimeoutError(f"lora-trace: gathering {what} across ranks took longer than {timeout}; "
                           "did every rank call lora_trace.integrations.ddp.gather()?")


__all__ = ["DEFAULT_TIMEOUT", "DistributedDiagnosis", "gather", "load_distributed", "unused_findings"]
