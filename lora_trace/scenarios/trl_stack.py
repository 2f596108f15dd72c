"""The pieces of a TRL fine-tune, built offline: a byte-level BPE tokenizer trained on a few sentences, a tiny
Qwen2 causal LM from a config (random weights), and the datasets SFTTrainer, DPOTrainer and GRPOTrainer read.

Nothing is downloaded and trl is not imported here: the tests and examples that drive the trainers import it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from .qwen2_audio import quiet_transformers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
# ChatML, so conversational datasets work too; TRL's plain-text datasets ("text", "prompt"...) do not need it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SENTENCES = (
    "The adapter learns when the gradient reaches it.",
    "A frozen adapter never changes its weights.",
    "Low rank updates are added to the attention projections.",
    "The reference model scores the chosen and the rejected answer.",
    "Reward the short answers and punish the long ones.",
    "What is two plus two? Four.",
    "Name a colour of the sky. Blue.",
    "Which animal barks? A dog.",
)
PAIRS = (  # (prompt, chosen, rejected)
    ("What is two plus two?", " Four.", " Five."),
    ("Name a colour of the sky.", " Blue.", " Green."),
    ("Which animal barks?", " A dog.", " A cat."),
    ("What does a frozen adapter do?", " Nothing.", " It learns."),
)


def tiny_tokenizer(*, vocab_size: int = 320) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `SENTENCES` (every byte is in its alphabet, so no
    text is unknown). `<|endoftext|>` is BOS and EOS, `<|pad|>` pads on the left (as generation wants)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(SENTENCES + tuple(" ".join(pair) for pair in PAIRS), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", unk_token="<|endoftext|>", padding_side="left",
                                   chat_template=CHAT_TEMPLATE, model_max_length=64)


def tiny_qwen2(tokenizer: Any, *, seed: int = 0) -> nn.Module:
    """A `Qwen2ForCausalLM` with random weights, 2 layers of width 32 and the tokenizer's vocabulary; its token ids
    and generation config follow the tokenizer, so `generate()` stops and pads as TRL expects."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    with quiet_transformers():
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def sft_dataset(*, rows: int = 8) -> Any:
    """A language-modelling dataset ("text" column) for `SFTTrainer`."""
    from datasets import Dataset

    return Dataset.from_dict({"text": [SENTENCES[i % len(SENTENCES)] for i in range(rows)]})


def preference_dataset(*, rows: int = 8) -> Any:
    """A preference dataset ("prompt", "chosen", "rejected" strings) for `DPOTrainer`."""
    from datasets import Dataset

    picked = [PAIRS[i % len(PAIRS)] for i in range(rows)]
    return Dataset.from_dict({"prompt": [p for p, _, _ in picked], "chosen": [c for _, c, _ in picked],
                              "rejected": [r for _, _, r in picked]})


def prompt_dataset(*, rows: int = 8) -> Any:
    """A prompt-only dataset ("prompt" strings) for `GRPOTrainer`, which generates the completions itself."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [PAIRS[i % len(PAIRS)][0] for i in range(rows)]})


def score_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """A GRPO reward that tells any two different completions apart, as a reward model's score does: the mean
    UTF-8 byte of the completion, scaled to [0, 1]. (A length reward is not enough here: the tiny model's
    byte-level tokens are mostly one character each, so every completion of `max_completion_length` tokens has
    the same length and the same reward.)"""
    encoded = [completion.encode("utf-8") for completion in completions]
    return [sum(data) / (255.0 * max(len(data), 1)) for data in encoded]


def format_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """A GRPO format reward that an untrained model never earns: 1.0 for an `<answer>...</answer>` completion,
    else 0.0. Every completion of a group gets the same reward, so every advantage, and with `beta=0` the whole
    policy gradient, is exactly zero: the adapter does not learn from the batch."""
    return [1.0 if re.fullmatch(r"\s*<answer>.*</answer>\s*", completion, re.DOTALL) else 0.0
            for completion in completions]
