"""`edgeav eval`: metrics, modality ablation through the mask, confusion matrix, curves, JSON + Markdown."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_fixtures import tiny

from edgeav.cli import main
from edgeav.errors import DataError, ModelError
from edgeav.schema import load_config
from edgeav.train.evaluate import MASKS, classification_metrics, evaluate_checkpoint, predict
from edgeav.train.loop import train
from edgeav.train.synthetic import make_paired_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("eval")
    data = make_paired_set(tmp / "data", n_classes=3, per_class=6, seconds=1.0, size_px=64)
    train(load_config(None, tiny(tmp, "train.epochs=2", "train.eval_test=false")), data, tmp / "run")
    return tmp / "run" / "best.pt", data


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3])
    p = np.array([0, 1, 1, 1, 0, 2, 2, 0, 2, 1])
    m = classification_metrics(y, p, 4)
    assert m["accuracy"] == pytest.approx(0.6)
    labels_present = [0, 1, 2, 3]
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", labels=labels_present, zero_division=0))
    assert m["per_class_recall"] == pytest.approx(
        list(recall_score(y, p, average=None, labels=labels_present, zero_division=0))
    )
    assert m["confusion"] == confusion_matrix(y, p, labels=labels_present).tolist()


def test_eval_cli_writes_report_summary_confusion_and_curves(trained, tmp_path, capsys):
    ckpt, data = trained
    out = tmp_path / "ev"
    code = main(["eval", str(ckpt), "--data", str(data), "--split", "test", "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("report.json", "summary.md", "confusion.csv", "confusion.png", "curves.png"):
        assert (out / name).is_file(), name
    assert set(MASKS) <= set(report)
    n = report["both"]["n"]
    assert n > 0 and all(report[k]["n"] == n for k in MASKS)
    with open(out / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == report["labels"]
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == n
    summary = (out / "summary.md").read_text()
    assert "audio only" in summary and "image only" in summary and "macro-F1" in summary


def test_ablation_runs_the_checkpoint_through_the_mask(trained):
    """audio_only must not depend on the images, image_only not on the sound: scrambling the other input leaves
    the predictions as they are."""
    from torch.utils.data import DataLoader

    from edgeav.train.data import load_dataset
    from edgeav.train.data.torch_dataset import TorchAVDataset
    from edgeav.train.models import load_checkpoint

    ckpt, data = trained
    model, info = load_checkpoint(ckpt)
    cfg = load_config(
        None,
        [
            f"{k}={v}"
            for k, v in [
                ("data.kind", "paired"),
                ("data.window_s", 1.0),
                ("data.hop_s", 1.0),
                ("data.image_size_px", 64),
                ("data.val_fraction", 0.3),
                ("data.cache", False),
            ]
        ],
    )
    ds = TorchAVDataset(load_dataset(cfg.data, data), "train")
    batches = list(DataLoader(ds, batch_size=16))
    g = torch.Generator().manual_seed(0)
    scrambled_image = [
        dict(b, image=torch.randint(0, 256, b["image"].shape, generator=g, dtype=torch.uint8)) for b in batches
    ]
    scrambled_audio = [dict(b, audio=torch.randn(b["audio"].shape, generator=g)) for b in batches]
    _, p_a, prob_a = predict(model, batches, MASKS["audio_only"])
    _, p_a2, prob_a2 = predict(model, scrambled_image, MASKS["audio_only"])
    assert np.allclose(prob_a, prob_a2, atol=1e-5)
    _, _, prob_i = predict(model, batches, MASKS["image_only"])
    _, _, prob_i2 = predict(model, scrambled_audio, MASKS["image_only"])
    assert np.allclose(prob_i, prob_i2, atol=1e-5)
    _, _, prob_b2 = predict(model, scrambled_image, MASKS["both"])
    _, _, prob_b = predict(model, batches, MASKS["both"])
    assert not np.allclose(prob_b, prob_b2, atol=1e-5)  # with both, the image matters


def test_eval_refuses_data_with_other_classes(trained, tmp_path):
    ckpt, _ = trained
    other = make_paired_set(tmp_path / "other", n_classes=2, per_class=4, seconds=1.0, size_px=64)
    with pytest.raises(DataError, match="do not match"):
        evaluate_checkpoint(ckpt, other, "test", tmp_path / "ev")


def test_eval_of_a_missing_checkpoint_is_one_line_and_an_error_exit(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "nope.pt"), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert (
        code == ModelError.exit_code != 0
        and len(err.strip().splitlines()) == 1
        and "not found" in err
        and "Traceback" not in err
    )
