"""A torch `Dataset` over one split of an `AVDataset` (the only module of the data layer that imports torch).

Each item is a dict:

    audio  (T,) float32      the window at cfg.sample_rate_hz; zeros when the example has no audio
    image  (3, H, W) uint8   the photo, or the chosen frame of a video window; zeros when there is none
           (T, 3, H, W) uint8 with data.frames_per_window T > 1: the window's T frames (a photo: T copies of it)
    mask   (2,) float32      [audio_present, image_present] (the model's mask_order)
    label  int               index into AVDataset.classes
    frames (N, 3, H, W) uint8  all frames of a video window (only with with_frames=True; photos: N = 1)

Species-paired data is re-paired every epoch: call `set_epoch(epoch)` (or build one per epoch). A file that fails
to decode while loading gives a missing modality (mask 0) and a warning, never an exception mid-epoch (strict:
MediaError).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeav.errors import DataError
from edgeav.train.data.dataset import AVDataset
from edgeav.train.data.records import Sample


def model_image(visual: np.ndarray, clip_frames: int, frame: str = "middle") -> np.ndarray:
    """What the model's image input takes from a loaded photo (3, H, W) or a window's frames (N, 3, H, W): with
    `clip_frames` T = 1 one frame (3, H, W), the `frame` one of N; with T > 1 all T frames (T, 3, H, W) (a photo: T
    copies of it, a still clip)."""
    frames = visual[None] if visual.ndim == 3 else visual  # (N, 3, H, W)
    if clip_frames == 1:
        n = frames.shape[0]
        return frames[{"middle": n // 2, "first": 0, "last": n - 1}[frame]]
    if frames.shape[0] == 1:
        return np.repeat(frames, clip_frames, axis=0)
    if frames.shape[0] != clip_frames:
        raise DataError(f"a window has {frames.shape[0]} frames, frames_per_window is {clip_frames}")
    return frames


class TorchAVDataset(Dataset):
    def __init__(
        self,
        data: AVDataset,
        split: str,
        epoch: int = 0,
        seed: int | None = None,
        frame: str = "middle",
        with_frames: bool = False,
    ) -> None:
        if frame not in ("middle", "first", "last"):
            raise DataError(f"frame must be 'middle', 'first' or 'last', got {frame!r}")
        self.data = data
        self.split = split
        self.seed = data.cfg.seed if seed is None else int(seed)
        self.frame = frame
        self.with_frames = with_frames
        size = data.cfg.image_size_px
        self.clip_frames = data.cfg.frames_per_window  # T: > 1 feeds all of a window's frames
        self._zero_image = np.zeros((3, size, size), dtype=np.uint8)
        self._zero_audio = np.zeros(data.window_samples, dtype=np.float32)
        self.epoch = -1
        self.items: list[tuple[Sample | None, Sample | None]] = []
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Re-pair (species-paired data) for `epoch`; a pure function of (seed, epoch)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.items = self.data.pairs(self.split, self.epoch, self.seed)

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, frames: np.ndarray | None) -> np.ndarray:
        if frames is None:
            shape = self._zero_image.shape if self.clip_frames == 1 else (self.clip_frames, *self._zero_image.shape)
            return np.zeros(shape, dtype=np.uint8)
        return model_image(frames, self.clip_frames, self.frame)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a_sample, v_sample = self.items[index]
        audio = visual = None
        if a_sample is not None and a_sample.audio is not None:
            audio = self.data.load_audio(a_sample.audio)
        if v_sample is not None:
            if v_sample.image is not None:
                visual = self.data.load_image(v_sample.image)
            elif v_sample.video is not None:
                visual = self.data.load_frames(v_sample.video)
        frames = None
        if visual is not None:
            frames = visual[None] if visual.ndim == 3 else visual  # (N, 3, H, W)
        label = (a_sample or v_sample).label  # type: ignore[union-attr]
        item: dict[str, Any] = {
            "audio": torch.from_numpy(np.array(audio if audio is not None else self._zero_audio, dtype=np.float32)),
            "image": torch.from_numpy(np.array(self._image(frames))),
            "mask": torch.tensor([float(audio is not None), float(frames is not None)], dtype=torch.float32),
            "label": int(label),
        }
        if self.with_frames:
            n = self.data.cfg.frames_per_clip if (v_sample is not None and v_sample.video is not None) else 1
            item["frames"] = torch.from_numpy(
                np.array(frames if frames is not None else np.stack([self._zero_image] * n))
            )
        return item
