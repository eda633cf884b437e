"""Training-time augmentation, each part switchable in `train.augment` (and off at evaluation).

- field noise (`noise`): recorded background noise (a `NoiseBank` loaded once per run) mixed into each example
  with probability `prob` at an SNR drawn uniformly in dB; on a (B, T) batch, before the waveform augmentation
  (a microphone's gain acts on the sound and the noise together).
- waveform (`wave`): random gain, white noise at an SNR, circular time shift; on a (B, T) batch.
- image (`image`): rotation and horizontal flip, and RandAugment restricted to a list of operations; torchvision's
  own transforms (`transforms.v2.RandomRotation`, `RandomHorizontalFlip`, `RandAugment`) on each uint8 image.
- SpecAugment (`spec_augment`): time and mel-band masks on the model's log-mel output, through a forward hook on the
  model's log-mel module, so the exported model never contains it.
- joint mixup (`mixup`): a fraction of the batch mixed with a partner, one lambda for both modalities and the
  soft label; the loss is the soft-label cross-entropy.
- modality dropout (`modality_dropout`): the model's own `modality_dropout` on the mask, with the probabilities of
  the `model:` section.

Randomness: `FieldNoise`, `augment_wave`, `joint_mixup` and SpecAugment draw from an explicit `torch.Generator`; the torchvision
image transforms and the mixup lambdas draw from torch's global RNG. The training loop seeds both at the start of every epoch, which is
what makes a resumed run repeat the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from edgeav.schema.train import (
    ImageAugConfig,
    MixupConfig,
    NoiseAugConfig,
    SpecAugmentConfig,
    TrainConfig,
    WaveAugConfig,
)
from edgeav.train.noise import NoiseBank, mix_at_snr

log = logging.getLogger(__name__)


class FieldNoise:
    """Recorded noise mixed into a batch of windows: `field_noise(audio (B, T), gen, present (B,)) -> (B, T)`.

    Each example gets noise with probability `cfg.prob`, at an SNR drawn uniformly in [snr_floor_db(), snr_db_max] dB
    (`mix_at_snr`: the SNR of the whole window), from a bank segment at a random offset. Every draw comes from `gen`
    (the loop's per-epoch generator), so an epoch is repeatable. Examples whose sound is absent (`present` 0: the
    zeros of a missing track) are left as they are. Disabled (`bank` None): returns `audio` itself, drawing nothing.
    """

    def __init__(self, cfg: NoiseAugConfig, bank: NoiseBank | None) -> None:
        self.cfg = cfg
        self.bank = bank
        self.epoch: int | None = None  # epoch of the phase (the loop sets it); None = the full range (no curriculum)

    def snr_floor_db(self) -> float:
        """The lowest SNR drawn now: with `curriculum_epochs` N it falls linearly from snr_db_max to snr_db_min
        over the phase's first N epochs (a model first learns the classes, then to hear them through noise)."""
        n = self.cfg.curriculum_epochs
        if n == 0 or self.epoch is None:
            return self.cfg.snr_db_min
        frac = min(1.0, (self.epoch + 1) / n)
        return self.cfg.snr_db_max - frac * (self.cfg.snr_db_max - self.cfg.snr_db_min)

    def __call__(self, audio: torch.Tensor, gen: torch.Generator, present: torch.Tensor | None = None) -> torch.Tensor:
        if self.bank is None or not self.cfg.enabled or self.cfg.prob <= 0:
            return audio
        b, t = audio.shape
        use = torch.rand(b, generator=gen) < self.cfg.prob  # (B,)
        low = self.snr_floor_db()
        snr_db = low + torch.rand(b, generator=gen) * (self.cfg.snr_db_max - low)  # (B,)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))  # the segments' offsets
        if present is not None:
            use &= present.detach().cpu().reshape(-1) > 0
        if not bool(use.any()):
            return audio
        out = audio.clone()
        clean = audio.detach().cpu().numpy()  # (B, T)
        for i in torch.nonzero(use).reshape(-1).tolist():
            mixed = mix_at_snr(clean[i], self.bank.segment(t, rng), float(snr_db[i]))  # (T,)
            out[i] = torch.from_numpy(mixed).to(out)
        return out


