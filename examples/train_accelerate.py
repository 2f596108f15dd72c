"""An Accelerate training loop that knows nothing of lora-trace; `lora-trace run` diagnoses it unchanged
(tested with `python`; `accelerate launch` starts Python processes the same way, but is not tested here):

    lora-trace run --out runs/accelerate -- python examples/train_accelerate.py --bug not-in-optimizer

--bug not-in-optimizer builds the optimizer before get_peft_model added the adapter (a common ordering slip):
the LoRA parameters get gradients but the optimizer never updates them (lora-not-in-optimizer).
"""

from __future__ import annotations

import argparse

import tiny
import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "not-in-optimizer"), default="none")
    args = parser.parse_args(argv)
    if args.bug == "not-in-optimizer":
        torch.manual_seed(0)
        base = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                            num_key_value_heads=2, intermediate_size=64, vocab_size=tiny.VOCAB))
        optimizer = torch.optim.AdamW(base.lm_head.parameters(), lr=1e-3)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        base.lm_head.requires_grad_(True)
    else:
        model = tiny.lora_model()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    accelerator = Accelerator(cpu=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tiny.token_rows(8)), batch_size=2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for step, (ids,) in enumerate(loader):
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if step == 1:
            break
    print("trained")


if __name__ == "__main__":
    main()
