"""What `edgeav analyze` leaves in OUT once every file is done, built from the per-file results in key order (so a
resumed run writes the same bytes as an uninterrupted one):

    detections.csv / detections.json     one row per detection (file, times, class, fused and per-modality scores)
    raven/<key>.selection.table.txt      a Raven selection table per audio or video file (BirdNET-Analyzer's columns)
    audacity/<key>.labels.txt            Audacity labels per audio or video file
    summary.json                         per file (status, error, media seconds, windows, detections) and per class
    manifest.json                        the run: bundle sha256, settings, each file's size, mtime, sha256
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edgeav.atomic import atomic_write_bytes
from edgeav.runtime.detection_formats import AUDACITY_SUFFIX, RAVEN_SUFFIX, DetectionRow, write_audacity, write_raven

FORMATS = ("csv", "raven", "audacity", "json")
CSV_COLUMNS = (
    "file",
    "kind",
    "deployment",
    "begin_s",
    "end_s",
    "utc",
    "label",
    "confidence",
    "audio_confidence",
    "image_confidence",
    "modalities",
    "paired_file",
    "paired_offset_s",
)


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _csv_row(res: dict[str, Any], r: dict[str, Any]) -> list[str]:
    return [
        res["path"],
        res["kind"],
        res.get("deployment") or "",
        _num(r["begin_s"], 3),
        _num(r["end_s"], 3),
        r.get("utc") or "",
        r["label"],
        _num(r["confidence"]),
        _num(r["audio_confidence"]),
        _num(r["image_confidence"]),
        r["modalities"],
        r.get("paired") or "",
        _num(r.get("paired_offset_s"), 3),
    ]


def table_rows(res: dict[str, Any], low_hz: float, high_hz: float) -> list[DetectionRow]:
    return [
        DetectionRow(r["begin_s"], r["end_s"], r["label"], r["confidence"], res["path"], low_hz, high_hz)
        for r in res["rows"]
    ]


def write_outputs(
    out: Path, results: Iterable[dict[str, Any]], formats: Sequence[str], low_hz: float, high_hz: float
) -> dict[str, Any]:
    """Write the tables and summary.json from `results` (in key order); returns the summary."""
    csv_buf = io.StringIO()
    writer = csv.writer(csv_buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    json_rows: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    classes: dict[str, dict[str, Any]] = {}
    for res in results:
        n = len(res["rows"])
        files.append(
            {
                "path": res["path"],
                "kind": res["kind"],
                "deployment": res.get("deployment"),
                "status": res["status"],
                "error": res["error"],
                "media_s": res["media_s"],
                "windows": res["windows"],
                "detections": n,
            }
        )
        seen: set[str] = set()
        for r in res["rows"]:
            c = classes.setdefault(r["label"], {"label": r["label"], "detections": 0, "files": 0, "max_confidence": 0})
            c["detections"] += 1
            c["max_confidence"] = max(c["max_confidence"], r["confidence"])
            if r["label"] not in seen:
                seen.add(r["label"])
                c["files"] += 1
            if "csv" in formats:
                writer.writerow(_csv_row(res, r))
            if "json" in formats:
                json_rows.append({"file": res["path"], "kind": res["kind"], "deployment": res.get("deployment"), **r})
        if res["kind"] in ("audio", "video") and res["status"] == "ok":
            rows = table_rows(res, low_hz, high_hz)
            if "raven" in formats:
                write_raven(rows, out / "raven" / f"{res['key']}{RAVEN_SUFFIX}")
            if "audacity" in formats:
                write_audacity(rows, out / "audacity" / f"{res['key']}{AUDACITY_SUFFIX}")
    if "csv" in formats:
        atomic_write_bytes(out / "detections.csv", csv_buf.getvalue().encode("utf-8"))
    if "json" in formats:
        atomic_write_bytes(out / "detections.json", (json.dumps(json_rows, indent=1, sort_keys=True) + "\n").encode())
    errors = [{"path": f["path"], "error": f["error"]} for f in files if f["status"] != "ok"]
    summary = {
        "files": files,
        "classes": sorted(classes.values(), key=lambda c: (-c["detections"], c["label"])),
        "errors": errors,
        "totals": {
            "files": len(files),
            "files_ok": len(files) - len(errors),
            "files_failed": len(errors),
            "media_s": round(sum(f["media_s"] for f in files), 3),
            "windows": sum(f["windows"] for f in files),
            "detections": sum(f["detections"] for f in files),
        },
    }
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode())
    return summary


__all__ = ["CSV_COLUMNS", "FORMATS", "table_rows", "write_outputs"]
