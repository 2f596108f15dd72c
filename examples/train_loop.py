"""A plain PyTorch training loop that knows nothing of lora-trace; `lora-trace run` diagnoses it unchanged:

    lora-trace run --out runs/loop -- python examples/train_loop.py --bug frozen-layer --save out/adapter
    lora-trace inspect out/adapter          # the saved adapter alone says which LoRA layers never trained

--bug frozen-layer freezes layer 1's LoRA parameters (as a partial `requires_grad_(False)` loop would):
lora-trace names them, and the saved adapter shows their lora_B still all zero.
--bug detach computes the loss from detached logits: backward raises; `lora-trace run --deep` names the line.
"""

from __future__ import annotations

import argparse

import tiny
import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "frozen-layer", "detach"), default="none")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--save", metavar="DIR", help="save the adapter there after training")
    args = parser.parse_args(argv)
    model = tiny.lora_model()
    if args.bug == "frozen-layer":
        for name, param in model.named_parameters():
            if "layers.1." in name and "lora_" in name:
                param.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for ids in tiny.token_rows(2 * args.steps).split(2):
        logits = model(input_ids=ids).logits
        if args.bug == "detach":
            logits = logits.detach()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if args.save:
        model.save_pretrained(args.save)
    print(f"trained {args.steps} steps")


if __name__ == "__main__":
    main()
