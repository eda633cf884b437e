"""`edgeav run --bundle B --source URI`: replay through engine.run_stream, SQLite log, summary, segment accuracy,
and `edgeav detections` over the log; a tampered bundle or a bad source is one line and exit 2."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("onnxruntime")
gi = pytest.importorskip("gi", reason="replay needs PyGObject")

from _daemon_fixtures import LABELS, make_bundle, write_media  # noqa: E402

from edgeav.cli import main  # noqa: E402

pytestmark = pytest.mark.gstreamer

SETS = [
    "--set",
    "runtime.postprocess.threshold=0.34",
    "--set",
    "runtime.postprocess.min_gap_s=0",
    "--set",
    "runtime.source.fps=10",
    "--set",
    "runtime.align.hop_s=0.25",
]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("run")
    return make_bundle(d / "bundle"), write_media(d / "av.mkv", 6.0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() installs a stderr handler on the root logger; put the root logger back after each test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    data = json.loads(out) if rc == 0 and "--json" in argv else None
    return rc, data, err


def test_replay_logs_detections_and_summary(media, tmp_path: Path, capsys) -> None:
    bundle, av = media
    db = tmp_path / "det.db"
    rc, data, _ = _run(
        capsys, ["run", "--bundle", str(bundle), "--source", av.as_uri(), "--db", str(db), "--json", *SETS]
    )
    assert rc == 0
    # 6 s at a 0.25 s hop with 0.1 s windows: the first window ends at 0.25 s, the last at 6.0 s
    assert 22 <= data["windows"] <= 24 and data["windows_inferred"] == data["windows"]
    assert data["media_s"] == pytest.approx(6.0, abs=0.3) and data["realtime_factor"] > 1.0
    assert data["detections"] >= 1 and data["model_role"] == "model_fp32" and len(data["model_sha256"]) == 64
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT id, label, confidence, modalities, model_sha256 FROM detections ORDER BY utc_ns"
    ).fetchall()
    assert len(rows) == data["detections"]
    assert {r[0] for r in rows} == {d["id"] for d in data["detection_list"]}
    assert all(r[1] in LABELS and r[2] >= 0.34 and r[4] == data["model_sha256"] for r in rows)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    # the text summary names the figures a person looks for
    rc, _, _ = _run(capsys, ["run", "--bundle", str(bundle), "--source", av.as_uri(), *SETS])
    assert rc == 0


def test_ground_truth_segment_accuracy(media, tmp_path: Path, capsys) -> None:
    bundle, av = media
    # first pass: which label the model gives each 2 s segment (the test signal is the same all along)
    rc, data, _ = _run(capsys, ["run", "--bundle", str(bundle), "--source", av.as_uri(), "--json", *SETS])
    assert rc == 0

    def gt(path: Path, labels: list[str]) -> Path:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start_s", "end_s", "label"])
            for i, lb in enumerate(labels):
                w.writerow([2 * i, 2 * i + 2, lb])
        return path

    # the majority label of all the windows must be the majority of at least one segment; score it both ways
    top = (
        max(data["detections_per_label"], key=data["detections_per_label"].get)
        if data["detections_per_label"]
        else LABELS[0]
    )
    runs = {}
    for name, labels in (("all_top", [top] * 3), ("all_other", [lb for lb in LABELS if lb != top][:1] * 3)):
        rc, d, _ = _run(
            capsys,
            [
                "run",
                "--bundle",
                str(bundle),
                "--source",
                av.as_uri(),
                "--json",
                "--ground-truth",
                str(gt(tmp_path / f"{name}.csv", labels)),
                *SETS,
            ],
        )
        assert rc == 0 and d["segments"] == 3 and d["segments_scored"] == 3
        runs[name] = d
    # each segment gets exactly one predicted label, so the two label sets' correct counts cannot both be 3
    assert runs["all_top"]["segments_correct"] >= 1
    assert runs["all_top"]["segments_correct"] + runs["all_other"]["segments_correct"] <= 3
    assert runs["all_top"]["segment_accuracy"] == pytest.approx(runs["all_top"]["segments_correct"] / 3)


def test_tampered_bundle_exits_2_with_one_line(media, tmp_path: Path, capsys) -> None:
    bundle, av = media
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    with open(bad / "model_fp32.onnx", "ab") as f:
        f.write(b"\0")
    rc, _, err = _run(capsys, ["run", "--bundle", str(bad), "--source", av.as_uri(), "--db", str(tmp_path / "x.db")])
    assert rc == 2
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "sha256" in lines[0] and "model_fp32.onnx" in lines[0]
    assert not (tmp_path / "x.db").exists()  # nothing started


def test_bad_source_and_missing_args_exit_2(media, capsys) -> None:
    bundle, _ = media
    rc, _, err = _run(capsys, ["run", "--bundle", str(bundle), "--source", "ftp://x/y"])
    assert rc == 2 and "unknown source scheme" in err
    rc, _, err = _run(capsys, ["run", "--bundle", str(bundle)])
    assert rc == 2 and "--source" in err


def test_detections_query_formats(media, tmp_path: Path, capsys) -> None:
    bundle, av = media
    db = tmp_path / "det.db"
    rc, data, _ = _run(
        capsys, ["run", "--bundle", str(bundle), "--source", av.as_uri(), "--db", str(db), "--json", *SETS]
    )
    assert rc == 0 and data["detections"] >= 1
    rc, _, _ = main(["detections", "--db", str(db), "--format", "json"]), None, None
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == data["detections"] and all(isinstance(r["modalities"], list) for r in rows)
    label = rows[0]["label"]
    assert main(["detections", "--db", str(db), "--format", "csv", "--label", label]) == 0
    got = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(got) == sum(r["label"] == label for r in rows) and all(g["label"] == label for g in got)
    assert main(["detections", "--db", str(db), "--min-confidence", "1.0"]) == 0
    assert "(0 detections)" in capsys.readouterr().out
    assert main(["detections", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["utc", "label", "confidence"] and rows[0]["id"] in table
    # time range: everything is after 2000 and before 2100; nothing is after 2100
    assert (
        main(
            [
                "detections",
                "--db",
                str(db),
                "--since",
                "2000-01-01",
                "--until",
                "2100-01-01T00:00:00Z",
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == len(rows)
    assert main(["detections", "--db", str(db), "--since", "2100-01-01", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["detections", "--db", str(db), "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err
    assert main(["detections", "--db", str(tmp_path / "none.db")]) != 0
