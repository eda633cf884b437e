"""BirdNET V2.4 alone on the birds test split: its own logits restricted to the data set's species, on the test
windows the trained models are scored on (the recipe's `data:` section: recordings.csv's test recordings, cut into
windows of window_s every hop_s). The comparison every ecologist makes first.

    python bench/birdnet_alone.py [--recipe train/birds.yaml] [--data ../shared/data/birds]
                                  [--out bench/results/birdnet_alone.json] [--set data.window_s=3]

BirdNET takes 3 s at 48 kHz. The recipe's test windows are read at 48 kHz (same recordings, starts and lengths:
only the sample rate differs from a 16 kHz recipe); a window longer than 3 s (train/birds.yaml's 5 s) is scored
as BirdNET scores a longer clip, in 3 s chunks spread evenly over it (first at its start, last at its end: 0-3 s
and 2-5 s of a 5 s window), their sigmoid confidences averaged. A 3 s window is one chunk.

Figures: window accuracy and macro-F1 (argmax of the window's confidences over the species), and per-recording
accuracy (argmax of the mean confidence over a recording's windows; majority vote alongside). Writes the JSON and
prints one line. Needs the converted BirdNET (`edgeav model birdnet-convert`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEAV_DATA", REPO.parent / "shared" / "data"))
RESULT = REPO / "bench" / "results" / "birdnet_alone.json"
log = logging.getLogger("bench.birdnet_alone")


def test_windows(recipe: Path, data: Path, sets: list[str] | None = None) -> tuple[Any, list[Any], dict[str, Any]]:
    """(data set, the test split's audio samples in the trained models' order, how the windows were cut)."""
    from edgeav.schema import load_config
    from edgeav.train.data import load_dataset
    from edgeav.train.data.torch_dataset import TorchAVDataset
    from edgeav.train.models.birdnet import SAMPLE_RATE_HZ, WINDOW_S

    cfg = load_config(recipe, list(sets or [])).data
    if cfg.window_s < WINDOW_S:
        raise SystemExit(f"birdnet_alone: {recipe} cuts {cfg.window_s:g} s windows; BirdNET needs {WINDOW_S:g} s")
    n_chunks = int(np.ceil(cfg.window_s / WINDOW_S - 1e-9))
    cut = {
        "recipe_sample_rate_hz": cfg.sample_rate_hz,
        "window_s": cfg.window_s,
        "hop_s": cfg.hop_s,
        "read_at_hz": SAMPLE_RATE_HZ,
        "birdnet_chunks_per_window": n_chunks,
    }
    if cfg.sample_rate_hz != SAMPLE_RATE_HZ or n_chunks > 1:
        log.info(
            "%s: %g s test windows read at %d Hz, %d BirdNET chunk(s) of %g s each",
            recipe,
            cfg.window_s,
            SAMPLE_RATE_HZ,
            n_chunks,
            WINDOW_S,
        )
    cfg = cfg.model_copy(update={"sample_rate_hz": SAMPLE_RATE_HZ})
    ds = load_dataset(cfg, data)
    tds = TorchAVDataset(ds, "test", epoch=0)
    samples = [a for a, _ in tds.items if a is not None and a.audio is not None]  # what the audio branch is scored on
    return ds, samples, cut


def chunk_windows(waves: np.ndarray, k: int) -> np.ndarray:
    """(N, L) windows -> (N * k, 144000): k chunks of 3 s per window, starts spread evenly from 0 to L - 144000."""
    from edgeav.train.models.birdnet import WINDOW_SAMPLES

    length = int(waves.shape[1])
    starts = [0] if k == 1 else [round(i * (length - WINDOW_SAMPLES) / (k - 1)) for i in range(k)]
    return np.stack([w[s : s + WINDOW_SAMPLES] for w in waves for s in starts])


def per_recording(groups: list[str], labels: np.ndarray, conf: np.ndarray) -> dict[str, Any]:
    """Accuracy over recordings: argmax of the mean confidence of a recording's windows, and majority vote."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    mean_ok = vote_ok = 0
    rows = []
    for g, idx in sorted(by.items()):
        truth = int(labels[idx[0]])
        mean_pred = int(np.argmax(conf[idx].mean(axis=0)))
        vote_pred = int(np.bincount(conf[idx].argmax(axis=1), minlength=conf.shape[1]).argmax())
        mean_ok += mean_pred == truth
        vote_ok += vote_pred == truth
        rows.append({"recording": g, "windows": len(idx), "truth": truth, "predicted": mean_pred})
    n = max(1, len(by))
    return {"recordings": len(by), "accuracy": mean_ok / n, "accuracy_majority": vote_ok / n, "rows": rows}


