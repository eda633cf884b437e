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
    assert "SYNTHETIC" in (root / "README.md").read_text() and "SYNTHETIC" in (root / "videos" / "README.md").read_text()
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
