"""DDP: `torchrun --nproc_per_node=2` with gloo on CPU against one process with the same global batch.

Augmentation, dropout and modality dropout are off, so the only difference left is BatchNorm, which normalizes
over each rank's half of the batch: the loss curves agree within a tolerance, not bit for bit."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.schema import load_config
from edgeav.train.loop import train
from edgeav.train.synthetic import make_paired_set

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _sets(tmp: Path) -> list[str]:
    return [f"data.cache_dir={tmp / 'cache'}", "data.kind=paired", "data.window_s=1.0", "data.hop_s=1.0",
            "data.image_size_px=64", "data.val_fraction=0.3", "model.pretrained=false", "model.dropout=0.0",
            "model.head_kwargs={dropout: 0.0}", "train.batch_size=8", "train.epochs=3", "train.threads=1",
            "train.eval_test=false", "train.early_stop_patience=100", "train.augment.mixup.enabled=false",
            "train.augment.spec_augment.enabled=false", "train.augment.wave.enabled=false",
            "train.augment.image.enabled=false", "train.augment.modality_dropout=false"]


def _losses(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"torchrun not found beside {sys.executable}")
def test_two_gloo_ranks_see_disjoint_shards_and_follow_the_single_process_loss_curve(tmp_path):
    data = make_paired_set(tmp_path / "data", n_classes=3, per_class=8, seconds=1.0, size_px=64)
    sets = _sets(tmp_path)
    single = tmp_path / "single"
    train(load_config(None, sets), data, single)  # prepares the cache too (the ranks then only read it)

    cfg_file = tmp_path / "empty.yaml"
    cfg_file.write_text("{}\n")
    ddp = tmp_path / "ddp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "edgeav", "-q", "train", "--config",
           str(cfg_file), "--data", str(data), "--out", str(ddp)] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((ddp / "train_report.json").read_text())
    assert report["world_size"] == 2
    shards = report["ddp_shards"]["first_epoch"]
    assert shards["overlap"] == 0  # the ranks' shards are disjoint
    assert shards["examples_per_rank"][0] == shards["examples_per_rank"][1] > 0
    single_report = json.loads((single / "train_report.json").read_text())
    assert shards["union"] == sum(shards["examples_per_rank"])

    a, b = _losses(single / "steps.csv"), _losses(ddp / "steps.csv")
    assert len(a) == len(b) > 3  # the same number of optimizer steps: same global batch
    rel = [abs(x - y) / max(abs(x), 1e-6) for x, y in zip(a, b)]
    assert rel[0] < 0.05, (a, b)  # same initial weights, same first global batch
    assert max(rel) < 0.25, (a, b)  # BatchNorm over half batches: close, not identical
    assert abs(sum(a) / len(a) - sum(b) / len(b)) / (sum(a) / len(a)) < 0.1
    # only rank 0 wrote: one metrics file, one set of checkpoints
    assert (ddp / "best.pt").is_file() and len(list(ddp.glob("*.csv"))) == 2
    assert single_report["world_size"] == 1
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
