"""`edgeav analyze`: a bundle over an archive of recordings, photos and videos, on this machine or a Ray cluster.

    edgeav analyze --bundle B INPUT... --out DIR [--format csv,raven,audacity,json] [--workers N]
                   [--min-confidence P] [--resume] [--engine local|ray --address ADDR]

media.py reads files streamed, deploy.py pairs a deployment's photos and recordings by time, worker.py runs the model
on one file, run.py coordinates (resume, journal, progress), ray_engine.py runs the workers as Ray actors,
outputs.py writes the tables. Torch-free: the bundle runs in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import logging

from edgeav.errors import ConfigError
from edgeav.result import CommandResult

log = logging.getLogger(__name__)


def parse_formats(text: str) -> tuple[str, ...]:
    from .outputs import FORMATS

    got = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in got if f not in FORMATS]
    if bad or not got:
        raise ConfigError(f"--format {text!r}: unknown format(s) {bad}; valid: {', '.join(FORMATS)}")
    return got


def cmd_analyze(args: argparse.Namespace) -> CommandResult:
    from .run import run_analyze

    if not 0.0 <= args.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence {args.min_confidence}: expected a probability from 0 to 1")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected at least 1")
    if args.address and args.engine != "ray":
        raise ConfigError("--address is for --engine ray")
    workers = args.workers
    if workers is None:
        if args.engine == "ray":
            from .ray_engine import connect

            workers = max(1, int(connect(args.address).cluster_resources().get("CPU", 1)))
        else:
            from edgeav.onnx_session import free_cores

            workers = free_cores()
    summary = run_analyze(
        args.bundle,
        args.inputs,
        args.out,
        formats=parse_formats(args.format),
        workers=workers,
        min_confidence=args.min_confidence,
        resume=args.resume,
        engine=args.engine,
        address=args.address,
    )
    t, run = summary["totals"], summary["run"]
    lines = [
        f"analyzed {t['files']} files ({t['files_failed']} failed), {t['media_s'] / 3600:.2f} h of media, "
        f"{t['detections']} detections -> {args.out}",
        f"this run: {run['files_done_now']} files in {run['wall_s']:.1f} s, "
        f"{run['x_realtime'] or 0:.0f}x real time ({run['x_realtime_per_core'] or 0:.0f}x per core), "
        f"engine {run['engine']}, {run['workers']} workers; {run['files_skipped']} already done",
    ]
    lines += [f"failed: {e['path']}: {e['error']}" for e in summary["errors"]]
    data = {"out": str(args.out), "totals": t, "run": run, "errors": summary["errors"], "classes": summary["classes"]}
    return CommandResult(data, "\n".join(lines))


__all__ = ["cmd_analyze", "parse_formats"]
