"""Training augmentation: each part does what it says, and each switch-off is the identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgeav.schema.train import ImageAugConfig, MixupConfig, SpecAugmentConfig, WaveAugConfig
from edgeav.train.augment import (
    RestrictedRandAugment,
    SpecAugmentHook,
    augment_image,
    augment_wave,
    build_image_transform,
    joint_mixup,
    mixup_tensors,
    soft_cross_entropy,
    spec_augment,
)
from edgeav.train.models import modality_dropout


def _batch(b: int = 8, c: int = 4):
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(b, 1600, generator=g) * 0.1
    image = torch.randint(0, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8)
    label = torch.arange(b) % c
    return audio, image, F.one_hot(label, c).float()


def test_joint_mixup_soft_labels_sum_to_one_and_one_lambda_for_both_modalities():
    torch.manual_seed(0)
    audio, image, target = _batch(10, c=10)  # one class per example: the label shows the lambda
    a2, i2, t2 = joint_mixup(
        audio, image, target, MixupConfig(enabled=True, alpha=0.4, batch_fraction=0.5), torch.Generator().manual_seed(1)
    )
    assert torch.allclose(t2.sum(1), torch.ones(10))
    mixed = (a2 != audio).any(1).nonzero().flatten()
    assert 1 <= len(mixed) <= 5  # half of the batch at most (a partner may be the example itself)
    assert bool((t2.max(1).values < 1.0).any())
    assert bool((t2.max(1).values >= 0.5 - 1e-6).all())  # the example itself stays dominant
    for i in mixed.tolist():
        lam = float(t2[i, target[i].argmax()])
        j = [
            k
            for k in range(10)
            if torch.allclose(t2[i], lam * target[i] + (1 - lam) * target[k], atol=1e-6)
            and torch.allclose(a2[i], lam * audio[i] + (1 - lam) * audio[k], atol=1e-5)
        ]
        assert j, "audio and label mixed with different weights"
        k = j[0]
        want = (lam * image[i].float() + (1 - lam) * image[k].float()).round()
        assert (i2[i].float() - want).abs().max() <= 1.0  # the image with the same lambda (uint8 rounding)
    untouched = [i for i in range(10) if i not in mixed.tolist()]
    assert torch.equal(a2[untouched], audio[untouched]) and torch.equal(i2[untouched], image[untouched])
    assert i2.dtype == torch.uint8


def test_mixup_off_or_zero_fraction_is_identity():
    audio, image, target = _batch()
    g = torch.Generator().manual_seed(0)
    for cfg in (MixupConfig(enabled=False), MixupConfig(enabled=True, batch_fraction=0.0)):
        a2, i2, t2 = joint_mixup(audio, image, target, cfg, g)
        assert a2 is audio and i2 is image and t2 is target
        ts, t3 = mixup_tensors([audio], target, cfg, g)
        assert ts[0] is audio and t3 is target


def test_mixup_of_cached_features_keeps_rows_aligned():
    torch.manual_seed(3)
    b, c = 12, 3
    target = F.one_hot(torch.arange(b) % c, c).float()
    feats = [target.clone() * 2.0, target.clone()[:, :, None, None].expand(b, c, 2, 2).contiguous()]
    (f1, f2), t2 = mixup_tensors(feats, target, MixupConfig(batch_fraction=1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(t2.sum(1), torch.ones(b))
    assert torch.allclose(f1, 2.0 * t2, atol=1e-6)  # every tensor mixed with the label's lambda and partner
    assert torch.allclose(f2[:, :, 0, 0], t2, atol=1e-6)


def test_wave_augmentation_off_is_identity_and_on_changes_the_wave():
    audio, _, _ = _batch()
    g = torch.Generator().manual_seed(0)
    assert augment_wave(audio, WaveAugConfig(enabled=False), 16_000, g) is audio
    zeroed = WaveAugConfig(gain_db=0.0, noise_snr_db=None, time_shift_s=0.0)
    assert torch.equal(augment_wave(audio, zeroed, 16_000, g), audio)
    shifted = augment_wave(audio, WaveAugConfig(gain_db=0.0, noise_snr_db=None, time_shift_s=0.05), 16_000, g)
    assert not torch.equal(shifted, audio)
    assert torch.allclose(shifted.pow(2).sum(1), audio.pow(2).sum(1))  # a circular shift keeps the energy
    gained = augment_wave(audio, WaveAugConfig(gain_db=6.0, noise_snr_db=None, time_shift_s=0.0), 16_000, g)
    ratio = gained.abs().sum(1) / audio.abs().sum(1)
    assert bool(((ratio > 0.5 - 1e-3) & (ratio < 2.0 + 1e-3)).all()) and not torch.allclose(ratio, torch.ones(8))
    noisy = augment_wave(
        audio, WaveAugConfig(gain_db=0.0, noise_snr_db=10.0, noise_prob=1.0, time_shift_s=0.0), 16_000, g
    )
    snr_db = 10 * torch.log10(audio.pow(2).mean(1) / (noisy - audio).pow(2).mean(1))
    assert torch.allclose(snr_db, torch.full((8,), 10.0), atol=1.5)


def test_image_augmentation_off_is_identity():
    _, image, _ = _batch()
    assert build_image_transform(ImageAugConfig(enabled=False)) is None
    assert build_image_transform(ImageAugConfig(rotation_deg=0.0, hflip_prob=0.0, randaugment_ops=[])) is None
    assert augment_image(image, None) is image


def test_flip_and_rotation_come_from_torchvision_and_keep_dtype_and_shape():
    torch.manual_seed(0)
    _, image, _ = _batch()
    flip = build_image_transform(ImageAugConfig(rotation_deg=0.0, hflip_prob=1.0, randaugment_ops=[]))
    assert torch.equal(augment_image(image, flip), image.flip(-1))
    rot = build_image_transform(ImageAugConfig(rotation_deg=30.0, hflip_prob=0.0, randaugment_ops=[]))
    out = augment_image(image, rot)
    assert out.dtype == torch.uint8 and out.shape == image.shape and not torch.equal(out, image)


def test_randaugment_is_restricted_to_the_configured_ops():
    ra = RestrictedRandAugment(["Sharpness", "Contrast", "Identity"])
    assert set(ra._AUGMENTATION_SPACE) == {"Sharpness", "Contrast", "Identity"}
    only_identity = build_image_transform(
        ImageAugConfig(rotation_deg=0.0, hflip_prob=0.0, randaugment_ops=["Identity"], randaugment_prob=1.0)
    )
    _, image, _ = _batch()
    assert torch.equal(augment_image(image, only_identity), image)
    torch.manual_seed(0)
    contrast = build_image_transform(
        ImageAugConfig(
            rotation_deg=0.0,
            hflip_prob=0.0,
            randaugment_ops=["Contrast"],
            randaugment_prob=1.0,
            randaugment_magnitude=1.0,
        )
    )
    assert not torch.equal(augment_image(image, contrast), image)
    with pytest.raises(ValueError, match="not in torchvision"):
        RestrictedRandAugment(["Sharpen"])


def test_spec_augment_masks_only_in_training_mode():
    cfg = SpecAugmentConfig(time_masks=2, time_mask_frames=10, freq_masks=2, freq_mask_bands=4)
    spec = torch.randn(3, 1, 64, 100)
    out = spec_augment(spec, cfg, torch.Generator().manual_seed(0))
    floor = spec.amin(dim=(1, 2, 3))
    changed = out != spec
    assert changed.any()
    for i in range(3):  # masked cells hold the example's minimum
        assert torch.all(out[i][changed[i]] == floor[i])
    hook = SpecAugmentHook(cfg)
    mod = torch.nn.Identity()
    mod.eval()
    assert hook(mod, (spec,), spec) is spec
    mod.train()
    assert not torch.equal(hook(mod, (spec,), spec), spec)
    off = SpecAugmentHook(SpecAugmentConfig(enabled=False))
    assert off(mod, (spec,), spec) is spec


def test_modality_dropout_never_drops_both_and_zero_is_identity():
    mask = torch.ones(1000, 2)
    out = modality_dropout(mask, 0.3, 0.3, generator=torch.Generator().manual_seed(0))
    assert bool((out.sum(1) >= 1).all())
    assert 0.2 < float((out[:, 0] == 0).float().mean()) < 0.4
    assert 0.2 < float((out[:, 1] == 0).float().mean()) < 0.4
    assert torch.equal(modality_dropout(mask, 0.0, 0.0), mask)


def test_soft_cross_entropy_matches_cross_entropy_on_hard_labels_and_weights_select_examples():
    logits = torch.randn(6, 4)
    label = torch.tensor([0, 1, 2, 3, 0, 1])
    target = F.one_hot(label, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, target), F.cross_entropy(logits, label), atol=1e-6)
    w = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(
        soft_cross_entropy(logits, target, weight=w), F.cross_entropy(logits[:2], label[:2]), atol=1e-6
    )
    smooth = soft_cross_entropy(logits, target, smoothing=0.1)
    assert torch.allclose(smooth, F.cross_entropy(logits, label, label_smoothing=0.1), atol=1e-6)
