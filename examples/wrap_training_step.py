"""Wrap one real training step of your own loop in lora_trace.trace(); read the diagnosis afterwards.

Run: .venv/bin/python examples/wrap_training_step.py [--detach]
The model is a tiny Qwen2 with LoRA, trained on a contrastive-style objective over mean-pooled hidden
states. --detach reproduces a common bug (pooled features detached before the head): the default trace
reports lora-off-path, and the deep trace names the line of the `.detach()`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2Model

import lora_trace


def main(argv: list[str] | None = None) -> lora_trace.Diagnosis:
    parser = argparse.ArgumentParser()
    parser.add_argument("--detach", action="store_true", help="reproduce a detached path")
    parser.add_argument("--deep", action="store_true", help="trace in deep mode (finds the cutting line)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2Model(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    head = torch.nn.Linear(32, 16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad] + list(head.parameters()),
                                  lr=1e-3)
    ids = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(0))

    with lora_trace.trace(model, optimizer=optimizer, deep=args.deep, label="my-step") as tracer:
        pooled = model(input_ids=ids).last_hidden_state.mean(dim=1)
        if args.detach:
            pooled = pooled.detach()
        embeddings = F.normalize(head(pooled), dim=-1)
        logits = embeddings @ embeddings.roll(1, dims=0).T / 0.1
        loss = F.cross_entropy(logits, torch.arange(4))
        loss.backward()
        optimizer.step()
    print(tracer.diagnosis)
    return tracer.diagnosis


if __name__ == "__main__":
    main()
