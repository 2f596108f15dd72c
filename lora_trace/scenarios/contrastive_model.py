"""The motivating model: a contrastive speech/text model on Qwen2-Audio, written as its users write it.

This file plays the user's code. Lines tagged `# fault: ...` are where a scenario injects a failure; a
correct diagnosis points at them. Fault flags are plain attributes, so the code paths stay readable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AUDIO_TOWER = "audio_tower"
FULL_FORWARD = "full_forward"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class Qwen2AudioSpeechEncoder(nn.Module):
    """Speech embeddings from a PEFT-wrapped Qwen2AudioForConditionalGeneration (`self.model`)."""

    def __init__(self, model: nn.Module, *, strategy: str, no_grad_in_predict: bool = False) -> None:
        super().__init__()
        if strategy not in (AUDIO_TOWER, FULL_FORWARD):
            raise ValueError(f"strategy must be {AUDIO_TOWER!r} or {FULL_FORWARD!r}, got {strategy!r}")
        self.model = model
        self.strategy = strategy
        self.no_grad_in_predict = no_grad_in_predict

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.no_grad_in_predict:
            with torch.no_grad():  # fault: no-grad
                return self._batch_extract_embeddings(batch)
        return self._batch_extract_embeddings(batch)

    def _batch_extract_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.strategy == AUDIO_TOWER:
            return self._extract_from_audio_tower(batch)
        return self._extract_full_forward(batch)

    def _extract_from_audio_tower(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        audio_tower = self.model.get_base_model().model.audio_tower
        hidden = audio_tower(batch["input_features"]).last_hidden_state
        return mean_pool(hidden)

    def _extract_full_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["speech_input_ids"],
            attention_mask=batch["speech_attention_mask"],
            input_features=batch["input_features"],
            feature_attention_mask=batch["feature_attention_mask"],
            output_hidden_states=True,
        )
        return mean_pool(out.hidden_states[-1], batch["speech_attention_mask"])


class Qwen2TextEncoder(nn.Module):
    """Text embeddings from a PEFT-wrapped Qwen2Model (`self.model`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)


class ContrastiveQwen2AudioModel(nn.Module):
    """Speech and text towers, trainable projection heads, symmetric InfoNCE; `forward(batch) -> loss`."""

    def __init__(
        self,
        speech_encoder: Qwen2AudioSpeechEncoder,
        text_encoder: Qwen2TextEncoder,
        *,
        speech_dim: int,
        text_dim: int,
        proj_dim: int,
        temperature: float = 0.07,
        detach_speech: bool = False,
    ) -> None:
        super().__init__()
        self.speech_encoder = speech_encoder
        self.text_encoder = text_encoder
        self.proj_speech = nn.Linear(speech_dim, proj_dim)
        self.proj_text = nn.Linear(text_dim, proj_dim)
        self.temperature = temperature
        self.detach_speech = detach_speech

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        speech_embeddings = self.speech_encoder.predict(batch)
        if self.detach_speech:
            speech_embeddings = speech_embeddings.detach()  # fault: detach
        return F.normalize(self.proj_speech(speech_embeddings), dim=-1)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text_embeddings = self.text_encoder.encode(batch["text_input_ids"], batch["text_attention_mask"])
        return F.normalize(self.proj_text(text_embeddings), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        audio = self.encode_audio(batch)
        text = self.encode_text(batch)
        logits = audio @ text.T / self.temperature
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
