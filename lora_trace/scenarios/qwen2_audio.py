"""Build the contrastive Qwen2-Audio scenario from configs: random weights, nothing downloaded."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..core.regions import region_of
from .base import ExpectedFinding, Scenario, Truth, lora_layer_of, marked_line
from .contrastive_model import (
    AUDIO_TOWER,
    FULL_FORWARD,
    ContrastiveQwen2AudioModel,
    Qwen2AudioSpeechEncoder,
    Qwen2TextEncoder,
)

SEED_LIST = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_LM_NAMES = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
_AUDIO_ATTN = "q_proj|k_proj|v_proj|out_proj"
TARGETS: dict[str, list[str] | str] = {
    "seed-list": SEED_LIST,
    "language-model-only": rf".*\.language_model\.layers\.\d+\.(self_attn|mlp)\.({_LM_NAMES})",
    "audio-only": rf".*\.audio_tower\.layers\.\d+\.(self_attn\.({_AUDIO_ATTN})|fc1|fc2)",
    "audio-and-lm": (
        rf".*\.(audio_tower\.layers\.\d+\.(self_attn\.({_AUDIO_ATTN})|fc1|fc2)"
        rf"|language_model\.layers\.\d+\.(self_attn|mlp)\.({_LM_NAMES}))"
    ),
}
STRATEGIES = (AUDIO_TOWER, FULL_FORWARD)
FAULTS = ("none", "no-grad", "detach", "frozen", "eval", "checkpoint", "disabled")


@dataclass(frozen=True)
class Size:
    audio_dim: int
    audio_layers: int
    audio_heads: int
    audio_ffn: int
    mel_bins: int
    audio_positions: int  # max_source_positions: the encoder's frame count before pooling
    text_dim: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    vocab: int
    batch: int
    text_len: int
    proj_dim: int
    device: str = "cpu"


SIZES = {
    "tiny": Size(32, 2, 2, 64, 16, 16, 32, 2, 2, 2, 64, 128, 4, 8, 16),
    "medium": Size(256, 4, 4, 1024, 80, 128, 256, 4, 4, 4, 1024, 2048, 8, 64, 128),
    "qwen2-audio-7b": Size(1280, 32, 20, 5120, 128, 1500, 4096, 32, 32, 32, 11008, 156032, 2, 16, 512, "meta"),
}
# The text encoder stays small at every size: the motivating case is about the speech side.
_TEXT_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                     intermediate_size=64, vocab_size=128)
AUDIO_TOKEN = 7


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers warns (FutureWarning) on every get_peft_model; keep users' and tests' output clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
        yield


def qwen2_audio_config(size: str | Size = "qwen2-audio-7b") -> object:
    """The Qwen2AudioConfig of a size (architectures set, so `lora-trace targets` builds the right class)."""
    from transformers import Qwen2AudioConfig

    size = SIZES[size] if isinstance(size, str) else size
    config = Qwen2AudioConfig(
        audio_config=dict(
            d_model=size.audio_dim, encoder_layers=size.audio_layers, encoder_attention_heads=size.audio_heads,
            encoder_ffn_dim=size.audio_ffn, num_mel_bins=size.mel_bins, max_source_positions=size.audio_positions,
        ),
        text_config=dict(
            hidden_size=size.text_dim, num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
            num_key_value_heads=size.text_kv_heads, intermediate_size=size.text_ffn, vocab_size=size.vocab,
        ),
        audio_token_index=AUDIO_TOKEN,
        architectures=["Qwen2AudioForConditionalGeneration"],
    )
    config._attn_implementation = "eager"
    return config


def _qwen2_audio(size: Size) -> nn.Module:
    from transformers import Qwen2AudioForConditionalGeneration

    return Qwen2AudioForConditionalGeneration(qwen2_audio_config(size))


def _qwen2_text(device: str) -> nn.Module:
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(**_TEXT_ENCODER)
    config._attn_implementation = "eager"
    with torch.device(device):
        return Qwen2Model(config)


def _batch(size: Size, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Audio features and the two token sequences; the speech prompt carries one audio token per frame."""
    n, device = size.batch, size.device
    mel_len = size.audio_positions * 2
    audio_tokens = (size.audio_positions - 2) // 2 + 1  # Qwen2-Audio's conv + pooling output length
    prompt = torch.randint(10, size.vocab, (n, 4), generator=generator)
    speech_ids = torch.cat([prompt[:, :2], torch.full((n, audio_tokens), AUDIO_TOKEN), prompt[:, 2:]], dim=1)
    text_ids = torch.randint(10, _TEXT_ENCODER["vocab_size"], (n, size.text_len), generator=generator)
    batch = {
        "input_features": torch.randn(n, size.mel_bins, mel_len, generator=generator),
        "feature_attention_mask": torch.ones(n, mel_len, dtype=torch.long),
        "speech_input_ids": speech_ids,
        "speech_attention_mask": torch.ones_like(speech_ids),
        "text_input_ids": text_ids,
        "text_attention_mask": torch.ones_like(text_ids),
    }
    return {key: value.to(device) for key, value in batch.items()}


