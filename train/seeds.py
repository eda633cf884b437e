"""The seeds of an epoch: every random draw of training is a pure function of (seed, epoch, rank, stream), which is
what makes an epoch repeatable on its own and a resumed run end with the weights of one never stopped.

    gen = seed_epoch(seed, epoch, rank)     # torch's global RNG seeded (stream 0); the loop's own generator (stream 1)
"""

from __future__ import annotations

import numpy as np
import torch

STREAM_TORCH = 0  # torch's global RNG: dropout, torchvision transforms, mixup lambdas
STREAM_LOOP = 1  # the loop's generator: waveform augmentation, mixup partners, modality dropout
STREAM_SPEC_AUGMENT = 2  # SpecAugment's masks (the hook on the log-mel front end)
STREAM_BN_WARMUP = 3  # BatchNorm statistics warm-up at the start of a phase
STREAM_PHASE2_NOISE = 5  # the noisy copies of the phase II feature cache (epoch = the copy's number)


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = STREAM_TORCH) -> int:
    """One integer per (seed, epoch, rank, stream): what makes an epoch repeatable on its own."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """Seed torch's global RNG (dropout, torchvision transforms, mixup lambdas) for this epoch and return the
    generator for the loop's own draws (waveform augmentation, mixup partners, modality dropout)."""
    torch.manual_seed(epoch_seed(seed, epoch, rank, STREAM_TORCH))
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank, STREAM_LOOP))


__all__ = [
    "STREAM_BN_WARMUP",
    "STREAM_LOOP",
    "STREAM_PHASE2_NOISE",
    "STREAM_SPEC_AUGMENT",
    "STREAM_TORCH",
    "epoch_seed",
    "seed_epoch",
]
