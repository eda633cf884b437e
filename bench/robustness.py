"""Robustness to recorded background noise: fused, audio-only and picture-only accuracy and macro-F1 of a
checkpoint on the test split, clean and with noise mixed into the sound at each SNR (the picture untouched; each
clip's noise segment drawn once, seeded, and reused at every SNR). The same evaluation as
`edgeav eval CKPT --data D --noise PATH --snr-db ...` (`edgeav.train.robustness`).

    .venv/bin/python bench/robustness.py [--checkpoint runs/grid/best.pt] [--data ../shared/data/grid]
                                         [--noise ../shared/data/streams/birdnet_soundscape_120s.flac]
                                         [--snr-db 20,10,0,-5]

For the README's results table the noise must be one the model never trained on (e.g. the bird soundscape when
training used another field recording). Writes bench/results/robustness.json (with the report's files beside the
checkpoint, eval_<split>/robustness.*) and prints one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEAV_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "runs" / "grid" / "best.pt"))
    p.add_argument("--data", default=str(DATA / "grid"))
    p.add_argument("--noise", default=str(DATA / "streams" / "birdnet_soundscape_120s.flac"))
    p.add_argument(
        "--snr-db", default="20,10,0,-5", help="comma-separated, dB (a list that starts below 0: --snr-db=-5,...)"
    )
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    p.add_argument("--seed", type=int, default=0, help="seed of the noise segments")
    p.add_argument("--eval-out", default=None, help="folder of the report files (default: beside the checkpoint)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "robustness.json"))
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for what, path in (("checkpoint", a.checkpoint), ("data", a.data), ("noise", a.noise)):
        if not Path(path).exists():
            print(f"robustness: {what} {path} not found", file=sys.stderr)
            return 2

    from edgeav.errors import EdgeAVError
    from edgeav.train.robustness import parse_snr_db, robustness_eval

    t0 = time.monotonic()
    try:
        report = robustness_eval(
            a.checkpoint, a.data, a.noise, parse_snr_db(a.snr_db), a.split, a.eval_out, seed=a.seed
        )
    except EdgeAVError as e:
        print(f"robustness: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    result = {
        "bench": "robustness",
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "wall_s": round(time.monotonic() - t0, 1),
        **report,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    cells = [
        f"{r['condition']}: fused {r['both']['accuracy']:.3f} / audio {r['audio_only']['accuracy']:.3f} / "
        f"picture {r['image_only']['accuracy']:.3f}"
        for r in report["rows"]
    ]
    print(
        f"robustness ({Path(a.checkpoint).name}, {a.split} n={report['n']}, noise {Path(a.noise).name}): "
        + "; ".join(cells)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