def contrastive_qwen2_audio(
    *,
    targets: str = "seed-list",
    strategy: str = AUDIO_TOWER,
    fault: str = "none",
    size: str = "tiny",
    seed: int = 0,
    lora_r: int = 4,
) -> Scenario:
    """The motivating model with the chosen LoRA targets, encoding strategy and injected fault.

    targets: "seed-list" | "language-model-only" | "audio-only" | "audio-and-lm";
    strategy: "audio_tower" (audio tower, mean pool, proj_speech) | "full_forward" (the whole model);
    fault: "none" | "no-grad" (in predict()) | "detach" (before proj_speech) | "frozen" (speech LoRA
    frozen after get_peft_model) | "eval" (speech encoder in eval mode) | "checkpoint" (reentrant
    checkpointing over the audio tower, inputs not requiring grad) | "disabled" (adapter layers off);
    size: "tiny" | "medium" | "qwen2-audio-7b" (real dimensions, meta device only).
    """
    from peft import LoraConfig, get_peft_model

    _check_choice("targets", targets, tuple(TARGETS))
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("fault", fault, FAULTS)
    _check_choice("size", size, tuple(SIZES))
    dims = SIZES[size]
    torch.manual_seed(seed)
    with quiet_transformers(), torch.device(dims.device):
        speech_peft = get_peft_model(
            _qwen2_audio(dims),
            LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules=TARGETS[targets]),
        )
        text_peft = get_peft_model(
            _qwen2_text(dims.device), LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "v_proj"])
        )
        speech_dim = dims.audio_dim if strategy == AUDIO_TOWER else dims.text_dim
        model = ContrastiveQwen2AudioModel(
            Qwen2AudioSpeechEncoder(speech_peft, strategy=strategy, no_grad_in_predict=fault == "no-grad"),
            Qwen2TextEncoder(text_peft),
            speech_dim=speech_dim,
            text_dim=_TEXT_ENCODER["hidden_size"],
            proj_dim=dims.proj_dim,
            detach_speech=fault == "detach",
        )
        _inject_config_fault(model, fault)
    model.train()
    if fault == "eval":
        model.speech_encoder.eval()
    optimizer = None
    if dims.device != "meta":
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = _batch(dims, torch.Generator().manual_seed(seed))

    def step(m: nn.Module) -> torch.Tensor:
        return m(batch)

    knobs = dict(targets=targets, strategy=strategy, fault=fault, size=size, seed=seed)
    name = f"contrastive_qwen2_audio[{targets},{strategy},{fault},{size}]"
    return Scenario(name, model, step, optimizer, _truth(model, strategy, fault), knobs, batch)


def _check_choice(knob: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{knob}={value!r} is not one of: {', '.join(sorted(choices))}")


def _inject_config_fault(model: ContrastiveQwen2AudioModel, fault: str) -> None:
    speech_peft = model.speech_encoder.model
    if fault == "frozen":
        speech_peft.requires_grad_(False)  # "freeze the backbone", after get_peft_model
    elif fault == "disabled":
        speech_peft.base_model.disable_adapter_layers()
    elif fault == "checkpoint":
        audio_tower = speech_peft.get_base_model().model.audio_tower
        audio_tower.activation_checkpointing_enable({"use_reentrant": True})


def _lora_params(model: nn.Module, prefix: str) -> dict[str, str]:
    """LoRA parameter name -> the region it sits in, for parameters under `prefix`."""
    return {
        name: region_of(lora_layer_of(name))
        for name, _ in model.named_parameters()
        if name.startswith(prefix) and ".lora_" in name
    }


def _truth(model: ContrastiveQwen2AudioModel, strategy: str, fault: str) -> Truth:
    """What the injected fault does, written out: which LoRA gets gradients, which findings explain the rest."""
    speech = _lora_params(model, "speech_encoder.")
    text = _lora_params(model, "text_encoder.")
    audio_regions = {r for r in speech.values() if r.endswith(".audio_tower")}
    lm_regions = {r for r in speech.values() if r.endswith(".language_model")}
    ran = audio_regions | (lm_regions if strategy == FULL_FORWARD else set())
    cut_everywhere = fault in ("no-grad", "detach", "frozen", "disabled")
    reached = set() if cut_everywhere else set(ran) - (audio_regions if fault == "checkpoint" else set())

    findings: list[ExpectedFinding] = []
    forward = ContrastiveQwen2AudioModel.encode_audio
    if fault == "no-grad" and ran:
        source = marked_line(Qwen2AudioSpeechEncoder.predict, "no-grad")
        findings.append(ExpectedFinding("grad-disabled", "error", tuple(sorted(ran)), source))
    if fault == "detach" and ran:
        findings.append(ExpectedFinding("detached", "error", tuple(sorted(ran)), marked_line(forward, "detach")))
    if fault == "checkpoint" and audio_regions:
        findings.append(ExpectedFinding("checkpoint-no-grad", "error", tuple(sorted(audio_regions))))
    bypassed = sorted(set(speech.values()) - ran)
    if bypassed and fault not in ("frozen", "disabled"):
        findings.append(ExpectedFinding("lora-bypassed", "error", tuple(bypassed)))
    if fault == "frozen":
        findings.append(ExpectedFinding("lora-frozen", "error", tuple(sorted(set(speech.values())))))
    if fault == "disabled":
        findings.append(ExpectedFinding("adapter-inactive", "error", tuple(sorted(set(speech.values())))))
    if fault == "eval":
        findings.append(ExpectedFinding("eval-mode", "warning", ("speech_encoder",)))

    grad_params = {name for name, region in speech.items() if region in reached} | set(text)
    return Truth(
        lora_params=frozenset(speech) | frozenset(text),
        grad_params=frozenset(grad_params),
        lora_regions=frozenset(speech.values()) | frozenset(text.values()),
        findings=tuple(findings),
    )
