"""A small SYNTHETIC video-with-sound data set and a stream cut from it, for the quick start without real data.

Each class is a tone pattern on the sound track and a coloured shape in the picture (the same generators as
`edgeav.train.synthetic`), plus a moving "mouth" inside `MOTION_BOX` (the mouth box that the quick start's clip model
crops, `model.image_roi` of train/grid.yaml): a dark ellipse on a skin-coloured patch, the same for every class when
still, that opens and closes at a class's own rate (`motion_hz`) and, for odd classes, widens instead of opening
(`motion_axis`); the phase is random per clip and the motion runs for the whole clip, so any window of T frames sees
it. The skin patch hides the class's coloured shape inside the box, so a still frame of the box tells little (at most
whether the mouth opens or widens); the rate of its motion tells the class. Written as H.264 + AAC MP4 files that
GStreamer and PyAV both decode, at 25 fps, 160 px square by default (train/grid.yaml's image_size_px):

    OUT/videos/<class>/synthetic_<c>_<i>.mp4   + OUT/videos/manifest.csv (clip,label,split,group)
    OUT/stream.mp4 + OUT/stream.csv            the test clips joined, one segment per clip (start_s,end_s,label,clip)

It is labelled SYNTHETIC in every folder it writes. Run: `python -m edgeav.train.synthetic_video OUT`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeav.train.synthetic import SYNTHETIC_README, synth_audio, synth_image

log = logging.getLogger(__name__)

FPS = 25
AUDIO_RATE_HZ = 16_000
MOTION_BOX = (0.32, 0.63, 0.58, 0.85)  # (x0, y0, x1, y1) in frame fractions: train/grid.yaml's model.image_roi
_SKIN = (200, 150, 120)
_LIPS = (70, 20, 30)


def motion_hz(class_idx: int) -> float:
    """Open/close rate of class `class_idx`'s mouth, Hz: 1.0, 1.75, 2.5, ... (below 1/4 of the 25 fps frame rate
    for the first 8 classes, so each frame-to-frame change is small and well sampled)."""
    return 1.0 + 0.75 * (class_idx % 8)


def motion_axis(class_idx: int) -> str:
    """'open' (the ellipse's height moves) for even classes, 'widen' (its width moves) for odd ones."""
    return "open" if class_idx % 2 == 0 else "widen"


def draw_mouth(
    frame: np.ndarray, class_idx: int, t_s: float, phase: float, box: tuple[float, float, float, float] = MOTION_BOX
) -> np.ndarray:
    """Paint the mouth of class `class_idx` at time `t_s` (seconds from the clip's start) into `frame` (H, W, 3) uint8,
    in place: a skin patch over `box` and a dark ellipse whose height (or width) follows
    0.5 - 0.5 cos(2 pi f t + phase). Returns `frame`."""
    h_px, w_px = frame.shape[:2]
    x0, x1 = int(box[0] * w_px), int(np.ceil(box[2] * w_px))
    y0, y1 = int(box[1] * h_px), int(np.ceil(box[3] * h_px))
    frame[y0:y1, x0:x1] = _SKIN
    level = 0.5 - 0.5 * np.cos(2 * np.pi * motion_hz(class_idx) * t_s + phase)  # 0 (closed) .. 1 (open)
    half_w, half_h = 0.42 * (x1 - x0), 0.42 * (y1 - y0)  # the largest ellipse that fits the box with a margin
    if motion_axis(class_idx) == "open":
        ry, rx = half_h * (0.12 + 0.88 * level), half_w
    else:
        ry, rx = half_h * 0.4, half_w * (0.3 + 0.7 * level)
    cy, cx = (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
    frame[y0:y1, x0:x1][inside] = _LIPS
    return frame


def _write_mp4(path: Path, clips: list[tuple[np.ndarray, np.ndarray, int, float]], rng: np.random.Generator) -> None:
    """Write (frame (H, W, 3) uint8, audio (N,) float32, class index, motion phase) clips back to back into one
    H.264 + AAC file; each clip's mouth moves from its own start."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    size_px = clips[0][0].shape[0]
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width = v.height = size_px
        v.pix_fmt = "yuv420p"
        v.options = {"preset": "veryfast", "crf": "23"}
        a = out.add_stream("aac", rate=AUDIO_RATE_HZ)
        a.layout = "mono"
        frame_index = 0
        sample_index = 0
        for image, audio, class_idx, phase in clips:
            n_frames = int(round(len(audio) / AUDIO_RATE_HZ * FPS))
            for k in range(n_frames):
                picture = draw_mouth(image.copy(), class_idx, k / FPS, phase)  # (H, W, 3) uint8
                jitter = rng.integers(0, 8, image.shape, dtype=np.uint8)  # a living picture, not a still
                living = np.clip(picture.astype(np.int16) + jitter, 0, 255).astype(np.uint8)  # (H, W, 3)
                vf = av.VideoFrame.from_ndarray(living, format="rgb24")
                vf.pts = frame_index
                vf.time_base = Fraction(1, FPS)
                frame_index += 1
                for packet in v.encode(vf):
                    out.mux(packet)
            chunk = 1024
            for start in range(0, len(audio), chunk):
                piece = audio[start : start + chunk].reshape(1, -1).astype(np.float32)
                af = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                af.sample_rate = AUDIO_RATE_HZ
                af.pts = sample_index
                af.time_base = Fraction(1, AUDIO_RATE_HZ)
                sample_index += piece.shape[1]
                for packet in a.encode(af):
                    out.mux(packet)
        for stream in (v, a):
            for packet in stream.encode(None):
                out.mux(packet)


def make_video_set(
    root: str | Path,
    n_classes: int = 4,
    per_class: int = 12,
    seconds: float = 3.0,
    size_px: int = 160,
    seed: int = 0,
    stream: bool = True,
) -> Path:
    """Write the video set (a quarter of each class's clips are `test`) and, with `stream`, the stream of the test
    clips in a seeded order with its segment CSV. Each clip is `seconds` long at 25 fps (3 s: 75 frames, so a window
    of 40 frames at 25 Hz fits in it). Returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    videos = root / "videos"
    rows = []
    test_clips: list[tuple[str, str, tuple[np.ndarray, np.ndarray, int, float]]] = []
    n_test = max(1, per_class // 4)
    for c in range(n_classes):
        label = f"synthetic_class_{c}"
        for i in range(per_class):
            clip = (
                synth_image(c, size_px, rng),
                synth_audio(c, seconds, AUDIO_RATE_HZ, rng),
                c,
                float(rng.uniform(0, 2 * np.pi)),
            )
            rel = f"{label}/synthetic_{c}_{i}.mp4"
            _write_mp4(videos / rel, [clip], rng)
            split = "test" if i >= per_class - n_test else "train"
            rows.append({"clip": rel, "label": label, "split": split, "group": f"take{c}_{i}"})
            if split == "test":
                test_clips.append((rel, label, clip))
    with open(videos / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["clip", "label", "split", "group"])
        w.writeheader()
        w.writerows(rows)
    (videos / "README.md").write_text(SYNTHETIC_README)
    if stream:
        order = rng.permutation(len(test_clips))
        joined = [test_clips[k] for k in order]
        _write_mp4(root / "stream.mp4", [c for _, _, c in joined], rng)
        with open(root / "stream.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start_s", "end_s", "label", "clip"])
            for k, (rel, label, _) in enumerate(joined):
                w.writerow([f"{k * seconds:.3f}", f"{(k + 1) * seconds:.3f}", label, rel])
    (root / "README.md").write_text(SYNTHETIC_README)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeav.train.synthetic_video", description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--per-class", type=int, default=12)
    p.add_argument("--size-px", type=int, default=160, help="frame width and height, pixels")
    p.add_argument("--no-stream", action="store_true", help="write the clips only")
    a = p.parse_args(argv)
    root = make_video_set(a.out, a.classes, a.per_class, size_px=a.size_px, stream=not a.no_stream)
    sys.stderr.write(f"wrote a SYNTHETIC video data set to {root}/videos and its stream to {root}/stream.mp4\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
