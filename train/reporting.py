"""What a run reports: metrics.csv (one row per epoch), steps.csv (the loss of every optimizer step), TensorBoard,
the progress bar, train_report.json and report.md, and the test figures stamped into best.pt.

Only rank 0 writes; every rank keeps the history (it is part of the loop's state in last.pt).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from edgeav.train.checkpointing import finite

if TYPE_CHECKING:
    from edgeav.train.loop import Trainer

log = logging.getLogger(__name__)

METRIC_FIELDS = [
    "epoch",
    "phase",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_acc_audio",
    "val_acc_image",
    "lr_backbone",
    "lr_fusion",
    "seconds",
    "samples_per_s",
    "decoded",
]
STEP_FIELDS = ["phase", "epoch", "step", "loss"]
TENSORBOARD_KEYS = tuple(k for k in METRIC_FIELDS if k not in ("epoch", "phase", "seconds", "decoded"))


def format_metric(v: Any) -> str:
    """A fraction as 0.000, "-" when there is none (None or NaN)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]], mode: str) -> None:
    """Rows appended (mode "a", the header on an empty file) or the file rewritten (mode "w")."""
    with open(path, mode, newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if f.tell() == 0:
            w.writeheader()
        w.writerows(rows)


class MetricsLog:
    """metrics.csv, steps.csv and TensorBoard in `out` (written only when `enabled`: rank 0)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.out, self.enabled = out, enabled
        self.step_rows: list[dict[str, Any]] = []  # the steps since the last epoch row
        self._tb: Any = None

    def step(self, phase: str, epoch: int, step: int, loss: float) -> None:
        self.step_rows.append({"phase": phase, "epoch": epoch, "step": step, "loss": loss})

    def epoch(self, row: dict[str, Any], step: int) -> None:
        """The epoch's row (metrics.csv, TensorBoard at `step`) and its steps (steps.csv)."""
        if not self.enabled:
            return
        _write_csv(self.out / "metrics.csv", METRIC_FIELDS, [row], "a")
        _write_csv(self.out / "steps.csv", STEP_FIELDS, self.step_rows, "a")
        self.step_rows = []
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        for k in TENSORBOARD_KEYS:
            v = row.get(k)
            if isinstance(v, (int, float)) and not math.isnan(v):
                self._tb.add_scalar(f"{row['phase']}/{k}", v, step)
        self._tb.flush()

    def log_epoch(self, row: dict[str, Any], epochs: int) -> None:
        """One line per epoch (rank 0): losses, accuracies, time and throughput."""
        if self.enabled:
            log.info(
                "%s epoch %d/%d: loss %.4f, train acc %.3f, val acc %.3f (audio %.3f, image %.3f), %.1f s, "
                "%.1f samples/s",
                row["phase"],
                row["epoch"],
                epochs,
                row["train_loss"],
                row["train_acc"],
                row["val_acc"],
                row["val_acc_audio"],
                row["val_acc_image"],
                row["seconds"],
                row["samples_per_s"],
            )

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        """On resume: metrics.csv is rewritten from the checkpoint's history (a kill may have left a row that the
        checkpoint does not have); steps.csv keeps only the steps of the epochs in that history."""
        if not self.enabled:
            return
        _write_csv(self.out / "metrics.csv", METRIC_FIELDS, history, "w")
        steps = self.out / "steps.csv"
        if steps.is_file():
            keep = {(r["phase"], int(r["epoch"])) for r in history}
            with open(steps, newline="") as f:
                rows = [r for r in csv.DictReader(f) if (r["phase"], int(r["epoch"])) in keep]
            _write_csv(steps, STEP_FIELDS, rows, "w")

    def close(self) -> None:
        if self._tb:
            self._tb.close()


class EpochProgress:
    """A progress bar over an epoch's batches with the running mean loss (rank 0, on a terminal)."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)

    def update(self, mean_loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{mean_loss:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_report(trainer: Trainer) -> dict[str, Any]:
    """train_report.json's content: the run's data, best epochs per phase, time, throughput and weights; with a
    test split (and `train.eval_test`), best.pt evaluated on it (eval_test/) and the figures stamped into best.pt."""
    t, state, data, run = trainer, trainer.state, trainer.data, trainer.run_data
    report: dict[str, Any] = {
        "mode": t.cfg.train.mode,
        "model": t.arch.get("name"),
        "arch": {k: t.arch.get(k) for k in ("audio_backbone", "image_backbone", "head")},
        "labels": t.labels,
        "data": t.data_path,
        "splits": {s: len(data.samples(s)) for s in ("train", "val", "test")},
        "best": state.phase_best,
        "epochs_run": {
            p: sum(1 for r in state.history if r["phase"] == p)
            for p in dict.fromkeys(r["phase"] for r in state.history)
        },
        "minutes": round((time.monotonic() - t.t0) / 60, 3),  # this process (a resumed run: since resuming)
        "train_minutes": round(sum(float(r.get("seconds") or 0) for r in state.history) / 60, 3),
        "train_samples_per_s": round(t.samples_seen / max(t.train_seconds, 1e-9), 2),
        "decodes": {
            "prepare": run.decodes_prepare - run.decodes_before,
            "training": data.cache.misses - run.decodes_prepare,
        },
        "world_size": t.dist.world,
        "out": str(t.out),
        "checkpoint": str(t.out / "best.pt"),
        "weights": t.weights,  # what the run started from: pretrained source, --init (path + sha256)
    }
    if t.ddp_shards:
        report["ddp_shards"] = t.ddp_shards
    if t.cfg.train.mode == "two_phase":
        report["phase2_cache_seconds"] = round(t.cache_seconds, 2)
    if t.dist.is_main and data.samples("test") and t.cfg.train.eval_test:
        from edgeav.train.evaluate import evaluate_checkpoint

        ev = evaluate_checkpoint(t.out / "best.pt", t.data_path, "test", t.out / "eval_test", data=data)
        report["test"] = {
            k: {"accuracy": ev[k]["accuracy"], "macro_f1": ev[k]["macro_f1"]}
            for k in ("both", "audio_only", "image_only")
        }
        report["test"]["n"] = ev["both"]["n"]
        stamp_test_metrics(t.out / "best.pt", t.model, ev)
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "train_report.json").write_text(json.dumps(finite(report), indent=2))
    (out / "report.md").write_text(report_md(report))


def stamp_test_metrics(path: Path, model: nn.Module, ev: dict[str, Any]) -> None:
    """best.pt carries the test figures it was validated with (what export copies into its manifests); `model` only
    lends its module to save best.pt's weights through, and gets its own weights back."""
    from edgeav.train.models import read_checkpoint, save_checkpoint

    payload = read_checkpoint(path)
    metrics = dict(payload.get("metrics") or {})
    metrics.update(
        {
            "test_accuracy": ev["both"]["accuracy"],
            "test_macro_f1": ev["both"]["macro_f1"],
            "test_accuracy_audio_only": ev["audio_only"]["accuracy"],
            "test_accuracy_image_only": ev["image_only"]["accuracy"],
            "test_n": ev["both"]["n"],
        }
    )
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(payload["state_dict"])
    save_checkpoint(
        path,
        model,
        labels=payload["labels"],
        arch=payload["arch"],
        contract=payload["contract"],
        train_config=payload["train_config"],
        metrics=finite(metrics),
        optimizer_state=None,
        extra=payload.get("extra") or {},
    )
    model.load_state_dict(backup)


def report_md(r: dict[str, Any]) -> str:
    fm = format_metric
    lines = [
        f"# Training report: {r.get('model') or r['arch']['head']} ({r['mode']})",
        "",
        f"- data: `{r['data']}` ({', '.join(f'{k} {v}' for k, v in r['splits'].items())})",
        f"- minutes: {r['minutes']} (epochs of all phases, resumes included: {r['train_minutes']}); training "
        f"throughput {r['train_samples_per_s']} samples/s; world size {r['world_size']}",
        f"- media decoded: {r['decodes']['prepare']} while preparing, {r['decodes']['training']} while training",
    ]
    init = (r.get("weights") or {}).get("init")
    if init:
        lines.append(
            f"- started from `{init['path']}` (sha256 {init['sha256'][:12]}, {init['labels_there']} classes): "
            f"{init['loaded_tensors']} tensors loaded, new: {', '.join(init['new_modules']) or 'none'}"
        )
    lines.append("")
    lines += ["| phase | best epoch | val acc | val acc audio | val acc image |", "|---|---|---|---|---|"]
    for phase, b in r["best"].items():
        lines.append(
            f"| {phase} | {b['epoch']} | {fm(b['val_acc'])} | {fm(b['val_acc_audio'])} | {fm(b['val_acc_image'])} |"
        )
    if "test" in r:
        t = r["test"]
        lines += [
            "",
            f"Test split ({t['n']} examples), best.pt:",
            "",
            "| input | accuracy | macro-F1 |",
            "|---|---|---|",
        ]
        for k in ("both", "audio_only", "image_only"):
            lines.append(f"| {k.replace('_', ' ')} | {fm(t[k]['accuracy'])} | {fm(t[k]['macro_f1'])} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "METRIC_FIELDS",
    "EpochProgress",
    "MetricsLog",
    "format_metric",
    "report_md",
    "run_report",
    "stamp_test_metrics",
    "write_report",
]
