"""The GRID recipe alone and beside a CPU hog, with threads set (the `threads:` config's default) and left to the
libraries' defaults (`--set threads.intra_op=default`, the behaviour before), all four in one run.

The hog mimics a second torch job on the workstation: a process busy-looping torch matmuls with torch's own default
threads (one per core, idle OpenMP threads spinning). The recipe is `train/grid.yaml` shortened (`--audio-epochs`,
`--image-epochs` in phase I, `--fusion-epochs` in phase II, no test evaluation); the figure is its training time
(the sum of metrics.csv's epoch seconds), and the slowdown the ratio beside the hog / alone over the epochs both
finished. A run beside the hog is stopped after `--cap-s` seconds (then the ratio is a lower bound, `capped`).

    python bench/threads.py [--data ../shared/data/grid] [--max-load 2.5] [--out bench/results]

Refuses to start while the 1-minute load is at or above --max-load (the machine is shared). Writes
bench/results/threads.json and prints one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.threads")

# the environment of every process here: no inherited thread settings, so "defaults" are torch's own
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")

_HOG = r"""
import sys, torch
a = torch.randn(384, 384)
print("ready", torch.get_num_threads(), flush=True)
while True:
    a = torch.tanh(a @ a)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class Hog:
    """A second torch process at full speed on every core, started and stopped around one run."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOG], stdout=subprocess.PIPE, text=True, env=_env())
        line = self.proc.stdout.readline() if self.proc.stdout else ""  # blocks until torch is loaded and running
        if not line.startswith("ready"):
            raise RuntimeError(f"the CPU hog did not start (exit code {self.proc.poll()})")
        self.threads = int(line.split()[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def _epoch_seconds(out: Path) -> list[float]:
    path = out / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def _run_recipe(a: argparse.Namespace, out: Path, mode: str) -> dict[str, Any]:
    sets = [
        f"train.phase1_audio_epochs={a.audio_epochs}",
        f"train.phase1_image_epochs={a.image_epochs}",
        f"train.epochs={a.fusion_epochs}",
        "train.eval_test=false",
        "train.max_minutes=null",
    ]
    if mode == "defaults":
        sets.append("threads.intra_op=default")
    cmd = [
        sys.executable,
        "-m",
        "edgeav",
        "train",
        "--config",
        str(REPO / "train" / "grid.yaml"),
        "--data",
        a.data,
        "--out",
        str(out),
    ] + [x for s in sets for x in ("--set", s)]
    load = _load()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    capped = False
    try:
        _, err = proc.communicate(timeout=a.cap_s)
    except subprocess.TimeoutExpired:
        capped = True
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    wall = time.monotonic() - t0
    if proc.returncode != 0 and not capped:
        raise RuntimeError(f"edgeav train failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    plan = re.search(r"threads: (?:torch|library)[^\n]*", err)  # the plan line edgeav.threads logged
    seconds = _epoch_seconds(out)
    return {
        "mode": mode,
        "train_s": round(sum(seconds), 2),
        "epochs": len(seconds),
        "wall_s": round(wall, 1),
        "capped": capped,
        "epoch_s": seconds,
        "threads": plan.group(0) if plan else None,
        "load_1min_at_start": load,
    }


def _ratio(hog: dict[str, Any], alone: dict[str, Any]) -> float:
    """Slowdown beside the hog over the epochs both runs finished."""
    k = min(len(hog["epoch_s"]), len(alone["epoch_s"]))
    return round(sum(hog["epoch_s"][:k]) / max(sum(alone["epoch_s"][:k]), 1e-9), 2) if k else float("nan")


def one_line(r: dict[str, Any]) -> str:
    def part(mode: str) -> str:
        alone, hog = r["runs"][f"{mode}_alone"], r["runs"][f"{mode}_hog"]
        bound = ">=" if hog["capped"] else ""
        return (
            f"{alone['train_s']:.1f} s alone, {bound}{hog['train_s']:.1f} s beside the hog "
            f"({bound}x{r['slowdown'][mode]:.1f})"
        )

    return (
        f"GRID recipe ({r['recipe']}): threads set: {part('set')}; left to defaults: {part('defaults')}; "
        f"defaults/set x{r['defaults_over_set']['alone']:.1f} alone, x{r['defaults_over_set']['hog']:.1f} beside "
        f"the hog; load {r['load_1min_before']} before, {r['cpus']} CPUs shared"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("EDGEAV_DATA", str(REPO.parent / "shared" / "data")) + "/grid")
    p.add_argument("--audio-epochs", type=int, default=2, help="phase I audio epochs")
    p.add_argument("--image-epochs", type=int, default=1, help="phase I picture epochs")
    p.add_argument("--fusion-epochs", type=int, default=2, help="phase II (fusion) epochs")
    p.add_argument("--cap-s", type=float, default=180.0, help="stop a run beside the hog after this long, s")
    p.add_argument("--max-load", type=float, default=2.5, help="refuse to start at or above this 1-minute load")
    p.add_argument("--note", default="", help="what else ran on the machine, recorded with the figures")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    before = _load()
    if before >= a.max_load:
        sys.stderr.write(
            f"bench/threads.py: the 1-minute load is {before} (>= {a.max_load}): the machine is busy; try again later\n"
        )
        return 3
    runs: dict[str, Any] = {}
    hog_threads = None
    with tempfile.TemporaryDirectory(prefix="edgeav_threads_") as tmp:
        # alone first (short), beside the hog last; each mode's pair back to back
        for mode in ("set", "defaults"):
            runs[f"{mode}_alone"] = _run_recipe(a, Path(tmp) / f"{mode}_alone", mode)
            log.info("%s alone: %s", mode, runs[f"{mode}_alone"])
        for mode in ("set", "defaults"):
            hog = Hog()
            hog_threads = hog.threads
            try:
                runs[f"{mode}_hog"] = _run_recipe(a, Path(tmp) / f"{mode}_hog", mode)
            finally:
                hog.stop()
            log.info("%s beside the hog: %s", mode, runs[f"{mode}_hog"])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": len(os.sched_getaffinity(0)),
        "recipe": (
            f"train/grid.yaml, {a.audio_epochs} audio + {a.image_epochs} picture + {a.fusion_epochs} fusion epochs"
        ),
        "hog": f"torch matmul loop, {hog_threads} threads, torch defaults (OpenMP spinning)",
        "load_1min_before": before,
        "load_1min_after": _load(),
        "note": a.note,
        "cap_s": a.cap_s,
        "runs": runs,
        "slowdown": {m: _ratio(runs[f"{m}_hog"], runs[f"{m}_alone"]) for m in ("set", "defaults")},
        "defaults_over_set": {w: _ratio(runs[f"defaults_{w}"], runs[f"set_{w}"]) for w in ("alone", "hog")},
    }
    result["line"] = one_line(result)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads.json").write_text(json.dumps(result, indent=2) + "\n")
    print(result["line"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
