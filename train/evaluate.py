"""`edgeav eval`: accuracy, macro-F1, per-class recall, confusion matrix and modality ablation of a checkpoint.

The ablation runs the same checkpoint three times through its modality mask: both modalities, audio only
(mask [1, 0]) and image only (mask [0, 1]). Figures go to a JSON report and a short Markdown summary; the
confusion matrix to PNG and CSV; the training curves (from metrics.csv beside the checkpoint) to PNG.

With `--noise PATH [--snr-db 20,10,0,-5]` the command runs the robustness evaluation instead
(`edgeav.train.robustness`: the same masks, prediction and metrics, clean and at each SNR of recorded noise).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgeav.errors import DataError, ModelError
from edgeav.result import CommandResult
from edgeav.schema import config_from_dict

if TYPE_CHECKING:
    from edgeav.train.data.dataset import AVDataset
    from edgeav.train.models.checkpoint import CheckpointInfo

log = logging.getLogger(__name__)

MASKS = {"both": (1.0, 1.0), "audio_only": (1.0, 0.0), "image_only": (0.0, 1.0)}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and the confusion matrix (rows = truth, columns = prediction)."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class_recall": recall.tolist(),
        "confusion": cm.tolist(),
    }


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    mask_override: tuple[float, float] | None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (N,), fused predictions (N,), probabilities (N, C)) with the modality mask optionally forced to
    `mask_override` ([audio, image], 1 = present) for every example."""
    model.eval()
    ys, ps, probs = [], [], []
    for batch in loader:
        mask = batch["mask"].clone()  # (B, 2)
        if mask_override is not None:
            mask[:] = torch.tensor(mask_override)
        out = model(batch["audio"].to(device), batch["image"].to(device), mask.to(device))
        p = torch.softmax(out.logits.float(), 1).cpu()  # (B, C)
        ys.append(batch["label"].numpy())
        ps.append(p.argmax(1).numpy())
        probs.append(p.numpy())
    if not ys:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0))
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(probs)


