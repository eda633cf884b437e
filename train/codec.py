"""Compression artifacts of a camera's stream, put into training clips (`train.augment.image.codec_prob`).

A field camera delivers H.264 at a low bit rate; training clips are often another codec (GRID: MPEG-1) at a higher
one. A temporal picture branch that reads frame differences sees the encoder's changes as motion: measured on the
GRID test clips, `edgeav-motion`'s picture head read 38/40 of the MPEG-1 clips and 29/40 of the same clips in the
H.264 stream (`grid_stream_120s.mp4`, ~100 kbit/s), decoded alike by PyAV or GStreamer (so not the scaler). The cure is
the codec itself: each picked clip's T frames go through libx264 at a constant rate factor drawn from a range and
come back decoded, in memory (PyAV's codec contexts, no container).
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import torch
import torch.nn.functional as F


def reencode_h264(frames: np.ndarray, crf: int, *, preset: str = "veryfast") -> np.ndarray:
    """frames (T, 3, H, W) uint8 RGB -> the same after a libx264 round trip at constant rate factor `crf` (0-51,
    higher = coarser). H and W must be even (4:2:0)."""
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"reencode_h264 takes (T, 3, H, W) uint8 frames, got {frames.shape} {frames.dtype}")
    n, _, h, w = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"reencode_h264 needs even frame sides for 4:2:0, got {w}x{h}")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.thread_count = 1  # the training process owns the cores
    enc.options = {"crf": str(int(crf)), "preset": preset, "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    dec.thread_count = 1
    packets = []
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f.transpose(1, 2, 0)), format="rgb24")
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    out = [fr.to_ndarray(format="rgb24") for p in packets for fr in dec.decode(p)]
    out += [fr.to_ndarray(format="rgb24") for fr in dec.decode(None)]
    if len(out) != n:
        raise RuntimeError(f"libx264 round trip returned {len(out)} frames for {n}")
    return np.stack(out).transpose(0, 3, 1, 2).copy()


def codec_augment(
    image: torch.Tensor,
    prob: float,
    crf_range: tuple[int, int],
    gen: torch.Generator,
    *,
    camera_scale: float = 1.0,
    roi: tuple[float, float, float, float] | None = None,
) -> torch.Tensor:
    """image (B, 3, H, W) or clips (B, T, 3, H, W) uint8: each example, with probability `prob`, re-encoded at a
    CRF drawn uniformly from `crf_range` (inclusive). Draws from `gen`, so a resumed run repeats.

    H.264 works on 16-pixel blocks of the CAMERA's frame: at `camera_scale` (camera width / model width) > 1 the
    frames are scaled up by it before the encoder and back after, so the blocks are the size they are in the field.
    With a region of interest `roi` (x0, y0, x1, y1 fractions, the model's crop) only that box (plus an 8-pixel
    margin) goes through the codec: what the model never sees need not be encoded."""
    if prob <= 0:
        return image
    pick = torch.rand(image.shape[0], generator=gen) < prob
    crfs = torch.randint(crf_range[0], crf_range[1] + 1, (image.shape[0],), generator=gen)
    if not bool(pick.any()):
        return image
    h, w = image.shape[-2:]
    r0, r1, c0, c1 = 0, h, 0, w
    if roi is not None:
        margin = 8
        r0, r1 = max(0, math.floor(roi[1] * h) - margin), min(h, math.ceil(roi[3] * h) + margin)
        c0, c1 = max(0, math.floor(roi[0] * w) - margin), min(w, math.ceil(roi[2] * w) + margin)
    out = image.clone()
    for b in torch.nonzero(pick).flatten().tolist():
        x = image[b]
        clip = (x if x.ndim == 4 else x[None])[..., r0:r1, c0:c1]  # (T, 3, h', w')
        size = (
            2 * max(1, round(clip.shape[-2] * camera_scale / 2)),
            2 * max(1, round(clip.shape[-1] * camera_scale / 2)),
        )
        big = clip if size == tuple(clip.shape[-2:]) else _resize_u8(clip, size)
        y = torch.from_numpy(reencode_h264(big.cpu().numpy(), int(crfs[b])))
        y = y if size == tuple(clip.shape[-2:]) else _resize_u8(y, tuple(clip.shape[-2:]))
        if x.ndim == 4:
            out[b, :, :, r0:r1, c0:c1] = y.to(image.device)
        else:
            out[b, :, r0:r1, c0:c1] = y[0].to(image.device)
    return out


def _resize_u8(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> (T, 3, *size) uint8, bilinear with antialiasing (as a camera's scaler)."""
    y = F.interpolate(frames.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


__all__ = ["codec_augment", "reencode_h264"]
