"""Camera-codec augmentation (train.augment.image.codec_*): frames go through libx264 and come back changed the
way a compressed stream changes them, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from edgeav.schema.train import ImageAugConfig
from edgeav.train.codec import codec_augment, reencode_h264


def _moving_clip(t: int = 12, size: int = 64) -> np.ndarray:
    """A textured square that moves one pixel per frame over a gradient."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    base = np.broadcast_to(np.linspace(40, 200, size, dtype=np.uint8)[None, None, :], (3, size, size))
    clip = np.repeat(base[None], t, axis=0).copy()
    for k in range(t):
        clip[k, :, 20:36, 10 + k : 26 + k] = tex
    return clip


def test_round_trip_keeps_the_clip_and_coarser_crf_costs_more():
    clip = _moving_clip()
    fine, coarse = reencode_h264(clip, 18), reencode_h264(clip, 45)
    assert fine.shape == clip.shape and fine.dtype == np.uint8
    err_fine = np.abs(fine.astype(float) - clip).mean()
    err_coarse = np.abs(coarse.astype(float) - clip).mean()
    assert 0 < err_fine < 6  # what a viewer would call the same clip
    assert err_coarse > 1.5 * err_fine


def test_codec_augment_picks_with_prob_and_repeats_with_the_seed():
    batch = torch.from_numpy(np.stack([_moving_clip(), _moving_clip()]))
    assert codec_augment(batch, 0.0, (23, 40), torch.Generator().manual_seed(1)) is batch
    a = codec_augment(batch, 1.0, (23, 40), torch.Generator().manual_seed(1))
    b = codec_augment(batch, 1.0, (23, 40), torch.Generator().manual_seed(1))
    assert a.shape == batch.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a[0], batch[0]) and not torch.equal(a[1], batch[1])
    still = codec_augment(batch[:, 0], 1.0, (30, 30), torch.Generator().manual_seed(1))  # (B, 3, H, W) stills too
    assert still.shape == batch[:, 0].shape and not torch.equal(still, batch[:, 0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="even"):
        reencode_h264(np.zeros((2, 3, 15, 16), np.uint8), 23)
    with pytest.raises(ValidationError, match="codec_crf_min"):
        ImageAugConfig(codec_crf_min=40, codec_crf_max=30)


def test_region_of_interest_alone_goes_through_the_codec_at_camera_scale():
    batch = torch.from_numpy(np.stack([_moving_clip(8, 64)]))
    roi = (0.25, 0.25, 0.75, 0.75)  # pixels 16..48, plus an 8-pixel margin: 8..56
    out = codec_augment(batch, 1.0, (35, 35), torch.Generator().manual_seed(0), camera_scale=2.0, roi=roi)
    changed = (out != batch).any(dim=(0, 1, 2))  # (H, W)
    assert changed[8:56, 8:56].any()
    assert not changed[:8].any() and not changed[56:].any() and not changed[:, :8].any() and not changed[:, 56:].any()
