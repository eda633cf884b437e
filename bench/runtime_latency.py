"""Capture-to-detection latency on a live `test://` source (videotestsrc + audiotestsrc, is-live: buffers come on
the pipeline clock as a camera and a microphone deliver them).

For every detection: latency = wall clock when `run_stream` hands it over - wall clock at which the first sample of
its window was captured (its `start_utc`, the capture's PTS mapped to UTC). The target is window + 100 ms: the
window itself has to be heard before it can be classified; everything after its last sample (waiting for the
frame, alignment, inference, post-processing) must fit in 100 ms. `after_window_ms` gives that part alone.
Every window is made a detection (threshold 0, no confirmation, no gap) so that each one is timed.

    .venv/bin/python bench/runtime_latency.py [--bundle runs/grid_bundle_int8] [--windows 60]

Writes bench/results/runtime_latency.json and prints one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from runtime_common import machine, open_model, parse_stream_args, runtime_config, write_result  # noqa: E402


def _utc_ns(iso: str) -> int:
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(round(t.timestamp() * 1000)) * 1_000_000  # ISO strings carry milliseconds


def _latency_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--windows", type=int, default=60, help="windows to time (hop 0.5 s: 60 = 30 s)")
    p.add_argument(
        "--audio-chunk-s",
        type=float,
        default=0.02,
        help="microphone buffer length: a sample reaches the runtime one buffer after it was captured",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_stream_args(__doc__, argv, "test://?live=1&pattern=ball&freq_hz=440&volume=0.5", _latency_args)
    from edgeav.runtime.backends import backend_from_config
    from edgeav.runtime.engine import run_stream

    model = open_model(args)
    cfg = runtime_config(
        args,
        source={"uri": args.source, "audio_chunk_s": args.audio_chunk_s},
        postprocess={"threshold": 0.0, "smoothing": "none", "confirm_hits": 1, "min_gap_s": 0.0},
    )
    backend = backend_from_config(cfg.backend, model.path, model.contract)
    window_ms = model.contract.audio.window_s * 1000
    lat, after = [], []
    load_before = machine()["loadavg_1_5_15"]
    n = 0
    gen = run_stream(cfg.source, backend, model.contract, model.labels, cfg, model_sha256=model.sha256)
    try:
        for res in gen:
            now = time.time_ns()
            n += 1
            if res.detections:
                d = res.detections[0]  # all detections of a window are handed over together
                lat.append((now - _utc_ns(d.start_utc)) / 1e6)
                after.append((now - _utc_ns(d.end_utc)) / 1e6)
            if n >= args.windows:
                break
    finally:
        gen.close()
        backend.close()
    if not lat:
        print("runtime_latency: no detection was timed", file=sys.stderr)
        return 1
    lat_a, after_a = np.array(lat), np.array(after)
    p50, p95 = float(np.percentile(lat_a, 50)), float(np.percentile(lat_a, 95))
    data = {
        "source": args.source,
        **model.identity(),
        "config": {
            "ort_threads": args.threads,
            "audio_chunk_s": args.audio_chunk_s,
            "fps": cfg.source.fps,
            "hop_s": cfg.align.hop_s,
            "window_s": model.contract.audio.window_s,
        },
        "detections_timed": len(lat),
        "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "max": round(float(lat_a.max()), 1)},
        "after_window_ms": {
            "p50": round(float(np.percentile(after_a, 50)), 1),
            "p95": round(float(np.percentile(after_a, 95)), 1),
            "max": round(float(after_a.max()), 1),
        },
        "target_p95_ms": window_ms + 100.0,
        "meets_target": p95 <= window_ms + 100.0,
        "loadavg_before": load_before,
        "machine": machine(),
    }
    line = (
        f"runtime_latency: capture-to-detection p50 {p50:.0f} ms, p95 {p95:.0f} ms (target {window_ms + 100:.0f}); "
        f"after the window p95 {data['after_window_ms']['p95']:.0f} ms; {len(lat)} detections, "
        f"{model.line_suffix(data['machine']['loadavg_1_5_15'][0])}"
    )
    write_result("runtime_latency", data, line, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
