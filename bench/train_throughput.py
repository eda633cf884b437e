"""Training throughput on this machine with a cold and a warm decode cache, and proof that no media is decoded
after the first epoch.

Trains the default edge model (train/grid.yaml, joint mode, augmentation on) on GRID for a few epochs with an
EMPTY cache folder, `train.prepare_data=false` and no BatchNorm warm-up, so epoch 1 decodes every clip as it meets it (cold) and later
epochs read the cache (warm). Per epoch: samples/s and the number of media files decoded (decode-cache misses).

    python bench/train_throughput.py [--data ../shared/data/grid] [--epochs 3] [--out bench/results]

Writes bench/results/train_throughput.json and prints one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("EDGEAV_DATA", str(REPO.parent / "shared" / "data")) + "/grid")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from edgeav.schema import load_config
    from edgeav.train.loop import train

    with tempfile.TemporaryDirectory(prefix="edgeav-throughput-") as tmp:
        cache = Path(tmp) / "cache"  # empty: the first epoch is cold
        sets = [
            f"data.cache_dir={cache}",
            "train.mode=joint",
            f"train.epochs={a.epochs}",
            f"train.batch_size={a.batch_size}",
            f"train.threads={a.threads}",
            "train.prepare_data=false",
            "train.bn_warmup_batches=0",
            "train.eval_test=false",
            "train.early_stop_patience=1000",
            "train.max_minutes=1000",
        ]
        cfg = load_config(REPO / "train" / "grid.yaml", sets)
        t0 = time.monotonic()
        report = train(cfg, a.data, Path(tmp) / "run")
        wall_s = time.monotonic() - t0
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    epochs = [
        {
            "epoch": int(r["epoch"]),
            "samples_per_s": float(r["samples_per_s"]),
            "decoded": int(r["decoded"]),
            "seconds": float(r["seconds"]),
        }
        for r in rows
    ]
    cold, warm = epochs[0], epochs[1:]
    result = {
        "data": a.data,
        "model": report["model"],
        "mode": "joint",
        "batch_size": a.batch_size,
        "threads": a.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "epochs": epochs,
        "cold_samples_per_s": cold["samples_per_s"],
        "warm_samples_per_s": round(sum(e["samples_per_s"] for e in warm) / max(len(warm), 1), 2),
        "decoded_first_epoch": cold["decoded"],
        "decoded_after_first_epoch": sum(e["decoded"] for e in warm),
        "wall_s": round(wall_s, 1),
        "note": "shared 2-core machine: other jobs may run at the same time; samples/s include augmentation",
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    line = (
        f"train throughput (GRID, {report['model']}, batch {a.batch_size}, {a.threads} threads): cold cache "
        f"{result['cold_samples_per_s']} samples/s ({result['decoded_first_epoch']} files decoded in epoch 1), "
        f"warm {result['warm_samples_per_s']} samples/s ({result['decoded_after_first_epoch']} decoded after epoch 1)"
    )
    print(line)
    return 0 if result["decoded_after_first_epoch"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
