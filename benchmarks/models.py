"""The models the benchmarks run, each built from transformers configs (random weights, nothing downloaded).

Why these three families:
- "medium": the project's own scenario (`contrastive_qwen2_audio(size="medium", strategy="full_forward")`),
  the motivating contrastive Qwen2-Audio model at a size where a step takes a fraction of a second.
- "narrow-N": the same contrastive Qwen2-Audio layout, made deep and narrow (N audio-encoder layers and N
  language-model layers, hidden size 64) with the guide's `target_modules` list, encoded by the full
  forward so every LoRA layer runs. PEFT then adapts q/k/v in each audio layer (3) and q/k/v/o/gate/up/
  down in each LM layer (7): exactly 10 * N LoRA modules (N=32 gives the 320 of Qwen2-Audio-7B). The text
  tower carries no LoRA, so the count stays exact. Per-module cost of hooks shows most on such a model:
  many small layers, little arithmetic each.
- "qwen2-16": a plain PEFT Qwen2 causal LM, hidden 256, 8 layers, LoRA on q_proj/v_proj (16 LoRA
  modules), a batch of 8 x 128 tokens. A model every comparison tool can take as-is (one tensor in, a
  loss out), so torchviz, torchview, TorchLens and anomaly mode run on the very same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Bench:
    """A model and its step: `step(model) -> loss` (no backward). `forward_args` for tools that call the
    model themselves (TorchLens, torchview): `model(*forward_args)` returns the same loss."""

    name: str
    description: str
    model: nn.Module
    step: Callable[[nn.Module], torch.Tensor]
    forward_args: tuple[Any, ...] = ()
    lora_modules: int = 0


def count_lora_modules(model: nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def medium() -> Bench:
    from lora_trace.scenarios import contrastive_qwen2_audio

    scenario = contrastive_qwen2_audio(size="medium", strategy="full_forward")
    return Bench("medium", "contrastive_qwen2_audio(size='medium', strategy='full_forward')",
                 scenario.model, scenario.step, (scenario.batch,), count_lora_modules(scenario.model))


def narrow(layers: int, *, seed: int = 0) -> Bench:
    """Contrastive Qwen2-Audio, `layers` audio + `layers` LM layers, hidden 64, seed-list LoRA: 10*layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2Config, Qwen2Model

    from lora_trace.scenarios.contrastive_model import (
        FULL_FORWARD,
        ContrastiveQwen2AudioModel,
        Qwen2AudioSpeechEncoder,
        Qwen2TextEncoder,
    )
    from lora_trace.scenarios.qwen2_audio import AUDIO_TOKEN, SEED_LIST, quiet_transformers

    torch.manual_seed(seed)
    audio_positions, mel_bins, vocab, batch_size, text_len = 32, 16, 512, 4, 16
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=64, encoder_layers=layers, encoder_attention_heads=2, encoder_ffn_dim=128,
                          num_mel_bins=mel_bins, max_source_positions=audio_positions),
        text_config=dict(hidden_size=64, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=vocab),
        audio_token_index=AUDIO_TOKEN,
    )
    config._attn_implementation = "eager"
    text_config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                              intermediate_size=64, vocab_size=128)
    text_config._attn_implementation = "eager"
    with quiet_transformers():
        speech = get_peft_model(Qwen2AudioForConditionalGeneration(config),
                                LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=SEED_LIST))
        text = Qwen2Model(text_config).requires_grad_(False)  # a frozen text tower, no LoRA
        model = ContrastiveQwen2AudioModel(
            Qwen2AudioSpeechEncoder(speech, strategy=FULL_FORWARD), Qwen2TextEncoder(text),
            speech_dim=64, text_dim=32, proj_dim=32,
        )
    model.train()
    generator = torch.Generator().manual_seed(seed)
    audio_tokens = (audio_positions - 2) // 2 + 1
    prompt = torch.randint(10, vocab, (batch_size, 4), generator=generator)
    speech_ids = torch.cat([prompt[:, :2], torch.full((batch_size, audio_tokens), AUDIO_TOKEN), prompt[:, 2:]], 1)
    text_ids = torch.randint(10, 128, (batch_size, text_len), generator=generator)
    data = {
        "input_features": torch.randn(batch_size, mel_bins, 2 * audio_positions, generator=generator),
        "feature_attention_mask": torch.ones(batch_size, 2 * audio_positions, dtype=torch.long),
        "speech_input_ids": speech_ids,
        "speech_attention_mask": torch.ones_like(speech_ids),
        "text_input_ids": text_ids,
        "text_attention_mask": torch.ones_like(text_ids),
    }

    def step(m: nn.Module) -> torch.Tensor:
        return m(data)

    n_lora = count_lora_modules(model)
    return Bench(f"narrow-{layers}", f"contrastive Qwen2-Audio, {layers}+{layers} layers, hidden 64, seed-list LoRA "
                 f"({n_lora} LoRA modules), full forward, batch {batch_size}", model, step, (data,), n_lora)


class _CausalLMLoss(nn.Module):
    """`forward(input_ids) -> loss`: one tensor in, the loss out, the form every comparison tool takes."""

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.lm = peft_model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, labels=input_ids).loss


def qwen2_16(*, seed: int = 0) -> Bench:
    """PEFT Qwen2 causal LM: hidden 256, 8 layers, LoRA r=8 on q_proj/v_proj (16 modules), 8 x 128 tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lora_trace.scenarios.qwen2_audio import quiet_transformers

    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=4,
                         intermediate_size=1024, vocab_size=2048)
    config._attn_implementation = "eager"
    with quiet_transformers():
        peft_model = get_peft_model(Qwen2ForCausalLM(config),
                                    LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model = _CausalLMLoss(peft_model).train()
    ids = torch.randint(0, config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(seed))

    def step(m: nn.Module) -> torch.Tensor:
        return m(ids)

    n_lora = count_lora_modules(model)
    return Bench("qwen2-16", f"PEFT Qwen2ForCausalLM, hidden 256, 8 layers, LoRA r=8 on q_proj/v_proj "
                 f"({n_lora} LoRA modules), 8 x 128 tokens", model, step, (ids,), n_lora)


BUILDERS: dict[str, Callable[[], Bench]] = {"medium": medium, "narrow-32": lambda: narrow(32), "qwen2-16": qwen2_16}


def build(name: str) -> Bench:
    """A model by name: "medium", "qwen2-16", or "narrow-N" for any N."""
    if name.startswith("narrow-"):
        return narrow(int(name.split("-", 1)[1]))
    if name not in BUILDERS:
        raise ValueError(f"unknown benchmark model {name!r}; one of: medium, narrow-N, qwen2-16")
    return BUILDERS[name]()
