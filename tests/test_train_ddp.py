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
from _train_fixtures import empty_config, tiny, train_cmd

from edgeav.schema import load_config
from edgeav.train.loop import train
from edgeav.train.synthetic import make_paired_set

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _sets(tmp: Path, epochs: int) -> list[str]:
    # batch 22 (11 per rank): the 66 training pairs fill whole batches both ways, so both runs take the same steps
    return tiny(
        tmp,
        "model.dropout=0.0",
        "model.head_kwargs={dropout: 0.0}",
        "train.batch_size=22",
        f"train.epochs={epochs}",
        "train.eval_test=false",
        "train.augment.mixup.enabled=false",
        "train.augment.spec_augment.enabled=false",
        "train.augment.wave.enabled=false",
        "train.augment.image.enabled=false",
        "train.augment.modality_dropout=false",
    )


def _losses(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _single_and_ddp(tmp: Path, epochs: int) -> tuple[Path, Path]:
    data = make_paired_set(tmp / "data", n_classes=3, per_class=40, seconds=1.0, size_px=64)
    sets = _sets(tmp, epochs)
    single = tmp / "single"
    train(load_config(None, sets), data, single)  # prepares the cache too (the ranks then only read it)
    ddp = tmp / "ddp"
    cmd = train_cmd(empty_config(tmp), data, ddp, sets, launcher=(str(TORCHRUN), "--standalone", "--nproc_per_node=2"))
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


# ------------------------------------------------------------------ backend and device of a rank (no GPU needed)


def test_a_cuda_rank_gets_nccl_on_its_own_gpu_a_cpu_rank_gets_gloo():
    from edgeav.train.distributed import dist_plan

    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    cuda = dist_plan("auto", env, cuda_available=True, cuda_count=2)
    assert (cuda.backend, cuda.device, cuda.rank, cuda.world) == ("nccl", "cuda:1", 1, 2)  # not every rank on cuda:0
    assert dist_plan("cuda", env, cuda_available=True, cuda_count=2).device == "cuda:1"
    cpu = dist_plan("auto", env, cuda_available=False, cuda_count=0)
    assert (cpu.backend, cpu.device) == ("gloo", "cpu")
    assert dist_plan("cpu", env, cuda_available=True, cuda_count=2).backend == "gloo"  # train.device=cpu on a GPU box
    single = dist_plan("auto", {}, cuda_available=True, cuda_count=1)
    assert (single.backend, single.device) == (None, "cuda:0")


def test_a_rank_without_a_gpu_of_its_own_is_refused():
    from edgeav.errors import ConfigError
    from edgeav.train.distributed import dist_plan

    with pytest.raises(ConfigError, match=r"LOCAL_RANK 2 but this machine has 2 CUDA device\(s\).*--nproc_per_node=2"):
        dist_plan("auto", {"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "2"}, cuda_available=True, cuda_count=2)
    with pytest.raises(ConfigError, match="train.device=cuda but no CUDA device"):
        dist_plan("cuda", {}, cuda_available=False, cuda_count=0)


def test_nccl_rank_owns_its_gpu_before_joining_the_group(monkeypatch):
    """torch.cuda.set_device(local_rank) comes before init_process_group (NCCL binds to the current device); the
    info names cuda:local_rank as the device of collective tensors. CUDA and the group are recorded, not run."""
    import torch

    from edgeav.train import distributed as d

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", str(dev))))
    monkeypatch.setattr(d.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(d.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(d.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(d.dist, "get_backend", lambda: "nccl")
    info = d.init_distributed(d.DistPlan("nccl", "cuda:1", world=2, rank=1, local_rank=1))
    assert calls == [("set_device", "cuda:1"), ("init", "nccl")]
    assert str(info.device) == "cuda:1" and (info.rank, info.world, info.backend) == (1, 2, "nccl")


def test_all_reduce_sum_on_a_real_gloo_group(tmp_path):
    import torch.distributed as dist

    from edgeav.train.distributed import DistInfo, all_reduce_sum

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert all_reduce_sum([1.5, 3.0, 4.0], DistInfo(backend="gloo")) == [1.5, 3.0, 4.0]
    finally:
        dist.destroy_process_group()
