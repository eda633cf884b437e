"""`edgeav detections --format raven|audacity|camtrapdp` on a real detection log: Raven's selection table with
BirdNET-Analyzer's columns, Audacity labels, and a Camera Trap Data Package of the photos."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.runtime.detection_formats import RAVEN_COLUMNS
from edgeav.runtime.postprocess import Detection
from edgeav.runtime.store import DetectionStore

NS = 1_000_000_000
T0 = 1_777_600_000 * NS  # 2026-05-01


def _det(label: str, start_s: float, conf: float, mods=("audio", "image")) -> Detection:
    return Detection(
        label, 0, int(start_s * NS), int((start_s + 3) * NS), None, None, conf, conf, conf, mods, "ab" * 32, 1
    )


@pytest.fixture
def log(tmp_path: Path) -> Path:
    db = tmp_path / "det.db"
    photos = tmp_path / "evidence"
    photos.mkdir()
    st = DetectionStore(db)
    st.record_run("run1", "bundle", "file:///data/dawn.flac", "ab" * 32)
    for i, (label, t, conf, photo) in enumerate(
        [
            ("Turdus merula_Eurasian Blackbird", 0.0, 0.91, True),
            ("Parus major_Great Tit", 3.0, 0.62, True),
            ("Turdus merula_Eurasian Blackbird", 9.0, 0.55, False),
        ]
    ):
        img = None
        if photo:
            img = photos / f"d{i}.jpg"
            img.write_bytes(b"\xff\xd8\xff\xd9")
        st.add(
            _det(label, t, conf, ("audio", "image") if photo else ("audio",)),
            detection_id=f"d{i}",
            utc_ns=T0 + int(t * NS),
            source="file:///data/dawn.flac",
            run_id="run1",
            image_path=str(img) if img else None,
        )
    st.close()
    return db


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeav", "detections", *args], capture_output=True, text=True)


def test_raven_and_audacity(log: Path) -> None:
    r = _cli("--db", str(log), "--format", "raven")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == list(RAVEN_COLUMNS) and len(lines) == 4  # BirdNET's (test_detection_formats)
    first = lines[1].split("\t")
    assert first == [
        "1",
        "Spectrogram 1",
        "1",
        "0.0",
        "3.0",
        "0",
        "8000",
        "Eurasian Blackbird",
        "Turdus merula_Eurasian Blackbird",
        "0.9100",
        "/data/dawn.flac",
        "0.0",
    ]
    r = _cli("--db", str(log), "--format", "audacity")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "3.0\t6.0\tParus major, Great Tit\t0.6200"


def test_camtrapdp_package(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    r = _cli("--db", str(log), "--format", "camtrapdp", "--out", str(out), "--latitude", "52.1", "--longitude", "5.2")
    assert r.returncode == 0, r.stderr
    assert "2 photo(s)" in r.stdout and "1 detection(s) without a photo" in r.stdout
    pkg = json.loads((out / "datapackage.json").read_text())
    assert pkg["profile"].endswith("/camtrap-dp/1.0/camtrap-dp-profile.json")
    assert [x["name"] for x in pkg["resources"]] == ["deployments", "media", "observations"]
    assert pkg["spatial"]["coordinates"] == [5.2, 52.1] and pkg["temporal"]["start"] == "2026-05-01"
    assert {t["scientificName"] for t in pkg["taxonomic"]} == {"Turdus merula", "Parus major"}
    read = lambda n: list(csv.DictReader(open(out / f"{n}.csv")))  # noqa: E731
    deps, media, obs = read("deployments"), read("media"), read("observations")
    assert len(deps) == 1 and deps[0]["deploymentID"] == "run1" and deps[0]["latitude"] == "52.1"
    assert deps[0]["deploymentStart"] == "2026-05-01T01:46:40Z" and deps[0]["deploymentEnd"] == "2026-05-01T01:46:43Z"
    assert [m["mediaID"] for m in media] == ["d0", "d1"]
    for m in media:  # each photo is reachable from the package
        assert (out / m["filePath"]).resolve() == (tmp_path / "evidence" / f"{m['mediaID']}.jpg").resolve()
        assert m["fileMediatype"] == "image/jpeg" and m["filePublic"] == "false" and m["timestamp"]
    assert [o["scientificName"] for o in obs] == ["Turdus merula", "Parus major"]
    assert obs[0]["classificationMethod"] == "machine" and obs[0]["classificationProbability"] == "0.91"
    assert all(o["observationLevel"] == "media" and o["observationType"] == "animal" for o in obs)
    r = _cli("--db", str(log), "--format", "camtrapdp", "--out", str(tmp_path / "p2"))
    assert r.returncode == 2 and "--latitude" in r.stderr and len(r.stderr.strip().splitlines()) == 1
