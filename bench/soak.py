"""Soak bench of the field daemon: an hour of stream replayed at full speed (the file looped) through
`edgeav run --config` - capture, alignment, inference, detection log, evidence, metrics - while resident memory
and open file descriptors of the daemon process are sampled from /proc.

The daemon runs with the Environment= of runtime/edgeav.service (glibc malloc tuning), as the unit deploys it.
Pass: resident memory grows at most 5 % from the end of the warm-up (the first 10 % of the stream) to the end
(median of the first vs. the last quarter of the samples after the warm-up),
and the open file descriptors stay flat (median of the last third of the samples no higher than the first
third's, peaks at most 2 higher: every loop of the file opens a fresh pipeline, every detection two files). Writes bench/results/soak.json and
prints one line.

    .venv/bin/python bench/soak.py                      # the INT8 GRID bundle on the 120 s GRID stream, 1 h
    .venv/bin/python bench/soak.py --bundle B --source file:///x.mp4 --media-hours 0.2

`--hours H` runs the storage side instead, H hours of simulated time at full speed (bench/soak_store.py): the
detection log, its MQTT outbox through a real mosquitto (when installed) and the upkeep (outbox pruning after
acknowledgement, `store.keep_days`) - where months of field use grow. Writes bench/results/soak_store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEAV_DATA", REPO.parent / "shared" / "data"))
DEFAULT_BUNDLE = REPO / "runs" / "grid_bundle_int8"
DEFAULT_STREAM = DATA / "streams" / "grid_stream_120s.mp4"


def unit_environment() -> dict[str, str]:
    """Environment= of runtime/edgeav.service: the soak runs the daemon as the unit deploys it."""
    out = {}
    unit = REPO / "runtime" / "edgeav.service"
    for ln in unit.read_text().splitlines():
        if ln.startswith("Environment="):
            k, _, v = ln[len("Environment=") :].partition("=")
            out[k] = v
    return out


def proc_figures(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                k, v = ln.split(":", 1)
                out[k] = int(v.split()[0])
    fds = os.listdir(f"/proc/{pid}/fd")
    return {"rss_kb": out["VmRSS"], "hwm_kb": out["VmHWM"], "threads": out["Threads"], "fds": len(fds)}


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--source", default=DEFAULT_STREAM.as_uri() if DEFAULT_STREAM.exists() else None)
    p.add_argument("--media-hours", type=float, default=1.0, help="stream time to replay (default 1 h)")
    p.add_argument("--warmup-fraction", type=float, default=0.1, help="share of the stream that is warm-up")
    p.add_argument("--sample-s", type=float, default=2.0, help="sampling period, s")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "soak.json"))
    p.add_argument("--max-rss-growth-pct", type=float, default=5.0)
    p.add_argument(
        "--no-unit-env",
        action="store_true",
        help="do not apply the Environment= lines of runtime/edgeav.service (malloc tuning)",
    )
    p.add_argument(
        "--hours",
        type=float,
        default=None,
        help="simulate this many hours of the detection log, outbox and upkeep at full speed instead",
    )
    p.add_argument("--detections-per-hour", type=int, default=2000, help="with --hours: simulated detection rate")
    p.add_argument("--keep-days", type=float, default=None, help="with --hours: store.keep_days (default: keep all)")
    p.add_argument("--outbox-keep-days", type=float, default=1 / 24, help="with --hours: store.outbox_keep_days")
    args = p.parse_args(argv)
    if args.hours is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from soak_store import store_soak

        out = (
            args.out
            if args.out != str(REPO / "bench" / "results" / "soak.json")
            else str(REPO / "bench" / "results" / "soak_store.json")
        )
        return store_soak(
            args.hours,
            args.detections_per_hour,
            Path(out),
            keep_days=args.keep_days,
            outbox_keep_days=args.outbox_keep_days,
            warmup_fraction=args.warmup_fraction,
            max_rss_growth_pct=args.max_rss_growth_pct,
        )
    if not Path(args.bundle).is_dir():
        print(
            f"soak: bundle {args.bundle} not found (write one with `edgeav export`, or pass --bundle)", file=sys.stderr
        )
        return 2
    if not args.source:
        print(f"soak: no source: {DEFAULT_STREAM} is absent; pass --source file:///...", file=sys.stderr)
        return 2
    target_s = args.media_hours * 3600.0
    with tempfile.TemporaryDirectory(prefix="edgeav-soak-") as tmp:
        t = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        import yaml

        cfg = {
            "runtime": {"source": {"uri": args.source}, "backend": {"intra_op_threads": args.threads}},
            "daemon": {
                "bundle": str(args.bundle),
                "realtime": False,
                "loop": True,
                "sensors": "combined",
                "store": {"db_path": str(t / "det.db")},
                "evidence": {"dir": str(t / "evidence")},
                "metrics": {"enabled": True, "port": port},
            },
        }
        (t / "soak.yaml").write_text(yaml.safe_dump(cfg))
        env = dict(os.environ)
        if not args.no_unit_env:
            env.update(unit_environment())
        env["OMP_NUM_THREADS"] = str(args.threads)
        cmd = [sys.executable, "-m", "edgeav", "-q", "run", "--config", str(t / "soak.yaml"), "--json"]
        for o in args.overrides:
            cmd += ["--set", o]
        err = open(t / "stderr.log", "w")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        samples: list[dict] = []
        t0 = time.monotonic()
        hop_s = None
        try:
            while proc.poll() is None:
                time.sleep(args.sample_s)
                try:
                    fig = proc_figures(proc.pid)  # before the HTTP request: its socket is not counted
                    h = health(port)
                except (OSError, ValueError):
                    continue  # not up yet
                if hop_s is None:
                    from edgeav.schema import load_config

                    hop_s = load_config(t / "soak.yaml", args.overrides).runtime.align.hop_s
                media = h["windows"] * hop_s
                samples.append(
                    {
                        "t_s": round(time.monotonic() - t0, 1),
                        "media_s": round(media, 1),
                        **fig,
                        "windows": h["windows"],
                        "detections": h["detections"],
                    }
                )
                if media >= target_s:
                    break
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            err.close()
        if proc.returncode != 0 or not samples:
            print(f"soak: daemon exited {proc.returncode}: {(t / 'stderr.log').read_text()[-1500:]}", file=sys.stderr)
            return 1
        summary = json.loads(out)
    warm = [s for s in samples if s["media_s"] >= args.warmup_fraction * target_s]
    if len(warm) < 6:
        print("soak: too few samples after the warm-up; lower --sample-s", file=sys.stderr)
        return 1
    # Resident memory swings by +-10 MB with how full the capture queues happen to be at a sample (full-speed
    # replay keeps up to queue_max_items frames in flight), so each end is the median of a quarter of the samples.
    q = max(3, len(warm) // 4)
    rss_warm = statistics.median(s["rss_kb"] for s in warm[:q])
    rss_end = statistics.median(s["rss_kb"] for s in warm[-q:])
    growth = 100.0 * (rss_end - rss_warm) / rss_warm
    growth_3 = (
        100.0
        * (statistics.median(s["rss_kb"] for s in warm[-3:]) - statistics.median(s["rss_kb"] for s in warm[:3]))
        / statistics.median(s["rss_kb"] for s in warm[:3])
    )
    fds = [s["fds"] for s in warm]
    wall = samples[-1]["t_s"]
    result = {
        "bench": "soak",
        "bundle": str(args.bundle),
        "source": args.source,
        "media_s": samples[-1]["media_s"],
        "wall_s": wall,
        "realtime_factor": round(samples[-1]["media_s"] / wall, 2) if wall else None,
        "windows": summary["windows"],
        "detections": summary["detections"],
        "committed": summary["committed"],
        "evidence": summary["evidence"],
        "rss_warm_mb": round(rss_warm / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_peak_mb": round(max(s["hwm_kb"] for s in samples) / 1024, 1),
        "rss_growth_pct": round(growth, 2),
        "rss_growth_pct_3_samples": round(growth_3, 2),
        "rss_min_after_warmup_mb": round(min(s["rss_kb"] for s in warm) / 1024, 1),
        "rss_max_after_warmup_mb": round(max(s["rss_kb"] for s in warm) / 1024, 1),
        "fds_min": min(fds),
        "fds_max": max(fds),
        "threads_max": max(s["threads"] for s in warm),
        "fds_first_third_max": max(fds[: len(fds) // 3]),
        "fds_last_third_max": max(fds[-(len(fds) // 3) :]),
        "unit_environment": {} if args.no_unit_env else unit_environment(),
        "stop_s": summary["stop_s"],
        "pass_rss": growth <= args.max_rss_growth_pct,
        "fds_first_third_median": statistics.median(fds[: len(fds) // 3]),
        "fds_last_third_median": statistics.median(fds[-(len(fds) // 3) :]),
        # each loop of the file opens a fresh pipeline and each detection writes two evidence files, so the count
        # moves with where a sample falls; flat = no more in the last third than in the first (median), and no
        # peak more than 2 above the first third's (one pipeline being built / one evidence file open)
        "pass_fds": (
            statistics.median(fds[-(len(fds) // 3) :]) <= statistics.median(fds[: len(fds) // 3])
            and max(fds[-(len(fds) // 3) :]) <= max(fds[: len(fds) // 3]) + 2
        ),
        "load_avg": os.getloadavg(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "samples": samples,
    }
    result["pass"] = result["pass_rss"] and result["pass_fds"]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"soak: {result['media_s'] / 3600:.2f} h of stream in {wall / 60:.1f} min ({result['realtime_factor']}x), "
        f"{result['windows']} windows, {result['detections']} detections; RSS {result['rss_warm_mb']} -> "
        f"{result['rss_end_mb']} MB after warm-up ({growth:+.2f} %), fds {min(fds)}..{max(fds)}: "
        f"{'PASS' if result['pass'] else 'FAIL'} -> {out_path.relative_to(REPO) if out_path.is_relative_to(REPO) else out_path}"
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
