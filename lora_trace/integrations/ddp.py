"""DDP: gather every rank's run and say which rank took which path, and which LoRA parameters a rank
produced no gradient for (what DDP would blame as unused, one iteration late or as a hang).

`gather(diagnosis)` is a collective: every rank of the group calls it, after its traced step ended
normally. lora-trace never starts a collective by itself (not in a tracer's `__exit__`, not after an
exception), so a rank that raised cannot leave the others waiting in lora-trace. Runs travel as JSON
bytes in uint8 tensors (no pickle), with a bounded wait.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import torch
import torch.distributed as dist

from ..analysis.distributed import DistributedDiagnosis, load_distributed, unused_findings
from ..core.findings import Diagnosis
from ..core.serialize import diagnosis_from_dict, diagnosis_to_dict

DEFAULT_TIMEOUT = datetime.timedelta(seconds=120)


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


__all__ = ["DEFAULT_TIMEOUT", "DistributedDiagnosis", "gather", "load_distributed", "unused_findings"]
