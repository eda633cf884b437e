"""What a phase trains and the loss it is judged on.

Phases: `joint` (joint mode), or `phase1_audio`, `phase1_image`, `phase2_fusion` (two_phase mode). `PhaseNet` is the
computation of one phase as one module (what DDP wraps); `phase_loss` is the phase's loss of its output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from edgeav.schema.train import TrainConfig
from edgeav.train.augment import soft_cross_entropy

PHASES_TWO = ("phase1_audio", "phase1_image", "phase2_fusion")
BEST_FILE = {
    "joint": "best.pt",
    "phase1_audio": "best_audio.pt",
    "phase1_image": "best_image.pt",
    "phase2_fusion": "best.pt",
}


class PhaseNet(nn.Module):
    """The trainable computation of one phase, as one module (so DDP can wrap it).

    joint:          (audio (B,T), image (B,3,H,W) uint8, mask (B,2)) -> AVOutput of the model
    phase1_audio:   (audio,) -> (B, C) logits of the audio backbone + auxiliary audio head
    phase1_image:   (image,) -> (B, C) logits of the image backbone + auxiliary image head
    phase2_fusion:  (audio_map, image_map, audio_emb, image_emb, mask) -> AVOutput of the head over cached features
    """

    def __init__(self, model: nn.Module, phase: str) -> None:
        super().__init__()
        self.model = model
        self.phase = phase

    def forward(self, *x: torch.Tensor) -> Any:
        m = self.model
        if self.phase == "joint":
            return m(*x)
        if self.phase == "phase1_audio":
            return m.aux_audio(audio_embedding(m, x[0]))
        if self.phase == "phase1_image":
            return m.aux_image(image_embedding(m, x[0]))
        from edgeav.train.models import Branches

        return m.forward_head(Branches.masked(*x))  # x: cached maps, embeddings and the mask


def audio_map(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """audio (B, T) -> the audio backbone's map (B, Da, f, t), through the model's log-mel front end when the
    backbone takes log-mel."""
    bb = model.audio_backbone
    x = audio if bb.input_kind == "waveform" else model.frontend.audio(audio)  # (B, T) or (B, 1, M, frames)
    return bb.forward_features(x)


def audio_embedding(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    return model.audio_backbone.forward_head(audio_map(model, audio))  # (B, Da)


def image_map(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model.image_backbone.forward_features(model.frontend.image(image))  # (B, Di, h, w)


def image_embedding(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model.image_backbone.forward_head(image_map(model, image))  # (B, Di)


def logits_of(out: Any, phase: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logits the phase is judged on, audio-only logits, image-only logits)."""
    if isinstance(out, torch.Tensor):
        return out, (out if phase == "phase1_audio" else None), (out if phase == "phase1_image" else None)
    return out.logits, out.logits_audio, out.logits_image


def phase_loss(
    out: Any, target: torch.Tensor, mask: torch.Tensor, phase: str, tc: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of a phase's output against the soft target (B, C); mask (B, 2) says which modality is there."""
    logits, logits_audio, logits_image = logits_of(out, phase)
    if phase == "phase1_audio":
        return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 0]), logits
    if phase == "phase1_image":
        return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 1]), logits
    if phase == "phase2_fusion":  # what phase II trains: the fusion, reached only where both are present
        return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 0] * mask[:, 1]), logits
    loss = soft_cross_entropy(logits, target, tc.label_smoothing)
    if phase == "joint" and tc.aux_loss_weight > 0:
        aux = soft_cross_entropy(logits_audio, target, tc.label_smoothing, mask[:, 0]) + soft_cross_entropy(
            logits_image, target, tc.label_smoothing, mask[:, 1]
        )
        loss = loss + tc.aux_loss_weight * aux
    return loss, logits


__all__ = [
    "BEST_FILE",
    "PHASES_TWO",
    "PhaseNet",
    "audio_embedding",
    "audio_map",
    "image_embedding",
    "image_map",
    "logits_of",
    "phase_loss",
]
