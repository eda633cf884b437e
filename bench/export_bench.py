"""Benchmark exported bundles: `edgeav bench` on each, longer runs, JSON + one line of text per bundle.

    .venv/bin/python bench/export_bench.py runs/grid_bundle_int8 [more bundles] [--out runs/export_bench.json]
        [--rounds 10] [--iters 20] [--threads 0]

Writes one JSON object {"bundles": {path: bench result}, "settings": ...} to --out (default: stdout) and prints one
line per bundle on stderr: latency p50/p95 at batch 1 per backend, throughput at the best batch, sizes, peak memory,
and the ONNX Runtime INT8 / FP32 p50 ratio with the target (<= 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from edgeav.errors import EdgeAVError
    from edgeav.export.bench import BenchSettings, one_line, run_bench
    from edgeav.log import setup_logging
    from edgeav.schema import ThreadsConfig
    from edgeav.threads import apply_threads, plan_threads

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+")
    p.add_argument("--out", help="JSON file to write (default: stdout)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    p.add_argument("--iters", type=int, default=20, help="batch-1 iterations per backend per round")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: the cores free; 0: the libraries' default)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe processes")
    args = p.parse_args(argv)
    setup_logging()
    apply_threads(plan_threads(ThreadsConfig()))  # as `edgeav bench` does: the cores free, OpenMP passive
    s = BenchSettings(
        rounds=args.rounds, iters_per_round=args.iters, threads=args.threads, memory_probe=not args.no_memory
    )
    results = {}
    for b in args.bundles:
        try:
            results[b] = run_bench(b, s)
        except EdgeAVError as e:
            sys.stderr.write(f"{b}: error: {e}\n")
            return e.exit_code
        sys.stderr.write(f"{Path(b).name}: {one_line(results[b])}\n")
    doc = json.dumps({"bundles": results, "settings": vars(s)}, indent=2, sort_keys=True, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(doc + "\n", encoding="utf-8")
    else:
        sys.stdout.write(doc + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
