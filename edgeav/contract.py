"""The model's input contract: what the sensors give, and the preprocessing that lives inside the model.

The exported model takes a raw mono waveform at `audio.sample_rate_hz` and uint8 RGB frames; the log-mel
front end and the image normalization are part of the model. The runtime reads this contract from the
bundle's manifest and nothing else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeav.timebase import NS_PER_S, samples_for_ns, s_to_ns


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
    log_floor: float = Field(1e-10, gt=0.0, le=1e-2, description="Power floor before 10*log10 (dB floor = 10*log10(floor)).")
    top_db: float | None = Field(None, gt=0.0, description="If set, clamp to max - top_db per window, dB.")

    @model_validator(mode="after")
    def _check(self) -> "AudioContract":
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
    model_config = ConfigDict(extra="forbid", frozen=True)

    height_px: int = Field(224, ge=32, le=1024, description="Frame height the model takes, pixels.")
    width_px: int = Field(224, ge=32, le=1024, description="Frame width the model takes, pixels.")
    layout: Literal["NCHW"] = Field("NCHW", description="Tensor layout of the frame input.")
    dtype: Literal["uint8"] = Field("uint8", description="Frames are raw RGB uint8, normalized inside the model.")
    n_frames: int = Field(1, ge=1, le=64, description="Frames per window fed to the model.")
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="Per-channel mean (on 0..1 scale).")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="Per-channel std (on 0..1 scale).")


class InputContract(BaseModel):
    """Inputs of an exported model: `audio` (B, window_samples) float32, `image` (B, 3, H, W) uint8, `mask` (B, 2) float32."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audio: AudioContract = Field(default_factory=AudioContract, description="Waveform input and log-mel front end.")
    image: ImageContract = Field(default_factory=ImageContract, description="Frame input and normalization.")
    input_names: tuple[str, str, str] = Field(("audio", "image", "mask"), description="ONNX input names.")
    mask_order: tuple[str, str] = Field(("audio", "image"), description="Columns of the modality mask (1 = present).")

    def shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        return {
            "audio": (batch, self.audio.window_samples),  # (B, T)
            "image": (batch, 3, self.image.height_px, self.image.width_px),  # (B, 3, H, W) uint8
            "mask": (batch, 2),  # (B, 2) float32
        }


__all__ = ["AudioContract", "ImageContract", "InputContract", "NS_PER_S"]