def run(recipe: Path, data: Path, batch: int = 16, sets: list[str] | None = None) -> dict[str, Any]:
    from edgeav.train.evaluate import classification_metrics
    from edgeav.train.models.birdnet import BIRDNET_LICENCE, birdnet_scores

    t0 = time.monotonic()
    ds, samples, cut = test_windows(recipe, data, sets)
    cut["overrides"] = list(sets or [])
    if not samples:
        raise SystemExit(f"birdnet_alone: the test split of {data} has no audio windows")
    loaded = [ds.load_audio(s.audio) for s in samples]
    failed = sorted({s.audio.file for s, w in zip(samples, loaded) if w is None})
    if failed:  # a window left out would make the comparison unlike
        raise SystemExit(f"birdnet_alone: {len(failed)} test recording(s) failed to decode, e.g. {failed[0]}")
    waves = np.stack([np.asarray(w, dtype=np.float32) for w in loaded])  # (N, W * 48000)
    chunks = chunk_windows(waves, cut["birdnet_chunks_per_window"])  # (N * k, 144000)
    t_decode = time.monotonic() - t0
    logits = birdnet_scores(chunks, list(ds.classes), batch_size=batch)  # (N * k, S)
    conf = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))  # BirdNET's confidences
    conf = conf.reshape(len(waves), cut["birdnet_chunks_per_window"], -1).mean(axis=1)  # (N, S)
    labels = np.array([s.label for s in samples])
    m = classification_metrics(labels, conf.argmax(axis=1), len(ds.classes))
    rec = per_recording([s.group for s in samples], labels, conf)
    seconds = time.monotonic() - t0
    return {
        "model": (
            "BirdNET V2.4 (birdnet_v24, torch from the converted TFLite), logits restricted to the data set's species"
        ),
        "licence": BIRDNET_LICENCE,
        "recipe": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
        "data": str(data),
        "windows": cut,
        "test_windows": m["n"],
        "unique_windows": len({s.id for s in samples}),
        "classes": list(ds.classes),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class_recall": dict(zip(ds.classes, m["per_class_recall"])),
        "confusion": m["confusion"],
        "per_recording": rec,
        "seconds": round(seconds, 1),
        "decode_seconds": round(t_decode, 1),
        "ms_per_chunk": round(1000 * (seconds - t_decode) / len(chunks), 1),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_1_5_15": list(os.getloadavg())},
    }


def one_line(r: dict[str, Any]) -> str:
    rec = r["per_recording"]
    w = r["windows"]
    k = w["birdnet_chunks_per_window"]
    how = f"{w['window_s']:g} s windows" + (f", {k} BirdNET chunks of 3 s each" if k > 1 else "")
    return (
        f"birdnet_alone: window accuracy {100 * r['accuracy']:.1f} %, macro-F1 {r['macro_f1']:.3f} on "
        f"{r['test_windows']} test windows; per recording {100 * rec['accuracy']:.1f} % "
        f"({round(rec['accuracy'] * rec['recordings'])}/{rec['recordings']}; majority "
        f"{100 * rec['accuracy_majority']:.1f} %); {how}; {r['ms_per_chunk']} ms per 3 s chunk"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "train" / "birds.yaml"))
    p.add_argument("--data", default=str(DATA / "birds"))
    p.add_argument("--out", default=str(RESULT))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="a data.* override of the recipe (e.g. data.window_s=3: BirdNET's own 3 s windows)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from edgeav.train.models.birdnet import birdnet_missing

    reason = birdnet_missing()
    if reason is not None:
        print(f"birdnet_alone: {reason}", file=sys.stderr)
        return 2
    r = run(Path(a.recipe).resolve(), Path(a.data), a.batch, a.sets)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(one_line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
