"""Robustness to background noise: `edgeav eval CKPT --data D --noise PATH --snr-db 20,10,0,-5 [--json]`.

Every example of the split is evaluated clean and with recorded noise mixed into its sound at each SNR, the
picture untouched. Each clip's noise segment (file and offset of the bank, `NoiseBank.segment`) is drawn ONCE
from an RNG seeded with `seed`, and the same segment is reused at every SNR and under every modality mask, so the
rows differ only in the noise level. Examples without sound (mask 0: the zeros of a missing track) stay silent.

Per row (clean, then each SNR): accuracy and macro-F1 of the fused output and of the audio-only and image-only
outputs, through the same modality masks, `predict` and `classification_metrics` as `edgeav eval`
(`edgeav.train.evaluate`). The image-only rows cannot depend on the noise (the mask removes the sound).

Writes into OUT (default: beside the checkpoint, eval_<split>/): robustness.json, robustness.md (the table that
is also printed) and robustness.png (accuracy vs SNR: one line per input, the clean figures as markers).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgeav.errors import ConfigError
from edgeav.result import CommandResult
from edgeav.train.evaluate import MASKS, classification_metrics, load_eval_set, predict
from edgeav.train.noise import NoiseBank, mix_at_snr, noise_files

if TYPE_CHECKING:
    from edgeav.train.data.dataset import AVDataset

log = logging.getLogger(__name__)

DEFAULT_SNR_DB = (20.0, 10.0, 0.0, -5.0)
SNR_DB_MIN, SNR_DB_MAX = -60.0, 100.0  # what --snr-db accepts, dB
MODE_NAMES = {"both": "fused", "audio_only": "audio only", "image_only": "picture only"}


def parse_snr_db(text: str | None) -> list[float]:
    """'20,10,0,-5' -> [20.0, 10.0, 0.0, -5.0] (None -> the default list). Anything else is a one-line ConfigError."""
    if text is None:
        return list(DEFAULT_SNR_DB)
    parts = [p.strip() for p in str(text).split(",")]
    values: list[float] = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(f"--snr-db {text!r}: {p!r} is not a number (expected e.g. 20,10,0,-5, dB)") from None
        if not math.isfinite(v) or not SNR_DB_MIN <= v <= SNR_DB_MAX:
            raise ConfigError(f"--snr-db {text!r}: {p} is outside {SNR_DB_MIN:g}..{SNR_DB_MAX:g} dB")
        if v in values:
            raise ConfigError(f"--snr-db {text!r}: {p} is given twice")
        values.append(v)
    return values


def robustness_eval(
    checkpoint: str | Path,
    data_path: str | Path,
    noise_path: str | Path,
    snr_db: Sequence[float] = DEFAULT_SNR_DB,
    split: str = "test",
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    data: AVDataset | None = None,
) -> dict[str, Any]:
    """Accuracy and macro-F1 (fused, audio only, image only) of `checkpoint` on `split`, clean and with the noise
    of `noise_path` at each SNR in `snr_db`; writes robustness.json, .md and .png into `out_dir`."""
    snrs = sorted((float(s) for s in snr_db), reverse=True)
    if not snrs:
        raise ConfigError("robustness: no SNR given")
    ckpt = Path(checkpoint)
    noise_files(noise_path)  # a missing or empty noise path fails before the data set is read
    es = load_eval_set(ckpt, data_path, split, data, batch_size)
    labels = es.info.labels
    sample_rate_hz = es.info.contract.audio.sample_rate_hz
    bank = NoiseBank(noise_path, sample_rate_hz)
    rng = np.random.default_rng(seed)
    conditions: list[float | None] = [None, *snrs]  # None = clean
    preds: dict[tuple[int, str], list[np.ndarray]] = {(k, m): [] for k in range(len(conditions)) for m in MASKS}
    ys: list[np.ndarray] = []
    t0 = time.monotonic()
    for batch in es.loader:
        audio = batch["audio"]  # (B, T) float32
        b, t = audio.shape
        noise = np.stack([bank.segment(t, rng) for _ in range(b)])  # (B, T): each clip's segment, drawn once
        present = (batch["mask"][:, 0] > 0).numpy()[:, None]  # (B, 1)
        ys.append(batch["label"].numpy())
        for k, snr in enumerate(conditions):
            if snr is None:
                noisy = audio
            else:
                mixed = mix_at_snr(audio.numpy(), noise, snr)  # (B, T)
                noisy = torch.from_numpy(np.where(present, mixed, audio.numpy()).astype(np.float32))
            for mode, mask in MASKS.items():
                _, p, _ = predict(es.model, [{**batch, "audio": noisy}], mask)
                preds[k, mode].append(p)
    y = np.concatenate(ys)
    rows = []
    for k, snr in enumerate(conditions):
        row: dict[str, Any] = {"condition": "clean" if snr is None else f"{snr:g} dB", "snr_db": snr}
        for mode in MASKS:
            m = classification_metrics(y, np.concatenate(preds[k, mode]), len(labels))
            row[mode] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
        row["fused_minus_best_single"] = row["both"]["accuracy"] - max(
            row["audio_only"]["accuracy"], row["image_only"]["accuracy"]
        )
        rows.append(row)
    out = Path(out_dir) if out_dir else ckpt.parent / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "data": str(data_path),
        "split": split,
        "n": int(y.size),
        "labels": labels,
        "noise": {
            "path": str(noise_path),
            "files": [str(f) for f in bank.files],
            "duration_s": round(bank.duration_s, 2),
            "sample_rate_hz": sample_rate_hz,
            "seed": seed,
            "how": "one segment per clip drawn once, reused at every SNR and mask; picture untouched",
        },
        "snr_db": snrs,
        "rows": rows,
        "seconds": round(time.monotonic() - t0, 2),
        "report_json": str(out / "robustness.json"),
        "table_md": str(out / "robustness.md"),
        "curve_png": str(out / "robustness.png"),
    }
    table = robustness_table(report)
    (out / "robustness.md").write_text(
        f"# Robustness of `{ckpt.name}` to background noise ({split}, {report['n']} examples)\n\n"
        f"Noise: `{noise_path}` ({len(bank.files)} file(s), {bank.duration_s:.1f} s), mixed into the sound at each "
        f"SNR; the picture untouched; one noise segment per clip (seed {seed}), the same at every SNR.\n\n"
        f"{table}\nCurve: `robustness.png`.\n"
    )
    plot_robustness(report, out / "robustness.png")
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    log.info("robustness of %s on %s (%d examples) in %.1f s: %s", ckpt, split, report["n"], report["seconds"], out)
    return report


def robustness_table(report: dict[str, Any]) -> str:
    """The Markdown table of a robustness report: one row per condition, accuracy and macro-F1 per input."""
    head = "| SNR | " + " | ".join(f"{MODE_NAMES[m]} acc | {MODE_NAMES[m]} F1" for m in MASKS) + " |"
    lines = [head, "|---" * (1 + 2 * len(MASKS)) + "|"]
    for r in report["rows"]:
        cells = [f"{r[m]['accuracy']:.3f} | {r[m]['macro_f1']:.3f}" for m in MASKS]
        lines.append(f"| {r['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_robustness(report: dict[str, Any], path: Path) -> Path:
    """Accuracy vs SNR (dB), one line per input; the clean figures as star markers right of the highest SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["snr_db"] is not None]
    clean = next(r for r in report["rows"] if r["snr_db"] is None)
    x = np.array([r["snr_db"] for r in rows])  # (S,) dB
    span = float(x.max() - x.min()) if x.size > 1 else 10.0
    x_clean = float(x.max()) + max(0.2 * span, 3.0)
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, color in zip(MASKS, ("C0", "C1", "C2")):
        ax.plot(x, [r[mode]["accuracy"] for r in rows], "o-", color=color, label=MODE_NAMES[mode])
        ax.plot([x_clean], [clean[mode]["accuracy"]], "*", color=color, markersize=12)
    ax.axvline(x_clean - 0.5 * max(0.2 * span, 3.0), color="0.8", lw=0.8)
    ticks = sorted(set(x.tolist()))
    ax.set_xticks([*ticks, x_clean], [f"{v:g}" for v in ticks] + ["clean"])
    ax.set_xlabel("SNR of the sound, dB (picture untouched)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{Path(report['checkpoint']).name} on {report['split']} ({report['n']} examples)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_eval_robustness(args: argparse.Namespace) -> CommandResult:
    if getattr(args, "noise", None) is None:
        raise ConfigError("--snr-db needs --noise PATH (a folder or file of noise recordings to mix in)")
    snrs = parse_snr_db(getattr(args, "snr_db", None))
    report = robustness_eval(
        args.checkpoint, args.data, args.noise, snrs, args.split, args.out, seed=getattr(args, "noise_seed", 0)
    )
    text = (
        f"{args.checkpoint} on {args.split} ({report['n']} examples), noise {args.noise}:\n\n"
        f"{robustness_table(report)}\nreport: {report['report_json']}, {report['table_md']}, {report['curve_png']}"
    )
    return CommandResult(report, text)


__all__ = [
    "DEFAULT_SNR_DB",
    "cmd_eval_robustness",
    "parse_snr_db",
    "plot_robustness",
    "robustness_eval",
    "robustness_table",
]
