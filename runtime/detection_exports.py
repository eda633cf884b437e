"""`edgeav detections --format raven|audacity|camtrapdp`: the detection log for the biodiversity tools.

- raven / audacity: the writers of edgeav.runtime.detection_formats (BirdNET-Analyzer's layouts). Times are seconds
  on the run's timeline (the media time of a file source, the time since the daemon started for a live one), Begin
  Path the run's source (a file:// source as its path), High Freq the Nyquist frequency given (`--high-freq-hz`).
- camtrapdp: a Camera Trap Data Package 1.0 (TDWG) of the photos: `deployments.csv` (one deployment per daemon run,
  at `--latitude/--longitude`), `media.csv` (each detection's evidence JPEG, its path relative to the package),
  `observations.csv` (one machine observation per photo: the label as scientific name, the confidence as
  classification probability) and `datapackage.json` (the profile, project, spatial, temporal and taxonomic
  coverage). Detections without a photo are left out (counted).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeav.atomic import atomic_write
from edgeav.errors import ConfigError
from edgeav.runtime.detection_formats import DetectionRow, birdnet_names, write_audacity, write_raven

CAMTRAP_BASE = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0"
DEPLOYMENT_FIELDS = (
    "deploymentID locationID locationName latitude longitude coordinateUncertainty deploymentStart deploymentEnd "
    "setupBy cameraID cameraModel cameraDelay cameraHeight cameraDepth cameraTilt cameraHeading detectionDistance "
    "timestampIssues baitUse featureType habitat deploymentGroups deploymentTags deploymentComments"
).split()
MEDIA_FIELDS = (
    "mediaID deploymentID captureMethod timestamp filePath filePublic fileName fileMediatype exifData favorite "
    "mediaComments"
).split()
OBSERVATION_FIELDS = (
    "observationID deploymentID mediaID eventID eventStart eventEnd observationLevel observationType cameraSetupType "
    "scientificName count lifeStage sex behavior individualID individualPositionRadius individualPositionAngle "
    "individualSpeed bboxX bboxY bboxWidth bboxHeight classificationMethod classifiedBy classificationTimestamp "
    "classificationProbability observationTags observationComments"
).split()


def _source_path(source: str | None) -> str:
    return source[len("file://") :] if source and source.startswith("file://") else (source or "")


def table_rows(rows: Sequence[dict[str, Any]], high_freq_hz: float):
    return [
        DetectionRow(
            begin_s=r["start_ns"] / 1e9,
            end_s=r["end_ns"] / 1e9,
            label=r["label"],
            confidence=float(r["confidence"]),
            path=_source_path(r.get("source")),
            high_freq_hz=high_freq_hz,
        )
        for r in rows
    ]


def raven_text(rows: Sequence[dict[str, Any]], high_freq_hz: float = 8000.0) -> str:
    buf = io.StringIO()
    write_raven(table_rows(rows, high_freq_hz), buf)
    return buf.getvalue()


def audacity_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    write_audacity(table_rows(rows, 0.0), buf)
    return buf.getvalue()


def _iso(utc_ns: int) -> str:
    t = _dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, tz=_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv(fields: Sequence[str], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue().encode("utf-8")


def write_camtrapdp(
    rows: Sequence[dict[str, Any]],
    out: str | Path,
    latitude: float | None,
    longitude: float | None,
    title: str = "edgeav detections",
    contributor: str = "edgeav",
) -> dict[str, Any]:
    """Write the package into folder `out`; returns counts (deployments, media, observations, skipped)."""
    if latitude is None or longitude is None:
        raise ConfigError("--format camtrapdp needs --latitude and --longitude of the unit (WGS84 degrees)")
    if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
        raise ConfigError(f"--latitude {latitude} / --longitude {longitude} are not WGS84 degrees")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not an empty folder (a Camtrap DP package is written into a new one)")
    out.mkdir(parents=True, exist_ok=True)
    photos = [r for r in rows if r.get("image_path")]
    deployments: dict[str, dict[str, Any]] = {}
    media, observations = [], []
    for r in photos:
        dep = r.get("run_id") or "unknown-run"
        d = deployments.setdefault(
            dep,
            {
                "deploymentID": dep,
                "locationName": _source_path(r.get("source")) or None,
                "latitude": latitude,
                "longitude": longitude,
                "deploymentStart": r["utc_ns"],
                "deploymentEnd": r["utc_ns"],
                "cameraModel": "edgeav",
                "deploymentComments": f"edgeav run {dep}",
            },
        )
        d["deploymentStart"] = min(d["deploymentStart"], r["utc_ns"])
        d["deploymentEnd"] = max(d["deploymentEnd"], r["utc_ns"])
        img = Path(r["image_path"])
        media.append(
            {
                "mediaID": r["id"],
                "deploymentID": dep,
                "captureMethod": "activityDetection",
                "timestamp": _iso(r["utc_ns"]),
                "filePath": os.path.relpath(img.resolve(), out.resolve()),  # relative to the package
                "filePublic": "false",
                "fileName": img.name,
                "fileMediatype": "image/jpeg",
            }
        )
        observations.append(
            {
                "observationID": r["id"],
                "deploymentID": dep,
                "mediaID": r["id"],
                "eventID": r["id"],
                "eventStart": _iso(r["utc_ns"]),
                "eventEnd": _iso(r["utc_ns"]),
                "observationLevel": "media",
                "observationType": "animal",
                "scientificName": (birdnet_names(r["label"]) or (r["label"],))[0],
                "classificationMethod": "machine",
                "classifiedBy": f"edgeav model {(r.get('model_sha256') or '')[:12]}".strip(),
                "classificationTimestamp": _iso(r["utc_ns"]),
                "classificationProbability": round(float(r["confidence"]), 4),
            }
        )
    for d in deployments.values():
        d["deploymentStart"], d["deploymentEnd"] = _iso(d["deploymentStart"]), _iso(d["deploymentEnd"])
    files = {
        "deployments.csv": _csv(DEPLOYMENT_FIELDS, list(deployments.values())),
        "media.csv": _csv(MEDIA_FIELDS, media),
        "observations.csv": _csv(OBSERVATION_FIELDS, observations),
    }
    times = sorted(m["timestamp"] for m in media)
    package = {
        "profile": f"{CAMTRAP_BASE}/camtrap-dp-profile.json",
        "name": "edgeav-detections",
        "title": title,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "contributors": [{"title": contributor, "role": "contact"}],
        "project": {
            "title": title,
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media"],
        },
        "spatial": {"type": "Point", "coordinates": [longitude, latitude]},
        "temporal": {"start": times[0][:10] if times else None, "end": times[-1][:10] if times else None},
        "taxonomic": [{"scientificName": s} for s in sorted({o["scientificName"] for o in observations})],
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{CAMTRAP_BASE}/{name}-table-schema.json",
            }
            for name in ("deployments", "media", "observations")
        ],
    }
    files["datapackage.json"] = (json.dumps(package, indent=1) + "\n").encode("utf-8")
    for name, data in files.items():
        atomic_write(out / name, lambda f, d=data: f.write(d), durable=False)
    return {
        "out": str(out),
        "deployments": len(deployments),
        "media": len(media),
        "observations": len(observations),
        "skipped_without_photo": len(rows) - len(photos),
    }


def export_detections(args: argparse.Namespace, rows: Sequence[dict[str, Any]], data: dict[str, Any]):
    """`edgeav detections --format raven|audacity|camtrapdp` (args of the CLI): text to stdout or `--out`."""
    from edgeav.result import CommandResult

    if args.format == "camtrapdp":
        if not args.out:
            raise ConfigError("--format camtrapdp writes a folder: give --out DIR")
        info = write_camtrapdp(rows, args.out, args.latitude, args.longitude)
        text = (
            f"Camtrap DP in {info['out']}: {info['deployments']} deployment(s), {info['media']} photo(s), "
            f"{info['observations']} observation(s); {info['skipped_without_photo']} detection(s) without a photo left out"
        )
        return CommandResult({**data, "camtrapdp": info}, text)
    text = raven_text(rows, args.high_freq_hz) if args.format == "raven" else audacity_text(rows)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text.encode("utf-8")), durable=False)
        return CommandResult({**data, "out": args.out}, f"{len(rows)} detection(s) as {args.format} -> {args.out}")
    return CommandResult(data, text.rstrip("\n"))


__all__ = ["export_detections", "raven_text", "audacity_text", "write_camtrapdp", "table_rows"]
