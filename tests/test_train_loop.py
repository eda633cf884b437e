"""The training loop on a small SYNTHETIC paired data set (generated in tmp_path): outputs, two-phase caching,
exact resume after a kill, configuration errors, and the recipes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _train_fixtures import (
    REPO,
    empty_config,
    syn,  # noqa: F401 (syn: the synthetic set fixture)
    tiny,
    tiny_two_phase,
    train_cmd,
)

from edgeav.errors import ConfigError
from edgeav.schema import load_config
from edgeav.train.loop import Trainer, train
from edgeav.train.models import load_checkpoint, read_checkpoint

RECIPES = sorted((REPO / "train").glob("*.yaml"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_joint_run_writes_checkpoints_metrics_tensorboard_and_report(syn, tmp_path):
    cfg = load_config(None, tiny(tmp_path, "train.epochs=2"))
    out = tmp_path / "run"
    report = train(cfg, syn, out)
    for name in (
        "best.pt",
        "last.pt",
        "metrics.csv",
        "steps.csv",
        "train_report.json",
        "report.md",
        "eval_test/report.json",
        "eval_test/confusion.png",
        "eval_test/curves.png",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and {r["phase"] for r in rows} == {"joint"}
    assert all(
        float(r["lr_backbone"]) == cfg.train.lr_backbone and float(r["lr_fusion"]) == cfg.train.lr_fusion for r in rows
    )
    model, info = load_checkpoint(out / "best.pt")
    assert info.labels == [f"synthetic_class_{i}" for i in range(3)]
    assert info.contract.audio.window_s == 1.0 and info.contract.image.height_px == 64
    assert "test_accuracy" in info.metrics and "val_acc" in info.metrics
    assert report["decodes"]["training"] == 0  # every file decoded once, before the first epoch
    assert report["decodes"]["prepare"] > 0
    assert json.loads((out / "train_report.json").read_text())["test"]["n"] == report["test"]["n"] > 0
    last = read_checkpoint(out / "last.pt")
    assert last["optimizer_state"]["optimizer"]["param_groups"][0]["name"] == "backbones"


@pytest.mark.slow
def test_differential_learning_rates_and_plateau_schedule(syn, tmp_path):
    cfg = load_config(
        None,
        tiny(tmp_path, "train.epochs=3", "train.plateau_patience=0", "train.lr_backbone=1e-4", "train.lr_fusion=1e-3"),
    )
    trainer = Trainer(cfg, syn, tmp_path / "run")
    trainer.fit()
    rows = _rows(tmp_path / "run" / "metrics.csv")
    lrs = [(float(r["lr_backbone"]), float(r["lr_fusion"])) for r in rows]
    assert lrs[0] == (1e-4, 1e-3)
    best = [float(r["val_acc"]) for r in rows]
    for k in range(1, 3):  # patience 0: every epoch without a better accuracy cuts both rates by 10
        if best[k] <= max(best[:k]):
            assert lrs[k][0] == pytest.approx(lrs[k - 1][0] * 0.1) and lrs[k][1] == pytest.approx(lrs[k - 1][1] * 0.1)


def test_two_phase_computes_frozen_features_once_and_trains_only_the_fusion(syn, tmp_path):
    cfg = load_config(None, tiny_two_phase(tmp_path, "train.epochs=4"))
    out = tmp_path / "run"
    trainer = Trainer(cfg, syn, out)
    seen: list[tuple[str, int]] = []
    backbone = trainer.model.image_backbone
    inner = backbone.forward_features

    def counting(x):
        seen.append((trainer.state.phase, int(x.shape[0])))
        return inner(x)

    backbone.forward_features = counting
    report = trainer.fit()
    phase2 = sum(n for phase, n in seen if phase == "phase2_fusion")
    visual = sum(1 for s in trainer.data.samples("train") + trainer.data.samples("val") if s.image is not None)
    assert phase2 == visual  # each train/val photo through the image backbone once, not once per epoch (4)
    rows = _rows(out / "metrics.csv")
    assert [r["phase"] for r in rows] == ["phase1_audio", "phase1_image"] + ["phase2_fusion"] * 4
    assert (out / "best_audio.pt").is_file() and (out / "best_image.pt").is_file()
    best = read_checkpoint(out / "best.pt")["state_dict"]
    img = read_checkpoint(out / "best_image.pt")["state_dict"]
    aud = read_checkpoint(out / "best_audio.pt")["state_dict"]
    for k in best:  # phase II left every unimodal weight (and BatchNorm statistic) as phase I ended it
        if k.startswith(("image_backbone.", "aux_image.")):
            assert torch.equal(best[k], img[k]), k
        if k.startswith(("audio_backbone.", "aux_audio.")):
            assert torch.equal(best[k], aud[k]), k
    assert set(report["best"]) == {"phase1_audio", "phase1_image", "phase2_fusion"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def _strip(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]


@pytest.mark.parametrize("mode,kill_after", [("joint", 3), pytest.param("two_phase", 4, marks=pytest.mark.slow)])
def test_resume_after_kill_ends_with_the_same_weights_and_metrics(syn, tmp_path, mode, kill_after):
    """Train straight; train again, SIGKILL the process after `kill_after` epoch rows (two_phase: inside phase I
    image), resume with --resume; the final weights and metric rows are the same."""
    sets = tiny(
        tmp_path,
        "train.epochs=6",
        f"train.mode={mode}",
        "train.phase1_audio_epochs=3",
        "train.phase1_image_epochs=3",
        "train.eval_test=false",
    )
    straight = tmp_path / "straight"
    train(load_config(None, sets), syn, straight)

    killed = tmp_path / "killed"
    cmd = train_cmd(empty_config(tmp_path), syn, killed, sets)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    metrics = killed / "metrics.csv"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) - 1 >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert not (killed / "train_report.json").exists()
    done_before = int(read_checkpoint(killed / "last.pt")["extra"]["train_state"]["epoch"])
    assert done_before >= 1

    train(load_config(None, sets), syn, killed, resume=True)
    for name in ("last.pt", "best.pt"):
        a, b = _weights(straight / name), _weights(killed / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    assert _strip(_rows(straight / "metrics.csv")) == _strip(_rows(killed / "metrics.csv"))
    assert _rows(straight / "steps.csv") == _rows(killed / "steps.csv")


def test_resume_refuses_a_checkpoint_of_another_mode(syn, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, tiny(tmp_path, "train.epochs=1", "train.eval_test=false")), syn, out)
    cfg = load_config(None, tiny(tmp_path, "train.mode=two_phase", "train.eval_test=false"))
    with pytest.raises(ConfigError, match="phase 'joint'"):
        train(cfg, syn, out, resume=True)


def test_two_phase_with_a_shared_encoder_is_a_config_error(syn, tmp_path):
    cfg = load_config(None, tiny(tmp_path, "model.name=emotion-shared2d", "train.mode=two_phase"))
    with pytest.raises(ConfigError, match="shared encoder"):
        Trainer(cfg, syn, tmp_path / "run")


def test_missing_data_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no data set path"):
        Trainer(load_config(None, tiny(tmp_path)), None, tmp_path / "run")


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_validate_and_resolve_to_a_model(recipe):
    from edgeav.train.models import parse_arch, resolve_arch

    cfg = load_config(recipe)
    arch = parse_arch(resolve_arch(cfg.model, cfg.data))
    assert arch.contract.audio.window_s == cfg.data.window_s
    assert cfg.model.pretrained is False  # recipes run here, without network


def test_recipes_cover_the_seed_tasks():
    names = {p.name for p in RECIPES}
    assert {"grid.yaml", "birds.yaml", "scenes.yaml", "emotion_cfnsr.yaml", "emotion_shared2d.yaml"} <= names
    assert load_config(REPO / "train" / "grid.yaml").data.window_s == 3.0
    assert load_config(REPO / "train" / "birds.yaml").data.test_image_names == ["4.jpg", "5.jpg"]
    scenes = load_config(REPO / "train" / "scenes.yaml")
    assert scenes.train.mode == "two_phase" and scenes.model.name == "scenes-f4"


def test_cosine_schedule_warms_up_then_decays_to_zero():
    """train.lr_schedule=cosine: the learning rate rises over warmup_epochs, peaks at the configured rate, then falls
    monotonically towards 0 by the phase's last epoch."""
    from edgeav.schema import load_config
    from edgeav.train.trainable import lr_schedule

    tc = load_config(None, ["train.lr_schedule=cosine", "train.warmup_epochs=3"]).train
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_schedule(opt, tc, 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.02


def test_two_phase_with_a_parameter_free_fusion_scores_phase_two_once(syn, tmp_path):
    """late_prod has nothing to learn: phase II is one scored pass over the phase I heads, not an error."""
    cfg = load_config(None, tiny_two_phase(tmp_path, "train.epochs=5", "model.head=late_prod", "train.eval_test=false"))
    out = tmp_path / "late"
    train(cfg, syn, out)
    rows = [r for r in _rows(out / "metrics.csv") if r["phase"] == "phase2_fusion"]
    assert len(rows) == 1 and rows[0]["train_loss"] == "nan" and float(rows[0]["val_acc"]) >= 0
    model, info = load_checkpoint(out / "best.pt")
    assert info.arch["head"] == "late_prod"
