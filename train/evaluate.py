"""`edgeav eval`: accuracy, macro-F1, per-class recall, confusion matrix and modality ablation of a checkpoint.

The ablation runs the same checkpoint three times through its modality mask: both modalities, audio only
(mask [1, 0]) and image only (mask [0, 1]). Figures go to a JSON report and a short Markdown summary; the
confusion matrix to PNG and CSV; the training curves (from metrics.csv beside the checkpoint) to PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeav.result import CommandResult
from edgeav.schema import config_from_dict

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
def predict(model: torch.nn.Module, loader, mask_override: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (labels (N,), fused predictions (N,), probabilities (N, C)) with the mask optionally forced."""
    from edgeav.train.loop import _outputs

    model.eval()
    ys, ps, probs = [], [], []
    for batch in loader:
        mask = batch["mask"].clone()
        if mask_override is not None:
            mask[:] = torch.tensor(mask_override)
        logits, _, _ = _outputs(model(batch["audio"], batch["image"], mask))
        p = torch.softmax(logits.float(), 1)
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
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
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


def evaluate_checkpoint(checkpoint: str | Path, data_path: str | Path, split: str = "test",
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    from edgeav.train.data import load_dataset
    from edgeav.train.data.torch_dataset import TorchAVDataset
    from edgeav.train.loop import collate
    from edgeav.train.models import load_checkpoint

    ckpt = Path(checkpoint)
    model, info = load_checkpoint(ckpt)
    labels = list(info["labels"])
    cfg = config_from_dict(info["train_config"], f"{ckpt} (training config)")
    data = load_dataset(cfg.data, data_path)
    if list(data.classes) != labels:
        from edgeav.errors import DataError

        raise DataError(f"{data_path}: classes {list(data.classes)} do not match the checkpoint's labels {labels}")
    splits = ["train", "val", "test"] if split == "all" else [split]
    datasets = [TorchAVDataset(data, s, epoch=0, seed=cfg.train.seed) for s in splits]
    loader = [collate([ds[i] for i in range(j, min(j + 32, len(ds)))]) for ds in datasets for j in range(0, len(ds), 32)]
    out = Path(out_dir) if out_dir else ckpt.parent / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"checkpoint": str(ckpt), "data": str(data_path), "split": split, "labels": labels}
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
    report["curves_png"] = str(out / "curves.png") if plot_curves(ckpt.parent / "metrics.csv", out / "curves.png") else None
    report["confusion_png"] = str(out / "confusion.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    md = [f"# Evaluation of `{ckpt.name}` on {split} ({report['both']['n']} examples)", "",
          "| input | accuracy | macro-F1 |", "|---|---|---|"]
    for name in MASKS:
        md.append(f"| {name.replace('_', ' ')} | {report[name]['accuracy']:.3f} | {report[name]['macro_f1']:.3f} |")
    md += ["", "| class | recall (both) |", "|---|---|"]
    md += [f"| {lab} | {r:.3f} |" for lab, r in zip(labels, report["both"]["per_class_recall"])]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    report["summary_md"] = str(out / "summary.md")
    return report


def cmd_eval(args: argparse.Namespace) -> CommandResult:
    report = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out)
    lines = [f"{args.checkpoint} on {args.split} ({report['both']['n']} examples):"]
    for name in MASKS:
        lines.append(f"  {name:11s} accuracy {report[name]['accuracy']:.3f}  macro-F1 {report[name]['macro_f1']:.3f}")
    lines.append(f"  report: {Path(report['summary_md']).parent}")
    return CommandResult(report, "\n".join(lines))
