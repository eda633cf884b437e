"""The spectrogram of a detection's evidence audio, drawn on the server: an SVG with time and frequency axes around
a PNG of the short-time power spectrum (dB, a perceptual colour map).

numpy and the standard library only (zlib for PNG, `wave` for WAV): the unit has neither Pillow nor matplotlib.
FLAC evidence is read with the `soundfile` package when it is installed (evidence.audio_format: flac needs it too).
"""

from __future__ import annotations

import base64
import struct
import wave
import zlib
from pathlib import Path

import numpy as np

from edgeav.errors import ConfigError

MAX_WIDTH_PX = 900  # columns of the image (frames are averaged down to this)
MIN_WIDTH_PX = 480  # width the image is shown at, at least, px
DB_RANGE = 80.0  # dB below the loudest bin shown
# anchors of a viridis-like colour map (dark blue -> green -> yellow), interpolated to 256 steps
_ANCHORS = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137], [53, 183, 121],
     [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    dtype=np.float64,
)  # fmt: skip
_LUT = np.stack(
    [np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)  # (256, 3)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate."""
    if path.suffix.lower() == ".flac":
        try:
            import soundfile
        except ImportError:
            raise ConfigError("a FLAC spectrogram needs the soundfile package (pip install soundfile)") from None
        x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return x.mean(axis=1), int(rate)
    with wave.open(str(path), "rb") as w:
        n, width, ch, rate = w.getnframes(), w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(n)
    if width != 2:
        raise ConfigError(f"{path.name}: {8 * width}-bit WAV; the spectrogram reads 16-bit PCM")
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, ch).mean(axis=1), int(rate)


def power_db(x: np.ndarray, rate: int) -> np.ndarray:
    """(freq bins, frames) power in dB relative to the loudest bin, clipped at -DB_RANGE."""
    n_fft = 512 if rate >= 16_000 else 256
    hop = n_fft // 4
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]  # (frames, n_fft)
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :], axis=1)) ** 2  # (frames, n_fft / 2 + 1)
    db = 10.0 * np.log10(np.maximum(spec, 1e-12))
    db = np.maximum(db - db.max(), -DB_RANGE)
    return db.T


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG of an (H, W, 3) uint8 image (filter 0 on every row, zlib)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    mag = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def spectrogram_svg(path: Path) -> str:
    """The SVG document: the image with a time axis (s) below and a frequency axis (kHz) on the left."""
    x, rate = read_audio(path)
    db = power_db(x, rate)  # (bins, frames), low frequencies first
    bins, frames = db.shape
    if frames > MAX_WIDTH_PX:  # average neighbouring frames down to the width shown
        edges = np.linspace(0, frames, MAX_WIDTH_PX + 1).astype(int)
        db = np.stack([db[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    level = np.clip((db + DB_RANGE) / DB_RANGE * 255.0, 0, 255).astype(np.uint8)[::-1]  # high frequencies on top
    img = _LUT[level]  # (bins, width, 3)
    h = img.shape[0]
    w = max(img.shape[1], MIN_WIDTH_PX)  # a short clip's few columns are stretched to a readable width
    duration_s, nyq_khz = len(x) / rate, rate / 2000.0
    left, bottom, top, right = 56, 40, 10, 12
    width, height = left + w + right, top + h + bottom
    png = base64.b64encode(png_bytes(img)).decode("ascii")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>spectrogram, {duration_s:.2f} s at {rate} Hz</title>",
        '<rect width="100%" height="100%" fill="#fff"/>',
        f'<image x="{left}" y="{top}" width="{w}" height="{h}" preserveAspectRatio="none" '
        f'href="data:image/png;base64,{png}"/>',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#333"/>',
    ]
    step = _nice_step(duration_s, 8)
    t = 0.0
    while t <= duration_s + 1e-9:
        px = left + t / duration_s * w if duration_s > 0 else left
        out.append(f'<line x1="{px:.1f}" y1="{top + h}" x2="{px:.1f}" y2="{top + h + 5}" stroke="#333"/>')
        out.append(f'<text x="{px:.1f}" y="{top + h + 17}" text-anchor="middle">{t:g}</text>')
        t += step
    out.append(f'<text x="{left + w / 2:.1f}" y="{height - 4}" text-anchor="middle">time (s)</text>')
    fstep = _nice_step(nyq_khz, 6)
    f = 0.0
    while f <= nyq_khz + 1e-9:
        py = top + h - f / nyq_khz * h
        out.append(f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#333"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{f:g}</text>')
        f += fstep
    out.append(
        f'<text x="14" y="{top + h / 2:.1f}" text-anchor="middle" transform="rotate(-90 14 {top + h / 2:.1f})">'
        "frequency (kHz)</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["spectrogram_svg", "png_bytes", "power_db", "read_audio"]
