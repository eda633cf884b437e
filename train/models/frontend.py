"""Preprocessing that lives inside the model: waveform -> log-mel, and uint8 RGB -> normalized float.

Everything here is built from ops that ONNX Runtime and TensorRT run as they are: the STFT is a `Conv1d` with
fixed DFT kernels (real and imaginary rows, Hann window, centred framing with reflect padding as librosa's
`center=True`), the power spectrum is `re^2 + im^2`, the mel filter bank is a `MatMul`, and the log is
`10 * log10(max(x, floor))`. The parameters come from `AudioContract` / `ImageContract` and nothing else.

INT8: the model holds these modules in a submodule named `frontend`, so every ONNX node they export has a name that
starts with `FRONTEND_NODE_PREFIX` ("/frontend/"). The exporter keeps those nodes in float (exclude them from
quantization by that prefix): quantizing a DFT kernel or a dB scale would move the features the model was trained on.

The mel filter bank is our own numpy code (Slaney mel scale and Slaney area normalization, the defaults of
`librosa.filters.mel`); librosa is only a test dependency, used to check parity.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeav.contract import AudioContract, ImageContract, InputContract

log = logging.getLogger(__name__)

FRONTEND_NODE_PREFIX = "/frontend/"
"""Prefix of the ONNX node names of the in-model preprocessing; keep these nodes out of INT8 quantization."""

# Slaney mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above.
_F_SP_HZ = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP_HZ
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    f = np.asarray(f_hz, dtype=np.float64)
    mel = f / _F_SP_HZ
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    m = np.asarray(mel, dtype=np.float64)
    hz = _F_SP_HZ * m
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log_part, hz)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """Triangular mel filters, Slaney scale and area norm (as `librosa.filters.mel` defaults). (n_mels, 1 + n_fft // 2)."""
    n_freqs = 1 + n_fft // 2
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, n_freqs)  # (F,)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))  # (M + 2,)
    fdiff = np.diff(mel_hz)  # (M + 1,)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (M + 2, F)
    lower = -ramps[:-2] / fdiff[:-1, None]  # (M, F)
    upper = ramps[2:] / fdiff[1:, None]  # (M, F)
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (M, F)
    enorm = 2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels])  # (M,) Slaney: constant area per filter
    weights *= enorm[:, None]
    if np.any(weights.max(axis=1) == 0):
        log.warning("some mel filters are empty (n_mels=%d too high for n_fft=%d?)", n_mels, n_fft)
    return weights.astype(np.float32)


def dft_kernels(n_fft: int, win_length: int) -> tuple[np.ndarray, int]:
    """Windowed DFT rows for a Conv1d, trimmed to the non-zero part of the window.

    librosa centres a periodic Hann window of `win_length` inside `n_fft` samples; the rows outside it are zero, so
    the kernel only spans `win_length` taps and the input is read from `offset = (n_fft - win_length) // 2` on.
    Returns ((2 * F, 1, win_length) float32 with the F real rows then the F imaginary rows, offset).
    """
    n_freqs = 1 + n_fft // 2
    offset = (n_fft - win_length) // 2
    n = np.arange(win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)  # periodic Hann, (W,)
    k = np.arange(n_freqs, dtype=np.float64)[:, None]  # (F, 1)
    phase = 2.0 * np.pi * k * (n[None, :] + offset) / n_fft  # (F, W): sample n sits at n + offset in the frame
    real = window * np.cos(phase)  # (F, W)
    imag = -window * np.sin(phase)  # (F, W)
    kernels = np.concatenate([real, imag], axis=0)[:, None, :]  # (2F, 1, W)
    return kernels.astype(np.float32), offset


