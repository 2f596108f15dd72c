"""Trace one FSDP2 step (`fully_shard` per block, parameters sharded as DTensors) on every rank and gather.

Run (CPU, gloo; 2 or 4 processes):
    .venv/bin/torchrun --standalone --nproc-per-node 2 examples/fsdp_torchrun.py --out out/fsdp
Each rank sees only its shard of every adapter parameter: "did it get a gradient" and "is lora_B still zero"
are answered by the explicit `ddp.gather(..., model=model)`, which combines the shards. The step is run once
per --fault given (default: all of none, no-grad, frozen), each on a fresh model, one gathered file each:
    none     healthy
    no-grad  every rank runs the second block under torch.no_grad()
    frozen   the second block's adapter is frozen
    late     the second block's adapter is made trainable only after fully_shard (under DDP its replicas
             would drift apart; FSDP2 reduces whatever requires grad at backward: no drift, no finding)
    skip     rank 1 skips the second block, as a data-dependent branch would. FSDP2 then waits for rank 1
             in a collective that never comes: the step fails at the process group's timeout (--timeout)
             on every rank, and each rank's own report (rank-N.json) says which adapter layers it ran.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.distributed.fsdp import fully_shard

import lora_trace
from lora_trace.integrations import ddp

FAULTS = ("none", "no-grad", "frozen", "late")


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3))
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, fault: str = "none") -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            if index == 1 and fault == "skip":  # a data-dependent branch: ranks see different batches
                continue
            if index == 1 and fault == "no-grad":
                with torch.no_grad():  # fault: no-grad
                    x = block(x)
            else:
                x = block(x)
        return self.head(x).pow(2).mean()


def sharded_model(fault: str) -> nn.Module:
    torch.manual_seed(0)
    model = get_peft_model(Blocks(), LoraConfig(r=2, target_modules=["blocks.0.0", "blocks.1.0", "blocks.2.0"]))
    second = [p for n, p in model.named_parameters() if "blocks.1.0.lora_" in n]
    for param in second if fault in ("frozen", "late") else ():
        param.requires_grad_(False)
    for block in model.base_model.model.blocks:
        fully_shard(block)  # one FSDP unit per block, as transformers blocks are sharded
    fully_shard(model)
    if fault == "late":  # after sharding (the parameters are DTensors now)
        for name, param in model.named_parameters():
            if "blocks.1.0.lora_" in name:
                param.requires_grad_(True)
    return model


def run(fault: str, rank: int, out: str) -> None:
    model = sharded_model(fault)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(rank))
    try:
        with lora_trace.trace(model, optimizer=optimizer, label=f"rank{rank}") as tracer:
            loss = model(x, fault="none" if fault == "skip" and rank != 1 else fault)
            loss.backward()
            optimizer.step()
    finally:  # the rank's own run, also when the step raised (no collective here)
        if tracer.built:
            tracer.diagnosis.save(os.path.join(out, f"{fault}.rank-{rank}.json"))
    everyone = ddp.gather(tracer.diagnosis, model=model)  # a collective: every rank calls it
    truth = {n: float(p.grad.full_tensor().norm()) for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:  # truth: each gradient's whole norm, gathered by FSDP itself (for the tests)
        with open(os.path.join(out, f"{fault}.truth.json"), "w") as handle:
            json.dump(truth, handle)
        everyone.save(os.path.join(out, f"{fault}.json"))
        print(f"== {fault}\n{everyone.report()}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/fsdp")
    parser.add_argument("--fault", action="append", choices=(*FAULTS, "skip"))
    parser.add_argument("--timeout", type=float, default=60.0, help="the process group's timeout, seconds")
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.timeout))
    rank = dist.get_rank()
    os.makedirs(args.out, exist_ok=True)
    try:
        for fault in args.fault or FAULTS:
            run(fault, rank, args.out)
        # FSDP's modules and their pending gloo work sit in reference cycles: freed at interpreter exit, after
        # the process group, a gloo thread aborted the rank ("terminate called") in about 1 launch of 12
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