def _plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=7 if n > 10 else 9)
    ax.set_yticks(range(n), labels, fontsize=7 if n > 10 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(metrics_csv: Path, path: Path) -> bool:
    """Training curves (loss, accuracies) from metrics.csv; False when there is no such file."""
    if not metrics_csv.is_file():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    if not rows:
        return False
    x = np.arange(1, len(rows) + 1)

    def col(k: str) -> np.ndarray:
        return np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    a1.plot(x, col("train_loss"), label="train loss")
    a1.set_xlabel("epoch (all phases)")
    a1.legend()
    for k in ("train_acc", "val_acc", "val_acc_audio", "val_acc_image"):
        a2.plot(x, col(k), label=k)
    a2.set_ylim(0, 1.02)
    a2.set_xlabel("epoch (all phases)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


@dataclass
class EvalSet:
    """A checkpoint's model and the examples of one split, cut as its training config says."""

    model: torch.nn.Module
    info: CheckpointInfo
    loader: Iterable[dict[str, torch.Tensor]]  # batches in a fixed order (no shuffling)
    n: int  # examples


def load_eval_set(
    checkpoint: str | Path,
    data_path: str | Path,
    split: str = "test",
    data: AVDataset | None = None,
    batch_size: int = 32,
) -> EvalSet:
    """The model of `checkpoint` and a loader over `split` ("train", "val", "test" or "all") of the data set at
    `data_path`. `data`: an already loaded AVDataset of that path."""
    from torch.utils.data import ConcatDataset, DataLoader

    from edgeav.train.data import load_dataset
    from edgeav.train.data.torch_dataset import TorchAVDataset
    from edgeav.train.models import load_checkpoint

    ckpt = Path(checkpoint)
    model, info = load_checkpoint(ckpt)
    labels = info.labels
    if not info.train_config:
        raise ModelError(f"{ckpt}: the checkpoint has no training config; cannot tell how to cut the data")
    cfg = config_from_dict(info.train_config, f"{ckpt} (training config)")
    if data is None:
        data = load_dataset(cfg.data, data_path)
    if list(data.classes) != labels:
        raise DataError(f"{data_path}: classes {list(data.classes)} do not match the checkpoint's labels {labels}")
    splits = ["train", "val", "test"] if split == "all" else [split]
    sets = [TorchAVDataset(data, s, epoch=0, seed=cfg.train.seed) for s in splits]
    n_total = sum(len(d) for d in sets)
    if n_total == 0:
        raise DataError(f"{data_path}: the {split!r} split is empty")
    loader = DataLoader(ConcatDataset(sets), batch_size=batch_size, shuffle=False)
    return EvalSet(model, info, loader, n_total)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_path: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    data: AVDataset | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on `split` of the data set at `data_path` (cut as the checkpoint's training config
    says); writes report.json, summary.md, confusion.csv/.png and curves.png into `out_dir` (default: beside the
    checkpoint, eval_<split>/). `data`: an already loaded AVDataset of that path (the training loop passes its own)."""
    ckpt = Path(checkpoint)
    es = load_eval_set(ckpt, data_path, split, data, batch_size)
    model, loader, labels = es.model, es.loader, es.info.labels
    out = Path(out_dir) if out_dir else ckpt.parent / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "data": str(data_path),
        "split": split,
        "labels": labels,
        "arch": {k: es.info.arch.get(k) for k in ("name", "audio_backbone", "image_backbone", "head")},
    }
    for name, mask in MASKS.items():
        y, p, _ = predict(model, loader, mask)
        m = classification_metrics(y, p, len(labels))
        report[name] = m
        if name == "both":
            cm = np.array(m["confusion"])
            with open(out / "confusion.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["true \\ predicted", *labels])
                for lab, row in zip(labels, cm):
                    w.writerow([lab, *row.tolist()])
            _plot_confusion(cm, labels, out / "confusion.png", f"{split}: accuracy {m['accuracy']:.3f}")
    report["seconds"] = round(time.monotonic() - t0, 2)
    report["per_class_recall"] = {lab: r for lab, r in zip(labels, report["both"]["per_class_recall"])}
    metrics_csv = ckpt.parent / "metrics.csv"
    report["curves_png"] = str(out / "curves.png") if plot_curves(metrics_csv, out / "curves.png") else None
    report["confusion_png"] = str(out / "confusion.png")
    report["confusion_csv"] = str(out / "confusion.csv")
    report["summary_md"] = str(out / "summary.md")
    report["report_json"] = str(out / "report.json")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    md = [
        f"# Evaluation of `{ckpt.name}` on {split} ({report['both']['n']} examples)",
        "",
        "Modality ablation through the mask: the same checkpoint with both inputs, audio only and image only.",
        "",
        "| input | accuracy | macro-F1 |",
        "|---|---|---|",
    ]
    for name in MASKS:
        md.append(f"| {name.replace('_', ' ')} | {report[name]['accuracy']:.3f} | {report[name]['macro_f1']:.3f} |")
    md += ["", "| class | recall (both) | recall (audio only) | recall (image only) |", "|---|---|---|---|"]
    md += [
        f"| {lab} | {a:.3f} | {b:.3f} | {c:.3f} |"
        for lab, a, b, c in zip(
            labels,
            report["both"]["per_class_recall"],
            report["audio_only"]["per_class_recall"],
            report["image_only"]["per_class_recall"],
        )
    ]
    md += [
        "",
        "Confusion matrix: `confusion.png`, `confusion.csv`"
        + ("; training curves: `curves.png`." if report["curves_png"] else "."),
    ]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return report


def cmd_eval(args: argparse.Namespace) -> CommandResult:
    noise, snr_text = getattr(args, "noise", None), getattr(args, "snr_db", None)
    if noise is not None or snr_text is not None:
        from edgeav.train.robustness import cmd_eval_robustness

        return cmd_eval_robustness(args)
    report = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out)
    lines = [f"{args.checkpoint} on {args.split} ({report['both']['n']} examples):"]
    for name in MASKS:
        lines.append(f"  {name:11s} accuracy {report[name]['accuracy']:.3f}  macro-F1 {report[name]['macro_f1']:.3f}")
    lines.append(f"  report: {report['report_json']}, {report['summary_md']}")
    return CommandResult(report, "\n".join(lines))
