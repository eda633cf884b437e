"""Replay the 120 s GRID stream at real time (`--realtime`: buffers paced on the pipeline clock, as a live sensor
would deliver them) through the whole chain, and measure what the process costs: CPU time of all its threads per
second of wall time (% of one core) and its peak resident memory (VmHWM), both from /proc of this process.

    .venv/bin/python bench/runtime_realtime.py [--bundle runs/grid_bundle_int8] [--duration-s 120]

Writes bench/results/runtime_realtime.json and prints one line. Targets: CPU <= 25 % of one core, RSS <= 400 MB.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_common import (  # noqa: E402
    STREAM_URI,
    cpu_seconds,
    machine,
    open_model,
    parse_stream_args,
    proc_status_kb,
    runtime_config,
    write_result,
)


def main(argv: list[str] | None = None) -> int:
    args = parse_stream_args(
        __doc__,
        argv,
        STREAM_URI,
        lambda p: p.add_argument(
            "--duration-s", type=float, default=None, help="stop after this much stream (default: all)"
        ),
    )
    from edgeav.runtime.backends import backend_from_config
    from edgeav.runtime.engine import run_stream
    from edgeav.timebase import NS_PER_S

    model = open_model(args)
    cfg = runtime_config(args)
    backend = backend_from_config(cfg.backend, model.path, model.contract)
    rss_after_load_mb = proc_status_kb("VmRSS") / 1024
    samples: list[float] = []
    stop = threading.Event()

    def sample_rss() -> None:  # steady-state memory, every second
        while not stop.wait(1.0):
            samples.append(proc_status_kb("VmRSS") / 1024)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    load_before = machine()["loadavg_1_5_15"]
    n_windows = n_det = 0
    last_end_ns = 0
    sampler.start()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    try:
        for res in run_stream(
            args.source, backend, model.contract, model.labels, cfg, realtime=True, model_sha256=model.sha256
        ):
            n_windows += 1
            n_det += len(res.detections)
            last_end_ns = res.window.end_ns
            if args.duration_s is not None and last_end_ns >= args.duration_s * NS_PER_S:
                break
    finally:
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        stop.set()
        backend.close()
    cpu_pct = 100.0 * cpu / wall
    peak_mb = proc_status_kb("VmHWM") / 1024
    data = {
        "source": args.source,
        **model.identity(),
        "config": {
            "ort_threads": args.threads,
            "fps": cfg.source.fps,
            "hop_s": cfg.align.hop_s,
            "window_s": model.contract.audio.window_s,
        },
        "stream_s": round(last_end_ns / NS_PER_S, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(cpu_pct, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "rss_after_model_load_mb": round(rss_after_load_mb, 1),
        "rss_steady_max_mb": round(max(samples), 1) if samples else None,
        "windows": n_windows,
        "detections": n_det,
        "targets": {"cpu_percent_of_one_core": 25.0, "peak_rss_mb": 400.0},
        "loadavg_before": load_before,
        "machine": machine(),
    }
    line = (
        f"runtime_realtime: CPU {cpu_pct:.1f} % of one core, peak RSS {peak_mb:.0f} MB over {wall:.1f} s "
        f"({n_windows} windows), {model.line_suffix(data['machine']['loadavg_1_5_15'][0])}"
    )
    write_result("runtime_realtime", data, line, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
