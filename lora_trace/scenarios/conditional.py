"""Real transformers models that skip parts of themselves on purpose, each with a healthy and a broken twin.

- "moe": a sparse SwitchTransformers encoder; tokens are routed to some experts only. Broken: a router bias
  that never selects expert 3 (a collapsed router).
- "layerdrop": Qwen2-Audio whose audio encoder drops layers in training (`encoder_layerdrop=0.5`). Broken: a
  rate of 1.0, so no audio layer ever runs.
- "text-only": Qwen2-Audio fed text-only batches every other step, so the audio tower runs on some steps.
  Broken: a collator that never passes the audio.

On one step every twin is healthy (the model's own choice); across steps the broken twin starves adapters.
`step` draws the next batch each call (and seeds the RNG from the step number, as a data loader would), so a
K-step judgement sees the same batches as the truth, which is measured with a real backward per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import ExpectedFinding, Scenario, Truth
from .qwen2_audio import AUDIO_TOKEN, quiet_transformers, qwen2_audio_config

CONDITIONAL_KINDS = ("moe", "layerdrop", "text-only")
STEPS = 6


def conditional_model(kind: str, *, broken: bool = False, steps: int = STEPS, seed: int = 0) -> Scenario:
    """A model of `kind` and a step over `steps` cycling batches; the truth holds the adapter parameters that
    get a gradient in at least one of the steps (real backward), and the error a K-step judgement reports."""
    if kind not in CONDITIONAL_KINDS:
        raise ValueError(f"kind={kind!r} is not one of: {', '.join(CONDITIONAL_KINDS)}")
    torch.manual_seed(seed)
    with quiet_transformers():
        model, batches, call = _BUILDERS[kind](broken, steps, seed)
    adapter = {n: p for n, p in model.named_parameters() if p.requires_grad}  # get_peft_model froze the rest
    grad_params = _gradients_over_steps(model, batches, call, seed, adapter)
    expected = (ExpectedFinding("lora-bypassed", "error", ()),) if broken else ()
    truth = Truth(frozenset(adapter), grad_params, frozenset(), expected)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return Scenario(f"{kind}/{'broken' if broken else 'healthy'}", model, _cycling(batches, call, seed), optimizer,
                    truth, {"kind": kind, "broken": broken, "steps": steps})


def _cycling(batches: list[dict], call: Callable[[nn.Module, dict], torch.Tensor], seed: int
             ) -> Callable[[nn.Module], torch.Tensor]:
    counter = itertools.count()

    def step(model: nn.Module) -> torch.Tensor:
        index = next(counter)
        torch.manual_seed(seed * 1000 + index)  # layer drop draws from the RNG, as in a real run
        return call(model, batches[index % len(batches)])

    return step


def _gradients_over_steps(model: nn.Module, batches: list[dict], call: Callable, seed: int,
                          adapter: dict[str, nn.Parameter]) -> frozenset[str]:
    step = _cycling(batches, call, seed)
    reached: set[str] = set()
    for _ in batches:
        model.zero_grad(set_to_none=True)
        step(model).backward()
        reached |= {n for n, p in adapter.items() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return frozenset(reached)


# -- mixture of experts -------------------------------------------------------------------------------------

def _moe(broken: bool, steps: int, seed: int) -> tuple[nn.Module, list[dict], Callable]:
    from peft import LoraConfig, get_peft_model
    from transformers import SwitchTransformersConfig, SwitchTransformersEncoderModel

    config = SwitchTransformersConfig(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                      num_experts=4, encoder_sparse_step=1, expert_capacity=64,
                                      router_bias=broken, router_jitter_noise=0.0)
    base = SwitchTransformersEncoderModel(config)
    if broken:
        with torch.no_grad():
            for module in base.modules():
                if type(module).__name__ == "SwitchTransformersTop1Router":
                    module.classifier.bias.zero_()
                    module.classifier.bias[3] = -1e4  # a collapsed router: expert 3 never wins
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["wi", "wo"]))
    generator = torch.Generator().manual_seed(seed)
    batches = [{"input_ids": torch.randint(0, 32, (2, 3), generator=generator)} for _ in range(steps)]
    return model, batches, lambda m, batch: m(**batch).last_hidden_state.pow(2).mean()


# -- Qwen2-Audio: layer drop, and batches without audio --------------------------------------------------------

def _qwen2_audio(layerdrop: float) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    config = qwen2_audio_config("tiny")
    config.audio_config.encoder_layerdrop = layerdrop
    base = Qwen2AudioForConditionalGeneration(config)
    return get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))


def _audio_batch(generator: torch.Generator, *, audio: bool) -> dict[str, Any]:
    mel_bins, positions = 16, 16  # the "tiny" size
    frames = (positions - 2) // 2 + 1
    text = torch.randint(10, 128, (2, 6), generator=generator)
    if not audio:
        return {"input_ids": text, "labels": text}
    ids = torch.cat([text[:, :2], torch.full((2, frames), AUDIO_TOKEN), text[:, 2:]], dim=1)
    features = torch.randn(2, mel_bins, positions * 2, generator=generator)
    return {"input_ids": ids, "labels": ids, "input_features": features,
            "feature_attention_mask": torch.ones(2, positions * 2, dtype=torch.long)}


def _layerdrop(broken: bool, steps: int, seed: int) -> tuple[nn.Module, list[dict], Callable]:
    model = _qwen2_audio(1.0 if broken else 0.5)
    generator = torch.Generator().manual_seed(seed)
    batches = [_audio_batch(generator, audio=True) for _ in range(steps)]
    return model, batches, lambda m, batch: m(**batch).loss


def _text_only(broken: bool, steps: int, seed: int) -> tuple[nn.Module, list[dict], Callable]:
    model = _qwen2_audio(0.0)
    generator = torch.Generator().manual_seed(seed)
    batches = [_audio_batch(generator, audio=not broken and i % 2 == 1) for i in range(steps)]
    return model, batches, lambda m, batch: m(**batch).loss


_BUILDERS = {"moe": _moe, "layerdrop": _layerdrop, "text-only": _text_only}