class LogMel(nn.Module):
    """(B, T) float32 waveform at the contract sample rate -> (B, 1, n_mels, n_frames) log-mel in dB.

    Matches `librosa.power_to_db(librosa.feature.melspectrogram(y, sr, n_fft, hop_length, win_length,
    window="hann", center=True, pad_mode="reflect", power=2, n_mels, fmin, fmax), ref=1, amin=floor, top_db=None)`.
    """

    def __init__(self, contract: AudioContract) -> None:
        super().__init__()
        self.contract = contract
        kernels, offset = dft_kernels(contract.n_fft, contract.win_length)
        self.n_freqs = 1 + contract.n_fft // 2
        self.pad = contract.n_fft // 2
        self.offset = offset
        self.win_length = contract.win_length
        self.hop_length = contract.hop_length
        self.register_buffer("dft", torch.from_numpy(kernels), persistent=False)  # (2F, 1, W)
        fb = mel_filterbank(
            contract.sample_rate_hz, contract.n_fft, contract.n_mels, contract.fmin_hz, contract.fmax_hz
        )
        self.register_buffer("mel_fb", torch.from_numpy(fb), persistent=False)  # (M, F)
        self.log_floor = float(contract.log_floor)
        self.top_db = contract.top_db

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)  # (B, 1, T)
        x = F.pad(x, (self.pad, self.pad), mode="reflect")  # (B, 1, T + n_fft), centred frames
        n_frames = 1 + (x.shape[-1] - 2 * self.pad) // self.hop_length
        end = self.offset + (n_frames - 1) * self.hop_length + self.win_length
        x = x[:, :, self.offset : end]  # (B, 1, T') only the taps the window covers
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # (B, 2F, frames)
        re, im = spec[:, : self.n_freqs], spec[:, self.n_freqs :]  # (B, F, frames) each
        power = re * re + im * im  # (B, F, frames)
        mel = torch.matmul(self.mel_fb, power)  # (M, F) @ (B, F, frames) -> (B, M, frames)
        db = torch.log10(torch.clamp(mel, min=self.log_floor)) * 10.0  # (B, M, frames)
        if self.top_db is not None:
            peak = db.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
            db = torch.maximum(db, peak - self.top_db)
        return db.unsqueeze(1)  # (B, 1, M, frames)


class ImageNormalize(nn.Module):
    """(B, 3, H, W) or (B, T, 3, H, W) uint8 RGB -> float32 `(x / 255 - mean) / std`, cropped to the contract's
    region of interest (a fixed slice: rows r0:r1, columns c0:c1 of `roi_rows_px` / `roi_cols_px`)."""

    def __init__(self, contract: ImageContract) -> None:
        super().__init__()
        mean = torch.tensor(contract.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(contract.std, dtype=torch.float32).view(3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)  # (3, 1, 1)
        self.register_buffer("shift", -mean / std, persistent=False)  # (3, 1, 1)
        self.rows = contract.roi_rows_px
        self.cols = contract.roi_cols_px
        self.full = contract.roi is None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.full:
            image = image[..., self.rows[0] : self.rows[1], self.cols[0] : self.cols[1]]  # (..., 3, h, w) the ROI
        return image.float() * self.scale + self.shift  # (B, 3, h, w) or (B, T, 3, h, w)


class Frontend(nn.Module):
    """Both preprocessing paths, called once per forward as `self.frontend(audio, image)`.

    (B, T) float32 waveform, (B, 3, H, W) uint8 (or (B, T, 3, H, W)) -> (audio features, the float32 normalized
    image of the same rank, cropped to the contract's region of interest), where the
    audio features are the log-mel (B, 1, n_mels, n_frames) for backbones that take a log-mel (`audio_input="logmel"`),
    or the waveform itself (B, T) for those that take it raw (`audio_input="waveform"`, wav2vec2).

    The model keeps it as `self.frontend` and calls it (not its children), so the ONNX nodes are named
    /frontend/audio/... and /frontend/image/... (`FRONTEND_NODE_PREFIX`). A forward hook on `frontend.audio` sees the
    log-mel (training's SpecAugment hooks there).
    """

    def __init__(self, contract: InputContract, audio_input: str = "logmel") -> None:
        super().__init__()
        if audio_input not in ("logmel", "waveform"):
            raise ValueError(f"audio_input must be 'logmel' or 'waveform', got {audio_input!r}")
        self.audio_input = audio_input
        self.audio = LogMel(contract.audio)
        self.image = ImageNormalize(contract.image)

    def forward(self, audio: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.audio(audio) if self.audio_input == "logmel" else audio  # (B, 1, M, frames) or (B, T)
        return feats, self.image(image)  # ..., (B, 3, H, W)
