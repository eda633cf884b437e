"""The data layer on the real shared data (birds, grid, cremad); skipped with the reason when it is absent.

Only headers are read for the whole sets; a handful of files is decoded (into a tmp_path cache).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from edgeav.schema import DataConfig
from edgeav.train.data import load_dataset

pytestmark = pytest.mark.data

BIRD_TEST_PHOTOS = ["4.jpg", "5.jpg"]
CREMAD_LABEL = r"^\d+_[A-Z]+_([A-Z]+)_"


def _dir(shared_data: Path, name: str) -> Path:
    p = shared_data / name
    if not p.is_dir():
        pytest.skip(f"{p} not found")
    return p


def test_birds_classes_splits_by_recording_and_photo(shared_data: Path, tmp_path: Path) -> None:
    import csv

    root = _dir(shared_data, "birds")
    ds = load_dataset(DataConfig(test_image_names=BIRD_TEST_PHOTOS, cache_dir=str(tmp_path)), root)
    assert ds.kind == "paired" and len(ds.classes) == 17 and ds.skipped == []
    rows = list(csv.DictReader((root / "recordings.csv").open()))
    want = {str((root / r["file"]).resolve()): r for r in rows}
    audio = [s for s in ds.samples() if s.audio is not None]
    assert {s.audio.file for s in audio} == set(want)
    for s in audio:
        r = want[s.audio.file]
        assert s.group == r["recording"] and s.class_name == r["slug"]
        # test comes from the CSV; validation is carved from its train recordings
        assert s.split == "test" if r["split"] == "test" else s.split in ("train", "val")
    photos = [s for s in ds.samples() if s.image is not None]
    assert len(photos) == 85
    assert {Path(s.image.file).name for s in photos if s.split == "test"} == set(BIRD_TEST_PHOTOS)
    assert sum(s.split == "test" for s in photos) == 34
    groups: dict[str, str] = {}
    for s in ds.samples():
        assert groups.setdefault(s.group, s.split) == s.split
    # every class has training windows and photos, and a val class has val photos to pair with
    for split in ("train",):
        assert {s.class_name for s in ds.samples(split) if s.audio is not None} == set(ds.classes)
        assert {s.class_name for s in ds.samples(split) if s.image is not None} == set(ds.classes)
    val_audio = {s.class_name for s in ds.samples("val") if s.audio is not None}
    assert val_audio and val_audio == {s.class_name for s in ds.samples("val") if s.image is not None}
    summary = ds.summary()
    assert summary["sample_rates_hz"] == {"44100": 45} and summary["files"] == {"audio": 45, "image": 85}
    # one pair decodes to the shapes training expects
    a, v = next((a, v) for a, v in ds.pairs("test", 0) if a is not None and v is not None)
    audio_arr, _ = ds.load(a)
    _, image = ds.load(v)
    assert audio_arr.shape == (80_000,) and audio_arr.dtype == np.float32 and np.abs(audio_arr).max() > 0
    assert image.shape == (3, 224, 224) and image.dtype == np.uint8


def test_grid_split_column_and_clip_shapes(shared_data: Path, tmp_path: Path) -> None:
    root = _dir(shared_data, "grid")
    ds = load_dataset(DataConfig(cache_dir=str(tmp_path), frames_per_clip=3), root)
    assert ds.kind == "video" and ds.classes == ["bin", "lay", "place", "set"]
    s = ds.summary()["splits"]
    assert s["test"]["per_class"] == {c: 10 for c in ds.classes}
    assert {c: s["train"]["per_class"][c] + s["val"]["per_class"][c] for c in ds.classes} == {c: 30 for c in ds.classes}
    assert s["val"]["samples"] > 0  # one speaker: val carved by clip, loudly
    assert any("BY CLIP" in n for n in ds.summary()["notes"])
    sample = ds.samples("test")[0]
    audio, frames = ds.load(sample)
    assert audio.shape == (80_000,) and frames.shape == (3, 3, 224, 224) and frames.dtype == np.uint8
    n_sound = int(2.9 * 16_000)
    assert np.abs(audio[:n_sound]).max() > 0.01 and np.all(audio[int(3.1 * 16_000) :] == 0)  # 3 s clip, zero padded


def test_cremad_labels_from_file_name(shared_data: Path, tmp_path: Path) -> None:
    root = _dir(shared_data, "cremad")
    ds = load_dataset(DataConfig(cache_dir=str(tmp_path), label_regex=CREMAD_LABEL, group_regex=r"^(\d+)_"), root)
    assert ds.classes == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    assert len(ds.samples()) == 6 and {s.group for s in ds.samples()} == {"1001"}
    s = next(x for x in ds.samples() if x.class_name == "HAP")
    assert Path(s.video.file).name == "1001_DFA_HAP_XX.flv"
    audio, frames = ds.load(s)  # FLV: VP6 video + MP3 audio
    assert audio.shape == (80_000,) and frames.shape == (3, 3, 224, 224)


@pytest.mark.parametrize("name", ["birds", "grid"])
def test_inspect_real_data_is_quick(shared_data: Path, tmp_path: Path, name: str, capsys) -> None:
    from edgeav.cli import main

    root = _dir(shared_data, name)
    sheet = tmp_path / f"{name}.png"
    t0 = time.monotonic()
    rc = main(
        [
            "data",
            "inspect",
            str(root),
            "--sheet",
            str(sheet),
            "--json",
            "--set",
            'data.test_image_names=["4.jpg","5.jpg"]',
            "--set",
            f"data.cache_dir={tmp_path}",
        ]
    )
    elapsed = time.monotonic() - t0
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and sheet.stat().st_size > 50_000
    assert out["n_classes"] == {"birds": 17, "grid": 4}[name]
    assert elapsed < 60, f"inspect took {elapsed:.1f} s"
