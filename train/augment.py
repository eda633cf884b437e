"""Training-time augmentation, each part switchable in `train.augment`.

Waveform (gain, noise, time shift) and image (rotation, flip, restricted RandAugment) transforms act on a batch
on the training device; SpecAugment masks the model's log-mel output through a forward hook on its front end, so
the exported model never contains it; joint mixup mixes both modalities with one lambda.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from edgeav.schema.train import AugmentConfig, ImageAugConfig, SpecAugmentConfig, WaveAugConfig


def augment_wave(audio: torch.Tensor, cfg: WaveAugConfig, sample_rate_hz: int, gen: torch.Generator) -> torch.Tensor:
    """audio (B, T) float32 -> (B, T): random gain, white noise at an SNR, circular time shift."""
    b, t = audio.shape
    out = audio
    if cfg.gain_db > 0:
        gain_db = (torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.gain_db  # (B, 1)
        out = out * torch.pow(10.0, gain_db / 20.0).to(out)
    if cfg.noise_snr_db is not None and cfg.noise_prob > 0:
        use = (torch.rand(b, 1, generator=gen) < cfg.noise_prob).to(out)  # (B, 1)
        power = out.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)  # (B, 1)
        noise_std = torch.sqrt(power / (10.0 ** (cfg.noise_snr_db / 10.0)))
        out = out + use * noise_std * torch.randn(b, t, generator=gen).to(out)
    if cfg.time_shift_s > 0:
        max_shift = int(cfg.time_shift_s * sample_rate_hz)
        shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen)
        out = torch.stack([torch.roll(out[i], int(shifts[i])) for i in range(b)])
    return out


def _randaugment_one(img: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """img (3, H, W) uint8."""
    if op == "Identity":
        return img
    factor = 1.0 + magnitude * 0.9  # 1.0 .. 1.9, applied up or down at random by the caller
    if op == "Sharpness":
        return TF.adjust_sharpness(img, factor)
    if op == "Contrast":
        return TF.adjust_contrast(img, factor)
    if op == "Brightness":
        return TF.adjust_brightness(img, factor)
    if op == "Color":
        return TF.adjust_saturation(img, factor)
    if op == "Equalize":
        return TF.equalize(img)
    if op == "AutoContrast":
        return TF.autocontrast(img)
    raise ValueError(f"unknown RandAugment op {op!r}")


def augment_image(image: torch.Tensor, cfg: ImageAugConfig, gen: torch.Generator) -> torch.Tensor:
    """image (B, 3, H, W) uint8 -> (B, 3, H, W) uint8."""
    out = []
    for img in image:
        if cfg.hflip_prob > 0 and torch.rand(1, generator=gen).item() < cfg.hflip_prob:
            img = TF.horizontal_flip(img)
        if cfg.rotation_deg > 0:
            angle = (torch.rand(1, generator=gen).item() * 2 - 1) * cfg.rotation_deg
            img = TF.rotate(img, angle, interpolation=TF.InterpolationMode.BILINEAR)
        if cfg.randaugment_ops and torch.rand(1, generator=gen).item() < cfg.randaugment_prob:
            op = cfg.randaugment_ops[int(torch.randint(len(cfg.randaugment_ops), (1,), generator=gen))]
            mag = cfg.randaugment_magnitude * (1 if torch.rand(1, generator=gen).item() < 0.5 else -0.5)
            img = _randaugment_one(img, op, mag)
        out.append(img)
    return torch.stack(out)


def modality_dropout(mask: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """mask (B, 2) -> (B, 2): with probability p an example loses one modality (never both)."""
    if p <= 0:
        return mask
    b = mask.shape[0]
    drop = torch.rand(b, generator=gen) < p  # (B,)
    which = torch.randint(0, 2, (b,), generator=gen)  # 0 = audio, 1 = image
    out = mask.clone()
    both = (mask.sum(dim=1) == 2)
    sel = drop & both
    out[sel, which[sel]] = 0.0
    return out


def joint_mixup(
    audio: torch.Tensor, image: torch.Tensor, target: torch.Tensor, alpha: float, fraction: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix a fraction of the batch with a shuffled partner, one lambda per pair for both modalities.

    audio (B, T) float, image (B, 3, H, W) uint8, target (B, C) soft labels. Returns the same shapes.
    """
    b = audio.shape[0]
    n = int(round(b * fraction))
    if n == 0 or b < 2:
        return audio, image, target
    idx = torch.randperm(b, generator=gen)[:n]  # examples to mix
    partner = torch.randint(0, b, (n,), generator=gen)
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).clamp(0.0, 1.0)  # (n,)
    lam = torch.maximum(lam, 1 - lam)  # keep the example itself dominant
    audio, image, target = audio.clone(), image.clone(), target.clone()
    la = lam.view(n, 1).to(audio)
    audio[idx] = la * audio[idx] + (1 - la) * audio[partner]
    li = lam.view(n, 1, 1, 1)
    mixed = li * image[idx].float() + (1 - li) * image[partner].float()
    image[idx] = mixed.round().clamp(0, 255).to(image.dtype)
    lt = lam.view(n, 1).to(target)
    target[idx] = lt * target[idx] + (1 - lt) * target[partner]
    return audio, image, target


class SpecAugmentHook:
    """Forward hook on the model's front end: masks time frames and mel bands of its log-mel output.

    Active only while the module is in training mode; the masked value is the example's minimum (silence).
    """

    def __init__(self, cfg: SpecAugmentConfig, gen: torch.Generator) -> None:
        self.cfg, self.gen = cfg, gen

    def __call__(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if not module.training or not self.cfg.enabled:
            return output
        x = output.clone()  # (B, [1,] n_mels, frames)
        view = x.view(x.shape[0], -1, x.shape[-2], x.shape[-1])  # (B, 1, M, F)
        b, _, m, f = view.shape
        floor = view.amin(dim=(1, 2, 3))  # (B,)
        for i in range(b):
            for _ in range(self.cfg.time_masks):
                w = int(torch.randint(0, min(self.cfg.time_mask_frames, f) + 1, (1,), generator=self.gen))
                s = int(torch.randint(0, max(1, f - w + 1), (1,), generator=self.gen))
                view[i, :, :, s : s + w] = floor[i]
            for _ in range(self.cfg.freq_masks):
                w = int(torch.randint(0, min(self.cfg.freq_mask_bands, m) + 1, (1,), generator=self.gen))
                s = int(torch.randint(0, max(1, m - w + 1), (1,), generator=self.gen))
                view[i, :, s : s + w, :] = floor[i]
        return x


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """logits (B, C), target (B, C) probabilities -> scalar. KL to soft labels up to a constant."""
    if smoothing > 0:
        c = target.shape[1]
        target = target * (1 - smoothing) + smoothing / c
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


__all__ = [
    "AugmentConfig",
    "augment_wave",
    "augment_image",
    "modality_dropout",
    "joint_mixup",
    "SpecAugmentHook",
    "soft_cross_entropy",
]