def build_field_noise(tc: TrainConfig, sample_rate_hz: int) -> FieldNoise:
    """The `train.augment.noise` mixer of a run, its bank decoded now (a bad path fails here, before any epoch: a
    one-line DataError). Says once, as a warning, where the noise cannot reach in two_phase training."""
    cfg = tc.augment.noise
    if not cfg.enabled:
        return FieldNoise(cfg, None)
    bank = NoiseBank(cfg.path, sample_rate_hz)  # type: ignore[arg-type]  (the schema requires path when enabled)
    log.info(
        "field noise: %s, SNR %g..%g dB, probability %.2f per example",
        cfg.path,
        cfg.snr_db_min,
        cfg.snr_db_max,
        cfg.prob,
    )
    if tc.mode == "two_phase" and tc.phase1_from:
        log.warning(
            "train.augment.noise is NOT APPLIED to phase I in this run: train.phase1_from takes the audio "
            "model from %s (trained with whatever noise that run had); phase II still caches %d noisy "
            "copies",
            tc.phase1_from,
            cfg.phase2_variants,
        )
    if tc.mode == "two_phase" and cfg.phase2_variants == 0:
        log.warning(
            "train.augment.noise.phase2_variants=0: phase II trains the fusion head on features of the CLEAN "
            "sound only, so the fusion never learns to lean on the picture in noise"
        )
    return FieldNoise(cfg, bank)


def augment_wave(audio: torch.Tensor, cfg: WaveAugConfig, sample_rate_hz: int, gen: torch.Generator) -> torch.Tensor:
    """audio (B, T) float32 -> (B, T): random gain, white noise at an SNR, circular time shift."""
    if not cfg.enabled:
        return audio
    b, t = audio.shape
    out = audio
    if cfg.gain_db > 0:
        gain_db = (torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.gain_db  # (B, 1)
        out = out * torch.pow(10.0, gain_db / 20.0).to(out)
    if cfg.noise_snr_db is not None and cfg.noise_prob > 0:
        use = (torch.rand(b, 1, generator=gen) < cfg.noise_prob).to(out)  # (B, 1)
        power = out.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)  # (B, 1)
        noise_std = torch.sqrt(power / (10.0 ** (cfg.noise_snr_db / 10.0)))  # (B, 1)
        out = out + use * noise_std * torch.randn(b, t, generator=gen).to(out)
    if cfg.time_shift_s > 0:
        max_shift = int(round(cfg.time_shift_s * sample_rate_hz))
        shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen)  # (B,)
        out = torch.stack([torch.roll(out[i], int(shifts[i])) for i in range(b)])
    return out


