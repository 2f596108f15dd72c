"""A DDP script (gloo, CPU) that knows nothing of lora-trace; `lora-trace run` diagnoses every rank unchanged:

    lora-trace run --out runs/ddp -- torchrun --standalone --nproc-per-node 2 examples/train_ddp.py --bug rank1-no-grad

Each rank's run lands in runs/ddp/rank-<R>/, and the gathered view (runs/ddp/gathered.json) is printed.
--bug rank1-no-grad runs rank 1's forward under torch.no_grad() (a rank-dependent evaluation branch left on):
rank 1's LoRA parameters get no gradient of their own, which only the ranks together show.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime

import tiny
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "rank1-no-grad"), default="none")
    args = parser.parse_args(argv)
    # A short timeout: with the planted bug rank 0's backward waits for gradients rank 1 never sends.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=15))
    rank = dist.get_rank()
    model = DistributedDataParallel(tiny.lora_model())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for ids in tiny.token_rows(4, seed=rank).split(2):
        grad_off = args.bug == "rank1-no-grad" and rank == 1
        with torch.no_grad() if grad_off else contextlib.nullcontext():
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        if loss.requires_grad:
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    del model, optimizer  # before the process group goes: a DDP model freed after it can hang gloo's teardown
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} trained")


if __name__ == "__main__":
    main()
