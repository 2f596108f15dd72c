"""The tiny model the `train_*.py` examples share: a Qwen2 causal LM built from a config (random weights,
no download) with LoRA on q_proj and v_proj, and random token batches. None of it knows lora-trace."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB = 64


def lora_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=VOCAB)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def token_rows(count: int, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (count, length), generator=torch.Generator().manual_seed(seed))
