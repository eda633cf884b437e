"""A short training run on real data (GRID talking faces): a subset of the clips, small images, two epochs.

It checks that the whole path works on real media (MPEG-1 video with MP2 sound): decoding once into the cache,
training, checkpoints, the test evaluation, and that the checkpoint describes itself (labels, 3 s contract)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edgeav.schema import load_config
from edgeav.train.loop import train
from edgeav.train.models import load_checkpoint

pytestmark = pytest.mark.data
REPO = Path(__file__).resolve().parent.parent


def _subset_manifest(grid: Path, out: Path, train_per_class: int, test_per_class: int) -> Path:
    """A manifest naming the first clips of each class of grid/manifest.csv, with absolute paths."""
    with open(grid / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep, count = [], {}
    for r in rows:
        n = count.setdefault((r["label"], r["split"]), 0)
        if n < (train_per_class if r["split"] == "train" else test_per_class):
            keep.append(dict(r, clip=str(grid / r["clip"])))
            count[(r["label"], r["split"])] = n + 1
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return out


def test_short_grid_training_run_end_to_end(shared_data, tmp_path):
    grid = shared_data / "grid"
    manifest = _subset_manifest(grid, tmp_path / "subset" / "manifest.csv", train_per_class=8, test_per_class=2)
    cfg = load_config(
        REPO / "train" / "grid.yaml",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.image_size_px=64",
            "data.frames_per_clip=1",
            "train.mode=joint",
            "train.epochs=2",
            "train.batch_size=8",
            "train.threads=2",
        ],
    )
    out = tmp_path / "run"
    report = train(cfg, manifest, out)
    assert report["splits"]["test"] == 8 and report["splits"]["train"] + report["splits"]["val"] == 32
    assert report["decodes"]["training"] == 0 and report["decodes"]["prepare"] == 2 * 40  # sound + frames, once
    model, info = load_checkpoint(out / "best.pt")
    assert info.labels == ["bin", "lay", "place", "set"]
    assert info.contract.audio.window_s == 3.0 and info.contract.audio.sample_rate_hz == 16_000
    assert info.metrics["test_n"] == 8
    ev = json.loads((out / "eval_test" / "report.json").read_text())
    assert ev["both"]["n"] == 8 and len(ev["both"]["confusion"]) == 4
    assert report["train_samples_per_s"] > 0
