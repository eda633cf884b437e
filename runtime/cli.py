"""`edgeav run` and `edgeav detections`.

`edgeav run --bundle B --source URI` replays a recording (or runs a source until it ends) through
`engine.run_stream`, logs the detections to SQLite (`--db`) and prints a summary: windows, detections, the
real-time factor, and with `--ground-truth CSV` the segment accuracy.

`edgeav run --config daemon.yaml` is the long-running daemon (edgeav.runtime.daemon): supervised sensors,
evidence, metrics, MQTT, systemd notify.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.errors import ConfigError
from edgeav.result import CommandResult

if TYPE_CHECKING:
    from edgeav.bundle import BundleInfo
    from edgeav.runtime.backends import Backend
    from edgeav.schema import EdgeAVConfig

log = logging.getLogger(__name__)


def load_run_config(args: argparse.Namespace) -> EdgeAVConfig:
    """The whole EdgeAVConfig from --config and --set (defaults when no file)."""
    from edgeav.schema import load_config

    return load_config(getattr(args, "config", None), getattr(args, "overrides", None))


def pick_model_role(info: BundleInfo, backend_name: str, role: str | None) -> str:
    """The bundle file to run: `role` if given, else int8 then fp32 ONNX (an engine file for tensorrt)."""
    from edgeav.errors import BundleError

    if role is not None:
        info.model(role)  # BundleError listing what the bundle has
        return role
    if backend_name == "tensorrt":
        engines = sorted(r for r, p in info.files.items() if p.suffix in (".engine", ".plan"))
        if not engines:
            raise BundleError(
                f"{info.path}: no TensorRT engine in the bundle (build one on the device with "
                f"`edgeav export --engine`); it has {', '.join(sorted(info.files))}"
            )
        return engines[0]
    for r in ("model_int8", "model_fp32"):
        if r in info.files:
            return r
    onnx = sorted(r for r, p in info.files.items() if p.suffix == ".onnx")
    if not onnx:
        raise BundleError(f"{info.path}: no ONNX model in the bundle; it has {', '.join(sorted(info.files))}")
    return onnx[0]


def open_bundle(bundle_path: str, cfg: EdgeAVConfig) -> tuple[BundleInfo, Backend, str, str]:
    """Verify the bundle (BundleError, exit 2, on any mismatch), open its model: (info, backend, role, sha256)."""
    from edgeav.bundle import verify_bundle
    from edgeav.runtime.backends import backend_from_config

    info = verify_bundle(bundle_path)
    role = pick_model_role(info, cfg.runtime.backend.name, cfg.daemon.model_role)
    model_path = info.model(role)
    sha = info.sha256[role]  # checked against the manifest by verify_bundle
    backend = backend_from_config(cfg.runtime.backend, model_path, info.manifest.contract)
    log.info("bundle %s: running %s (%s, sha256 %s...)", info.path, role, model_path.name, sha[:12])
    return info, backend, role, sha


def replay(args: argparse.Namespace, cfg: EdgeAVConfig) -> CommandResult:
    """One pass over `--source` with `engine.run_stream`; detections into `--db` when given."""
    from edgeav.runtime.engine import WindowPrediction, read_segments_csv, run_stream, score_segments
    from edgeav.runtime.sources import mask_credentials, parse_source_uri
    from edgeav.runtime.store import DetectionStore, new_detection_id

    parse_source_uri(args.source)  # a bad URI is a ConfigError before anything is loaded
    segments = read_segments_csv(args.ground_truth) if args.ground_truth else None
    info, backend, role, sha = open_bundle(args.bundle, cfg)
    labels = info.labels
    store = None
    run_id = new_detection_id(time.time_ns())
    if args.db:
        st = cfg.daemon.store
        store = DetectionStore(
            args.db, synchronous=st.synchronous, batch_max=st.batch_max_detections, batch_interval_s=st.batch_interval_s
        )
        store.record_run(run_id, str(info.path), mask_credentials(args.source), sha)
    n_windows = n_inferred = n_missing_audio = n_missing_image = 0
    detections: list[dict[str, Any]] = []
    per_label: dict[str, int] = {}
    preds: list[WindowPrediction] = []
    last_end_ns = first_start_ns = None
    t0 = time.perf_counter()
    try:
        for res in run_stream(
            args.source,
            backend,
            info.manifest.contract,
            labels,
            cfg.runtime,
            realtime=bool(args.realtime),
            model_sha256=sha,
        ):
            w = res.window
            n_windows += 1
            first_start_ns = w.start_ns if first_start_ns is None else first_start_ns
            last_end_ns = w.end_ns
            n_missing_audio += w.audio is None
            n_missing_image += w.frames is None
            if res.scores is None:
                continue
            n_inferred += 1
            if segments is not None:
                import numpy as np

                p = res.scores.fused
                preds.append(WindowPrediction(w.centre_ns, labels[int(np.argmax(p))], p))
            for det in res.detections:
                did = store.add(det, source=mask_credentials(args.source), run_id=run_id) if store else None
                d = det.to_dict()
                d["id"] = did
                detections.append(d)
                per_label[det.label] = per_label.get(det.label, 0) + 1
            if store is not None:
                store.maybe_flush()
    finally:
        backend.close()
        if store is not None:
            store.close()
    wall_s = time.perf_counter() - t0
    media_s = (last_end_ns or 0) / 1e9
    data: dict[str, Any] = {
        "bundle": str(info.path),
        "model_role": role,
        "model_sha256": sha,
        "source": mask_credentials(args.source),
        "realtime": bool(args.realtime),
        "windows": n_windows,
        "windows_inferred": n_inferred,
        "windows_missing_audio": n_missing_audio,
        "windows_missing_image": n_missing_image,
        "detections": len(detections),
        "detections_per_label": per_label,
        "media_s": round(media_s, 3),
        "wall_s": round(wall_s, 3),
        "realtime_factor": round(media_s / wall_s, 2) if wall_s > 0 else None,
        "db": args.db,
        "run_id": run_id if store else None,
    }
    if segments is not None:
        rep = score_segments(preds, segments, method="majority")
        data["segment_accuracy"] = rep.accuracy
        data["segments"] = rep.n_segments
        data["segments_scored"] = rep.n_scored
        data["segments_correct"] = sum(r.correct for r in rep.segments)
    data["detection_list"] = detections
    lines = [
        f"{Path(info.path).name} ({role}) on {mask_credentials(args.source)}: {n_windows} windows "
        f"({n_inferred} inferred), {len(detections)} detections in {wall_s:.1f} s "
        f"({data['realtime_factor']}x real time over {media_s:.1f} s of stream)"
    ]
    if per_label:
        lines.append("  detections: " + ", ".join(f"{k} {v}" for k, v in sorted(per_label.items())))
    if segments is not None:
        lines.append(
            f"  segment accuracy: {data['segment_accuracy'] * 100:.1f} % "
            f"({data['segments_correct']}/{data['segments']} segments, {data['segments_scored']} with windows)"
        )
    if args.db:
        lines.append(f"  logged to {args.db}")
    return CommandResult(data, "\n".join(lines))


def cmd_run(args: argparse.Namespace) -> CommandResult:
    cfg = load_run_config(args)
    if args.config is not None and args.source is None:
        from edgeav.runtime.daemon import run_daemon

        if args.ground_truth:
            raise ConfigError("--ground-truth scores a replay: give --source too (the daemon does not score)")

        return run_daemon(
            cfg, bundle_override=args.bundle, db_override=args.db, realtime_override=True if args.realtime else None
        )
    if not args.bundle or not args.source:
        raise ConfigError("edgeav run needs --bundle and --source (a replay), or --config with a daemon: section")
    return replay(args, cfg)


# -- edgeav detections ------------------------------------------------------------------------------------------

_TABLE_COLS = ("utc", "label", "confidence", "audio", "image", "modalities", "id", "evidence", "clock")


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    from edgeav.runtime.postprocess import utc_iso

    body = [
        (
            r.get("end_utc") or utc_iso(r.get("utc_ns")) or "-",
            r["label"],
            _fmt(r["confidence"]),
            _fmt(r.get("audio_confidence")),
            _fmt(r.get("image_confidence")),
            "+".join(r["modalities"]) or "-",
            r["id"],
            "yes" if (r.get("audio_path") or r.get("image_path")) else "-",
            r.get("clock") or "-",
        )
        for r in rows
    ]  # clock: was the UTC time from an NTP-synced clock (schema 4; "-" before)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(_TABLE_COLS)]
    out = ["  ".join(h.ljust(w) for h, w in zip(_TABLE_COLS, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(out)


def cmd_detections(args: argparse.Namespace) -> CommandResult:
    from edgeav.runtime.store import COLUMNS, parse_iso_utc, query_detections
    from edgeav.runtime.store_query import REVIEW_COLUMNS

    since = parse_iso_utc(args.since) if args.since else None
    until = parse_iso_utc(args.until) if args.until else None
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until {args.until} is not after --since {args.since}")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence {args.min_confidence} is outside [0, 1]")
    rows = query_detections(args.db, since, until, args.label, args.min_confidence, args.limit)
    data = {"db": args.db, "count": len(rows), "detections": rows}
    if args.format == "json" or getattr(args, "json", False):
        return CommandResult(data, json.dumps(rows, indent=1))
    if args.format in ("raven", "audacity", "camtrapdp"):  # for the biodiversity tools (detection_exports)
        from edgeav.runtime.detection_exports import export_detections

        return export_detections(args, rows, data)
    if args.format == "csv":
        buf = io.StringIO()
        # the review of each detection (schema 5) after the log's columns: verdict, reason, time
        fields = [*COLUMNS, *REVIEW_COLUMNS]
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "modalities": "+".join(r["modalities"])})
        return CommandResult(data, buf.getvalue())
    return CommandResult(data, _table(rows) + f"\n({len(rows)} detection{'s' if len(rows) != 1 else ''})")


__all__ = ["cmd_run", "cmd_detections", "replay", "open_bundle", "pick_model_role"]
