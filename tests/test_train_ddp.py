"""DDP: `torchrun --nproc_per_node=2` with gloo on CPU against one process with the same global batch.

Augmentation, dropout and modality dropout are off, so the only difference left is BatchNorm, which normalizes
over each rank's half of the batch: the loss curves agree within a tolerance, not bit for bit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.schema import load_config
from edgeav.train.loop import train
from edgeav.train.synthetic import make_paired_set

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _sets(tmp: Path, epochs: int) -> list[str]:
    # batch 22 (11 per rank): the 66 training pairs fill whole batches both ways, so both runs take the same steps
    return [f"data.cache_dir={tmp / 'cache'}", "data.kind=paired", "data.window_s=1.0", "data.hop_s=1.0",
            "data.image_size_px=64", "data.val_fraction=0.3", "model.pretrained=false", "model.dropout=0.0",
            "model.head_kwargs={dropout: 0.0}", "train.batch_size=22", f"train.epochs={epochs}", "train.threads=1",
            "train.eval_test=false", "train.early_stop_patience=100", "train.augment.mixup.enabled=false",
            "train.augment.spec_augment.enabled=false", "train.augment.wave.enabled=false",
            "train.augment.image.enabled=false", "train.augment.modality_dropout=false"]


def _losses(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _single_and_ddp(tmp: Path, epochs: int) -> tuple[Path, Path]:
    data = make_paired_set(tmp / "data", n_classes=3, per_class=40, seconds=1.0, size_px=64)
    sets = _sets(tmp, epochs)
    single = tmp / "single"
    train(load_config(None, sets), data, single)  # prepares the cache too (the ranks then only read it)
    cfg_file = tmp / "empty.yaml"
    cfg_file.write_text("{}\n")
    ddp = tmp / "ddp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "edgeav", "-q", "train", "--config",
           str(cfg_file), "--data", str(data), "--out", str(ddp)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return single, ddp


def _check_shards_and_rank0_outputs(single: Path, ddp: Path) -> None:
    report = json.loads((ddp / "train_report.json").read_text())
    assert report["world_size"] == 2 and json.loads((single / "train_report.json").read_text())["world_size"] == 1
    shards = report["ddp_shards"]["first_epoch"]
    assert shards["overlap"] == 0  # the ranks' shards are disjoint
    assert shards["examples_per_rank"][0] == shards["examples_per_rank"][1] > 0
    assert shards["union"] == sum(shards["examples_per_rank"])
    # only rank 0 wrote: one metrics file and one steps file, one set of checkpoints
    assert (ddp / "best.pt").is_file() and sorted(p.name for p in ddp.glob("*.csv")) == ["metrics.csv", "steps.csv"]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"torchrun not found beside {sys.executable}")
def test_two_gloo_ranks_take_disjoint_shards_and_start_where_one_process_starts(tmp_path):
    single, ddp = _single_and_ddp(tmp_path, epochs=1)
    _check_shards_and_rank0_outputs(single, ddp)
    a, b = _losses(single / "steps.csv"), _losses(ddp / "steps.csv")
    assert len(a) == len(b) >= 2, (a, b)  # the same number of optimizer steps: the same global batch
    assert abs(a[0] - b[0]) / a[0] < 0.05, (a, b)  # same initial weights and first global batch (BatchNorm aside)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"torchrun not found beside {sys.executable}")
def test_two_gloo_ranks_follow_the_single_process_loss_curve(tmp_path):
    single, ddp = _single_and_ddp(tmp_path, epochs=3)
    _check_shards_and_rank0_outputs(single, ddp)
    a, b = _losses(single / "steps.csv"), _losses(ddp / "steps.csv")
    assert len(a) == len(b) >= 6, (a, b)
    rel = [abs(x - y) / max(abs(x), 1e-6) for x, y in zip(a, b)]
    assert rel[0] < 0.05, (a, b)
    assert max(rel) < 0.5, (a, b)  # BatchNorm normalizes over each rank's 11 examples: close, not identical
    assert abs(sum(a) - sum(b)) / sum(a) < 0.1, (a, b)
    assert a[-1] < 0.5 * a[0] and b[-1] < 0.5 * b[0]  # and both actually learn
