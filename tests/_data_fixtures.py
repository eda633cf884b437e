"""Tiny media files generated in tmp_path for the data tests (nothing is committed)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_wav(path: Path, duration_s: float, rate_hz: int = 22_050, channels: int = 1, freq_hz: float = 440.0) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(duration_s * rate_hz))) / rate_hz
    x = (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(str(path), x, rate_hz)
    return path


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_video(
    path: Path,
    duration_s: float = 1.0,
    fps: int = 10,
    with_audio: bool = True,
    audio_rate_hz: int = 22_050,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """An MP4 (MPEG-4 part 2 video, AAC audio) whose frame k is filled with gray level 10*k."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        as_ = c.add_stream("aac", rate=audio_rate_hz, layout="mono") if with_audio else None
        n_frames = int(round(duration_s * fps))
        for k in range(n_frames):
            img = np.full((size[1], size[0], 3), min(255, 10 * k), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            for pkt in vs.encode(frame):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if as_ is not None:
            n = int(round(duration_s * audio_rate_hz))
            t = np.arange(n) / audio_rate_hz
            wave = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[None, :]
            step = 1024
            for i in range(0, n, step):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, i : i + step]), format="fltp", layout="mono"
                )
                af.sample_rate = audio_rate_hz
                af.pts = i
                af.time_base = Fraction(1, audio_rate_hz)
                for pkt in as_.encode(af):
                    c.mux(pkt)
            for pkt in as_.encode(None):
                c.mux(pkt)
    return path


def make_paired(root: Path, classes: dict[str, list[float]], n_images: int = 5, audio_dir: str = "audio") -> Path:
    """images/<c>/{1..n}.png and <audio_dir>/<c>/r<i>.wav of the given durations (seconds)."""
    for ci, (cls, durs) in enumerate(classes.items()):
        for k in range(1, n_images + 1):
            write_image(root / "images" / cls / f"{k}.png", (40 * ci % 256, 20 * k, 100))
        for i, d in enumerate(durs):
            write_wav(
                root / audio_dir / cls / f"r{i}.wav",
                d,
                rate_hz=(22_050, 8_000, 44_100)[i % 3],
                channels=1 + i % 2,
                freq_hz=200 + 100 * ci,
            )
    return root


def make_video_set(root: Path) -> Path:
    """<class>/<speaker>_<class>.mp4: two classes, two speakers, half-second clips with sound."""
    for cls in ("hi", "yo"):
        for spk in ("s1", "s2"):
            write_video(root / cls / f"{spk}_{cls}.mp4", duration_s=0.5)
    return root


def make_manifest_set(root: Path) -> Path:
    """manifest.csv naming a recording and a photo per row, with label, split and group."""
    lines = ["image,audio,label,split,group"]
    for i in range(4):
        write_wav(root / f"a{i}.wav", 1.0, rate_hz=16_000)
        write_image(root / f"i{i}.png", (60 * i, 0, 0))
        lines.append(f"i{i}.png,a{i}.wav,{'x' if i % 2 else 'y'},{'test' if i < 2 else 'train'},site{i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def make_images_set(root: Path) -> Path:
    """images/<class>/<k>.png and no sound."""
    for ci, cls in enumerate(("crow", "owl")):
        for k in range(3):
            write_image(root / "images" / cls / f"{k}.png", (80 * ci, 40 * k, 0))
    return root


# One tiny set per registered layout, with the classes it holds (tests/test_data_layouts.py runs every layout).
LAYOUT_SETS: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "paired": (lambda root: make_paired(root, {"crow": [2.0, 1.0], "owl": [2.0, 3.0]}, n_images=2), ["crow", "owl"]),
    "video": (make_video_set, ["hi", "yo"]),
    "manifest": (make_manifest_set, ["x", "y"]),
    "images": (make_images_set, ["crow", "owl"]),
}
