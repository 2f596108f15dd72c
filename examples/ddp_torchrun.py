"""Trace one DDP step on every rank and gather the runs on all ranks.

Run (CPU, gloo, 2 processes):
    .venv/bin/torchrun --standalone --nproc-per-node 2 examples/ddp_torchrun.py --out out/ddp
Add --diverge to make rank 1 skip the second LoRA block, as a data-dependent branch would: the report
then names rank 1 and the LoRA parameters it produced no gradient for (`ddp-unused`). Add --late-adapter to
make block1's adapter trainable only after DDP wrapped the model: DDP never averages its gradients, the
replicas drift, and the gathered checksums say so (`ddp-drift`).

Gradient accumulation: --accumulate K traces one window of K micro-steps, the first K-1 under
`model.no_sync()` and the last synchronised, then the optimizer step; --static-graph and
--find-unused {true,false} construct DDP with those options.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace
from lora_trace.integrations import ddp


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Linear(8, 8)
        self.block2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, skip_block2: bool = False) -> torch.Tensor:
        hidden = torch.relu(self.block1(x))
        if not skip_block2:  # a data-dependent branch: ranks see different batches
            hidden = torch.relu(self.block2(hidden))
        return self.head(hidden).pow(2).mean()


def train_and_gather(args: argparse.Namespace, rank: int) -> None:
    """The traced window and the gather; the model and optimizer are freed when it returns."""
    torch.manual_seed(0)
    model = get_peft_model(TwoBlocks(), LoraConfig(r=2, target_modules=["block1", "block2"]))
    late = [p for n, p in model.named_parameters() if "block1.lora_" in n] if args.late_adapter else []
    for param in late:
        param.requires_grad_(False)
    model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=args.find_unused == "true",
                                                static_graph=args.static_graph)
    for param in late:
        param.requires_grad_(True)  # after wrapping: DDP does not reduce its gradient
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batches = torch.randn(args.accumulate, 4, 8, generator=torch.Generator().manual_seed(rank))
    for _ in range(args.warmup):  # synchronised steps before the traced window
        model(batches[0]).backward()
        optimizer.step()
        optimizer.zero_grad()

    with lora_trace.trace(model, optimizer=optimizer, label=f"rank{rank}") as tracer:
        for index, x in enumerate(batches):
            last = index == len(batches) - 1  # only the window's last backward all-reduces
            with contextlib.nullcontext() if last else model.no_sync():
                loss = model(x, skip_block2=args.diverge and rank == 1) / len(batches)
                loss.backward()
        optimizer.step()
    everyone = ddp.gather(tracer.diagnosis, model=model)  # a collective: every rank calls it
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        everyone.save(os.path.join(args.out, "ddp-run.json"))
        print(everyone.report())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/ddp")
    parser.add_argument("--diverge", action="store_true")
    parser.add_argument("--late-adapter", action="store_true")
    parser.add_argument("--accumulate", type=int, default=1, metavar="K")
    parser.add_argument("--static-graph", action="store_true")
    parser.add_argument("--warmup", type=int, default=0, metavar="N", help="synchronised steps before the trace")
    parser.add_argument("--find-unused", choices=("true", "false"), default="true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    try:
        train_and_gather(args, dist.get_rank())
        dist.barrier()
    finally:  # the DDP model is gone by now: freed after the process group, it can hang gloo's teardown
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