class RestrictedRandAugment(v2.RandAugment):
    """torchvision's RandAugment drawing only from `ops` (names of `v2.RandAugment`'s operation table).

    The scene papers found that the geometric and colour ops hurt; the default list is Sharpness, Contrast,
    Identity. Everything else (magnitudes, signs, application) is torchvision's."""

    def __init__(self, ops: list[str], num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        super().__init__(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)
        table = v2.RandAugment._AUGMENTATION_SPACE
        unknown = [op for op in ops if op not in table]
        if unknown or not ops:
            raise ValueError(f"RandAugment ops {unknown or ops!r} not in torchvision's table: {', '.join(table)}")
        self._AUGMENTATION_SPACE = {op: table[op] for op in ops}


def build_image_transform(cfg: ImageAugConfig) -> v2.Transform | None:
    """The per-image transform of `cfg` (uint8 (3, H, W) -> uint8 (3, H, W)), or None when everything is off. On a
    clip (T, 3, H, W) torchvision draws the parameters once, so every frame of a window moves alike."""
    if not cfg.enabled:
        return None
    parts: list[v2.Transform] = []
    if cfg.hflip_prob > 0:
        parts.append(v2.RandomHorizontalFlip(p=cfg.hflip_prob))
    if cfg.translate_frac > 0:  # rotation and shift in one resampling
        parts.append(
            v2.RandomAffine(
                cfg.rotation_deg,
                translate=(cfg.translate_frac, cfg.translate_frac),
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    elif cfg.rotation_deg > 0:
        parts.append(v2.RandomRotation(cfg.rotation_deg, interpolation=v2.InterpolationMode.BILINEAR))
    if cfg.randaugment_ops and cfg.randaugment_prob > 0:
        bins = 31
        ra = RestrictedRandAugment(
            list(cfg.randaugment_ops),
            num_ops=cfg.randaugment_num_ops,
            magnitude=int(round(cfg.randaugment_magnitude * (bins - 1))),
            num_magnitude_bins=bins,
        )
        parts.append(v2.RandomApply([ra], p=cfg.randaugment_prob))
    return v2.Compose(parts) if parts else None


def augment_image(image: torch.Tensor, transform: v2.Transform | None) -> torch.Tensor:
    """image (B, 3, H, W) or clips (B, T, 3, H, W) uint8 -> the same, each example transformed on its own."""
    if transform is None:
        return image
    return torch.stack([transform(img) for img in image])


def joint_mixup(
    audio: torch.Tensor, image: torch.Tensor, target: torch.Tensor, cfg: MixupConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix `batch_fraction` of the batch with a partner from the batch, one lambda per pair for both modalities
    and the label. audio (B, ...) float, image (B, ...) uint8 or float, target (B, C) soft labels (rows sum to 1).
    Returns the same shapes and dtypes; target rows still sum to 1."""
    b = audio.shape[0]
    n = int(round(b * cfg.batch_fraction))
    if not cfg.enabled or n == 0 or b < 2:
        return audio, image, target
    idx = torch.randperm(b, generator=gen)[:n]  # (n,) examples that get mixed
    partner = torch.randint(0, b, (n,), generator=gen)  # (n,)
    lam = _lambdas(n, cfg.alpha)  # (n,)
    return (_mix(audio, idx, partner, lam), _mix(image, idx, partner, lam), _mix(target, idx, partner, lam))


def _lambdas(n: int, alpha: float) -> torch.Tensor:
    """(n,) mixing weights ~ Beta(alpha, alpha) folded to [0.5, 1] so the example itself stays dominant (torch's
    global RNG, seeded per epoch by the loop)."""
    lam = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((n,))
    return torch.maximum(lam, 1 - lam)


def _mix(x: torch.Tensor, idx: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    shape = (lam.shape[0],) + (1,) * (x.dim() - 1)
    lv = lam.view(shape)
    mixed = lv * x[idx].float() + (1 - lv) * x[partner].float()
    if not x.dtype.is_floating_point:
        mixed = mixed.round().clamp(torch.iinfo(x.dtype).min, torch.iinfo(x.dtype).max)
    out[idx] = mixed.to(x.dtype)
    return out


def mixup_tensors(
    tensors: list[torch.Tensor], target: torch.Tensor, cfg: MixupConfig, gen: torch.Generator
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Mixup of any number of aligned float tensors (B, ...) and the soft label (B, C) with one lambda per pair
    (phase II of two-phase training mixes the cached maps and embeddings of both modalities this way)."""
    b = target.shape[0]
    n = int(round(b * cfg.batch_fraction))
    if not cfg.enabled or n == 0 or b < 2:
        return tensors, target
    idx = torch.randperm(b, generator=gen)[:n]
    partner = torch.randint(0, b, (n,), generator=gen)
    lam = _lambdas(n, cfg.alpha)  # (n,)
    return [_mix(t, idx, partner, lam) for t in tensors], _mix(target, idx, partner, lam)


class SpecAugmentHook:
    """Forward hook on the model's log-mel module: masks time frames and mel bands of its output (B, 1, M, F)
    while that module is in training mode. The masked value is the example's minimum (silence)."""

    def __init__(self, cfg: SpecAugmentConfig, gen: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.gen = gen if gen is not None else torch.Generator().manual_seed(0)

    def __call__(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training or not self.cfg.enabled:
            return output
        return spec_augment(output, self.cfg, self.gen)


def spec_augment(spec: torch.Tensor, cfg: SpecAugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """spec (B, 1, M, F) log-mel -> masked copy; `cfg.time_masks` masks of up to `time_mask_frames` frames and
    `cfg.freq_masks` masks of up to `freq_mask_bands` bands per example."""
    x = spec.clone()
    b, _, m, f = x.shape
    floor = x.detach().amin(dim=(1, 2, 3))  # (B,)
    for i in range(b):
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, min(cfg.time_mask_frames, f) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, f - w + 1), (1,), generator=gen))
            x[i, :, :, s : s + w] = floor[i]
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, min(cfg.freq_mask_bands, m) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, m - w + 1), (1,), generator=gen))
            x[i, :, s : s + w, :] = floor[i]
    return x


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """logits (B, C), target (B, C) probabilities -> scalar: mean of -sum(target * log_softmax(logits)) (the KL
    divergence to the soft labels up to a constant). `weight` (B,) averages over the examples it marks."""
    if smoothing > 0:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    per = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B,)
    if weight is None:
        return per.mean()
    return (per * weight).sum() / weight.sum().clamp_min(1.0)


__all__ = [
    "FieldNoise",
    "RestrictedRandAugment",
    "SpecAugmentHook",
    "augment_image",
    "augment_wave",
    "build_field_noise",
    "build_image_transform",
    "joint_mixup",
    "mixup_tensors",
    "soft_cross_entropy",
    "spec_augment",
]
