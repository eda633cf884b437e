"""The SYNTHETIC video set the quick start falls back on: loadable as a video data set, its stream matches its CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("av")


def test_synthetic_video_set_and_stream(tmp_path: Path) -> None:
    import av

    from edgeav.schema.data import DataConfig
    from edgeav.train.data import load_dataset
    from edgeav.train.synthetic_video import make_video_set

    root = make_video_set(tmp_path / "syn", n_classes=2, per_class=4, seconds=2.0, size_px=64)
    assert (
        "SYNTHETIC" in (root / "README.md").read_text() and "SYNTHETIC" in (root / "videos" / "README.md").read_text()
    )
    ds = load_dataset(DataConfig(window_s=2.0, image_size_px=64, cache_dir=str(tmp_path / "cache")), root / "videos")
    assert ds.classes == ["synthetic_class_0", "synthetic_class_1"]
    test = list(ds.samples("test"))
    assert len(test) == 2 and {s.class_name for s in test} == set(ds.classes)
    item = ds.load(test[0])
    assert item.audio is not None and item.audio.shape == (32_000,) and float(abs(item.audio).max()) > 0.05  # the tone
    assert item.visual is not None and item.visual.shape[-3:] == (3, 64, 64)
    rows = list(csv.DictReader(open(root / "stream.csv")))
    assert [r["label"] for r in rows].count("synthetic_class_0") == 1 and len(rows) == 2
    with av.open(str(root / "stream.mp4")) as c:
        kinds = sorted(s.type for s in c.streams)
        duration_s = float(c.duration) / 1e6
    assert kinds == ["audio", "video"]
    assert abs(duration_s - float(rows[-1]["end_s"])) < 0.1


def test_synthetic_video_moves_inside_the_mouth_box_at_each_class_rate(tmp_path: Path) -> None:
    """The quick start's clip model crops MOTION_BOX (train/grid.yaml's model.image_roi) from 40 frames at 25 Hz: each
    clip has >= 40 frames, the box holds the motion (outside it only the small jitter changes), and the size of the
    dark mouth in the box oscillates at the class's own rate."""
    import av
    import numpy as np

    from edgeav.train.synthetic_video import FPS, MOTION_BOX, make_video_set, motion_axis, motion_hz

    root = make_video_set(tmp_path / "syn", n_classes=3, per_class=1, seconds=3.0, size_px=64, stream=False)
    assert [motion_axis(c) for c in range(3)] == ["open", "widen", "open"]
    x0, y0, x1, y1 = (
        int(MOTION_BOX[0] * 64),
        int(MOTION_BOX[1] * 64),
        int(np.ceil(MOTION_BOX[2] * 64)),
        int(np.ceil(MOTION_BOX[3] * 64)),
    )
    rates = []
    for c in range(3):
        with av.open(str(root / "videos" / f"synthetic_class_{c}" / f"synthetic_{c}_0.mp4")) as f:
            frames = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])  # (N, H, W, 3) uint8
        frames = frames.astype(np.int16)
        assert len(frames) == 3 * FPS >= 40
        diff = np.abs(np.diff(frames, axis=0)).mean(axis=-1)  # (N - 1, H, W)
        inside = diff[:, y0:y1, x0:x1].mean()
        outside = np.concatenate([diff[:, :y0].ravel(), diff[:, y1:].ravel()]).mean()
        assert inside > 3 * outside, (c, inside, outside)
        box = frames[:, y0:y1, x0:x1]
        dark = ((box[..., 0] < 130) & (box[..., 1] < 90)).sum(axis=(1, 2)).astype(float)  # mouth pixels per frame
        spectrum = np.abs(np.fft.rfft(dark - dark.mean()))
        rates.append(float(np.fft.rfftfreq(len(dark), 1.0 / FPS)[int(np.argmax(spectrum))]))
        assert abs(rates[-1] - motion_hz(c)) <= 0.34, (c, rates[-1], motion_hz(c))  # the FFT's bin is 1/3 Hz
    assert len(set(rates)) == 3
