"""Real background noise: a bank of noise recordings, and mixing at a signal-to-noise ratio.

One definition for both uses: training mixes the bank's noise into the sound of examples (`train.augment.noise`),
and the robustness evaluation (`edgeav eval --noise PATH --snr-db ...`) mixes a noise it never trained on into test
windows. Both cut a noise segment of the window's length from a file of the bank at an offset drawn from an RNG,
looping a file that is shorter than the window, and scale it so that

    10 * log10(P_clean / P_noise) = snr_db,   P = mean of the squared samples of the whole window

A silent window (P_clean == 0) has no SNR: it gets the noise at the level of a -20 dBFS RMS signal, so that the
noise is still there (a field unit hears the wind in a pause too).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeav.errors import DataError, MediaError
from edgeav.train.data import media

log = logging.getLogger(__name__)

SILENT_REFERENCE_RMS = 0.1  # -20 dBFS: the level a silent window's noise is mixed against


def noise_files(path: str | Path) -> list[Path]:
    """The audio files at `path` (a file, or every audio file under a folder, recursively, sorted)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: noise path not found")
    files = (
        [p]
        if p.is_file()
        else sorted(f for f in p.rglob("*") if f.is_file() and media.media_type(f) in ("audio", "video"))
    )
    if not files:
        raise DataError(f"{p}: no audio files for noise (looked for audio and video files, recursively)")
    return files


class NoiseBank:
    """Noise recordings decoded once, mono float32 at `sample_rate_hz`. Files that do not decode, or are silent,
    are an error naming the file (a noise bank with a broken file would quietly train on less)."""

    def __init__(self, path: str | Path, sample_rate_hz: int, min_duration_s: float = 0.5) -> None:
        self.path = Path(path)
        self.sample_rate_hz = int(sample_rate_hz)
        self.files = noise_files(path)
        self.tracks: list[np.ndarray] = []
        for f in self.files:
            try:
                x = np.asarray(media.decode_audio(f, self.sample_rate_hz), dtype=np.float32)  # (N,)
            except MediaError as e:
                raise DataError(f"noise: {e}") from None  # MediaError names the file
            if x.size < int(min_duration_s * self.sample_rate_hz):
                raise DataError(
                    f"noise file {f}: {x.size / self.sample_rate_hz:.2f} s, shorter than {min_duration_s} s"
                )
            if not np.any(x):
                raise DataError(f"noise file {f}: silent (all zeros)")
            self.tracks.append(x)
        self.duration_s = sum(t.size for t in self.tracks) / self.sample_rate_hz
        log.info(
            "noise bank %s: %d file(s), %.1f s at %d Hz",
            self.path,
            len(self.tracks),
            self.duration_s,
            self.sample_rate_hz,
        )

    def segment(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """(n_samples,) float32 noise: a file drawn with probability by duration, from a random offset, looped."""
        sizes = np.array([t.size for t in self.tracks], dtype=np.float64)
        k = int(rng.choice(len(self.tracks), p=sizes / sizes.sum()))
        track = self.tracks[k]
        start = int(rng.integers(0, track.size))
        idx = (start + np.arange(int(n_samples))) % track.size  # loops a short file
        return track[idx]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean (..., N) + noise (..., N) scaled to `snr_db` per window (last axis), as float32."""
    clean = np.asarray(clean, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32)
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} differ in shape")
    p_clean = np.mean(clean.astype(np.float64) ** 2, axis=-1, keepdims=True)
    p_clean = np.where(p_clean > 0, p_clean, SILENT_REFERENCE_RMS**2)
    p_noise = np.maximum(np.mean(noise.astype(np.float64) ** 2, axis=-1, keepdims=True), 1e-20)
    gain = np.sqrt(p_clean / (p_noise * 10.0 ** (float(snr_db) / 10.0)))
    return (clean + noise * gain).astype(np.float32)


__all__ = ["NoiseBank", "SILENT_REFERENCE_RMS", "mix_at_snr", "noise_files"]
