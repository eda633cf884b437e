"""The model's input contract: what the sensors give, and the preprocessing that lives inside the model.

The exported model takes a raw mono waveform at `audio.sample_rate_hz` and uint8 RGB frames; the log-mel
front end and the image normalization are part of the model. The runtime reads this contract from the
bundle's manifest and nothing else.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeav.timebase import NS_PER_S, s_to_ns, samples_for_ns


class AudioContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate_hz: int = Field(16_000, ge=4_000, le=192_000, description="Sample rate of the waveform input, Hz.")
    window_s: float = Field(5.0, gt=0.0, le=60.0, description="Length of one audio window, seconds.")
    n_fft: int = Field(512, ge=64, le=8192, description="STFT frame length, samples.")
    hop_length: int = Field(160, ge=16, le=4096, description="STFT hop, samples.")
    win_length: int = Field(400, ge=16, le=8192, description="Analysis window length (Hann), samples.")
    n_mels: int = Field(64, ge=8, le=256, description="Number of mel bands.")
    fmin_hz: float = Field(50.0, ge=0.0, description="Lowest mel band edge, Hz.")
    fmax_hz: float = Field(8_000.0, gt=0.0, description="Highest mel band edge, Hz (at most Nyquist).")
    log_floor: float = Field(
        1e-10, gt=0.0, le=1e-2, description="Power floor before 10*log10 (dB floor = 10*log10(floor))."
    )
    top_db: float | None = Field(None, gt=0.0, description="If set, clamp to max - top_db per window, dB.")

    @model_validator(mode="after")
    def _check(self) -> AudioContract:
        if self.fmax_hz > self.sample_rate_hz / 2:
            raise ValueError(f"fmax_hz={self.fmax_hz} is above Nyquist ({self.sample_rate_hz / 2})")
        if self.fmin_hz >= self.fmax_hz:
            raise ValueError(f"fmin_hz={self.fmin_hz} must be below fmax_hz={self.fmax_hz}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} exceeds n_fft={self.n_fft}")
        return self

    @property
    def window_ns(self) -> int:
        return s_to_ns(self.window_s)

    @property
    def window_samples(self) -> int:
        return samples_for_ns(self.window_ns, self.sample_rate_hz)

    @property
    def n_frames(self) -> int:
        """Number of STFT frames for one window (centred framing, as librosa's center=True)."""
        return 1 + self.window_samples // self.hop_length


class ImageContract(BaseModel):
    """Frames the model takes. `n_frames` = T: 1 is a still, (B, 3, H, W) (layout NCHW); T > 1 is a clip of T
    consecutive frames at `frame_rate_hz` from the window's start, (B, T, 3, H, W) (layout NTCHW). `roi` is a fixed
    box in frame fractions that the model itself crops (inside the graph, after normalization), so the runtime feeds
    whole frames and crops exactly as training did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    height_px: int = Field(224, ge=32, le=1024, description="Frame height the model takes, pixels.")
    width_px: int = Field(224, ge=32, le=1024, description="Frame width the model takes, pixels.")
    layout: Literal["NCHW", "NTCHW"] = Field(
        "NCHW", description="Tensor layout of the frame input: NCHW for one frame, NTCHW for T > 1 (set from n_frames)."
    )
    dtype: Literal["uint8"] = Field("uint8", description="Frames are raw RGB uint8, normalized inside the model.")
    n_frames: int = Field(1, ge=1, le=256, description="Frames per window fed to the model (T).")
    frame_rate_hz: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description="Rate of the T frames of a window, Hz (frame k at window start + k / rate); needed when T > 1.",
    )
    roi: tuple[float, float, float, float] | None = Field(
        None, description="Region of interest (x0, y0, x1, y1) in fractions of the frame, cropped inside the model."
    )
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="Per-channel mean (on 0..1 scale).")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="Per-channel std (on 0..1 scale).")

    @model_validator(mode="before")
    @classmethod
    def _layout_from_frames(cls, data: object) -> object:
        if isinstance(data, dict) and "layout" not in data:
            data = {**data, "layout": "NTCHW" if int(data.get("n_frames", 1)) > 1 else "NCHW"}
        return data

    @model_validator(mode="after")
    def _check(self) -> ImageContract:
        want = "NTCHW" if self.n_frames > 1 else "NCHW"
        if self.layout != want:
            raise ValueError(f"layout {self.layout} does not fit n_frames={self.n_frames} (use {want})")
        if self.n_frames > 1 and self.frame_rate_hz is None:
            raise ValueError(f"n_frames={self.n_frames} needs frame_rate_hz (the rate of the window's frames)")
        if self.roi is not None:
            x0, y0, x1, y1 = self.roi
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(
                    f"roi {self.roi} must be (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
                )
            (ry0, ry1), (rx0, rx1) = self.roi_rows_px, self.roi_cols_px
            if ry1 - ry0 < 8 or rx1 - rx0 < 8:
                raise ValueError(f"roi {self.roi} of a {self.width_px}x{self.height_px} frame is under 8 px a side")
        return self

    @property
    def clip_s(self) -> float:
        """Seconds the T frames span (T / frame_rate_hz; 0 for a still)."""
        return self.n_frames / self.frame_rate_hz if self.n_frames > 1 and self.frame_rate_hz else 0.0

    def frame_offsets_ns(self, window_ns: int) -> list[int]:
        """Where the frames sit in a window of `window_ns` (ns from its start): T frames at the frame rate from the
        start; one frame: the centre."""
        if self.n_frames == 1:
            return [window_ns // 2]
        assert self.frame_rate_hz is not None
        return [int(round(k * NS_PER_S / self.frame_rate_hz)) for k in range(self.n_frames)]

    @property
    def roi_rows_px(self) -> tuple[int, int]:
        """(first, end) row of the region of interest; the whole height without one. One rounding rule: floor of
        the start, ceil of the end."""
        if self.roi is None:
            return 0, self.height_px
        return int(math.floor(self.roi[1] * self.height_px)), int(math.ceil(self.roi[3] * self.height_px))

    @property
    def roi_cols_px(self) -> tuple[int, int]:
        """(first, end) column of the region of interest; the whole width without one."""
        if self.roi is None:
            return 0, self.width_px
        return int(math.floor(self.roi[0] * self.width_px)), int(math.ceil(self.roi[2] * self.width_px))

    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one window's image input without the batch axis: (3, H, W) or (T, 3, H, W)."""
        one = (3, self.height_px, self.width_px)
        return one if self.n_frames == 1 else (self.n_frames, *one)


class InputContract(BaseModel):
    """Inputs of an exported model: `audio` (B, window_samples) float32, `image` (B, 3, H, W) uint8 (or
    (B, T, 3, H, W) with T = image.n_frames > 1), `mask` (B, 2) float32."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audio: AudioContract = Field(default_factory=AudioContract, description="Waveform input and log-mel front end.")
    image: ImageContract = Field(default_factory=ImageContract, description="Frame input and normalization.")
    input_names: tuple[str, str, str] = Field(("audio", "image", "mask"), description="ONNX input names.")
    mask_order: tuple[str, str] = Field(("audio", "image"), description="Columns of the modality mask (1 = present).")

    @model_validator(mode="after")
    def _check(self) -> InputContract:
        if self.image.clip_s > self.audio.window_s + 1e-9:
            raise ValueError(
                f"{self.image.n_frames} frames at {self.image.frame_rate_hz} Hz span "
                f"{self.image.clip_s:.3f} s, longer than the {self.audio.window_s} s window"
            )
        return self

    def shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        return {
            "audio": (batch, self.audio.window_samples),  # (B, T)
            "image": (batch, *self.image.frame_shape()),  # (B, 3, H, W) or (B, T, 3, H, W) uint8
            "mask": (batch, 2),  # (B, 2) float32
        }


__all__ = ["AudioContract", "ImageContract", "InputContract", "NS_PER_S"]
