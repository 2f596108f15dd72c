"""Diagnose the first step of a Hugging Face Trainer run, on a tiny Qwen2 with LoRA (CPU, no downloads).

Run: .venv/bin/python examples/hf_trainer.py --out out/trainer
The run and its graph land in <out>/lora-trace/step-0.json and step-0.svg. --freeze-lora reproduces an
adapter loaded without is_trainable=True: the callback reports lora-frozen and stops training.
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

from lora_trace.integrations import LoraTraceCallback


def build(freeze_lora: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    if freeze_lora:
        model.requires_grad_(False)
    return model


def main(argv: list[str] | None = None) -> LoraTraceCallback:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/trainer")
    parser.add_argument("--freeze-lora", action="store_true")
    args = parser.parse_args(argv)
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    callback = LoraTraceCallback(stop_on_error=True)
    training = TrainingArguments(output_dir=args.out, max_steps=3, per_device_train_batch_size=2, report_to=[],
                                 use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    model = build(args.freeze_lora)
    if args.freeze_lora:  # a frozen adapter leaves the optimizer nothing to hold: give it the head to train
        model.base_model.model.lm_head.requires_grad_(True)
    Trainer(model=model, args=training, train_dataset=dataset, callbacks=[callback]).train()
    for step, diagnosis in callback.diagnoses:
        print(f"step {step}: {'ok' if diagnosis.ok else ', '.join(diagnosis.codes('error'))}")
    return callback


if __name__ == "__main__":
    main()
