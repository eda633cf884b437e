"""`edgeav analyze`: an archive of files through a real bundle (random-weight model, 0.1 s windows) in worker
processes: tables, summary with a corrupt file, --resume, kill -9 + resume byte-identical, deployments."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("av")
pytest.importorskip("soundfile")

from _daemon_fixtures import make_bundle, scaled  # noqa: E402
from _data_fixtures import write_image, write_video, write_wav  # noqa: E402

from edgeav.cli import main  # noqa: E402
from edgeav.runtime.detection_formats import RAVEN_COLUMNS, read_raven  # noqa: E402

N_LABELS = 3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("analyze") / "bundle")


def _archive(root: Path) -> Path:
    write_wav(root / "site1" / "a.wav", 2.0, rate_hz=44_100)  # resampled to 16 kHz: 20 windows
    write_wav(root / "site1" / "sub" / "b.flac", 1.25, rate_hz=16_000, freq_hz=2000)  # 12 + a 0.05 s half window
    write_video(root / "clips" / "v.mp4", duration_s=1.0, fps=10)
    write_image(root / "photos" / "p.jpg", (200, 30, 30))
    (root / "site1" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    (root / "notes.txt").write_text("not media")
    return root


def _analyze(bundle: Path, inputs: list[Path], out: Path, *extra: str) -> int:
    args = ["analyze", "--bundle", str(bundle), *map(str, inputs), "--out", str(out), "--min-confidence", "0"]
    return main([*args, "--format", "csv,raven,audacity,json", *extra])


def _tree(out: Path) -> dict[str, bytes]:
    """Every output file but the journal (its lines come in the order files finished)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "journal.jsonl"
    }


def test_archive_tables_summary_and_corrupt_file(bundle, tmp_path, capsys):
    root = _archive(tmp_path / "in")
    out = tmp_path / "out"
    assert _analyze(bundle, [root], out, "--workers", "2", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["files"] == 5 and report["totals"]["files_failed"] == 1
    assert report["errors"][0]["path"].endswith("broken.wav") and "cannot" in report["errors"][0]["error"]
    rows = list(csv.DictReader((out / "detections.csv").open()))
    per_file: dict[str, list[dict]] = {}
    for r in rows:
        per_file.setdefault(Path(r["file"]).name, []).append(r)
    # every class of every window at --min-confidence 0: windows x classes rows
    assert len(per_file["a.wav"]) == 20 * N_LABELS
    assert len(per_file["b.flac"]) == 13 * N_LABELS  # the last 0.05 s window is half full: zero-padded, kept
    assert {r["modalities"] for r in per_file["a.wav"]} == {"audio"}
    assert {r["image_confidence"] for r in per_file["a.wav"]} == {""}
    assert {r["modalities"] for r in per_file["v.mp4"]} == {"audio+image"}
    assert len(per_file["v.mp4"]) == 10 * N_LABELS
    assert [r["modalities"] for r in per_file["p.jpg"]] == ["image"] * N_LABELS
    assert "broken.wav" not in per_file and "notes.txt" not in per_file
    assert per_file["a.wav"][3]["begin_s"] == "0.100" and per_file["a.wav"][3]["end_s"] == "0.200"
    # Raven table per audio/video file, BirdNET-Analyzer's columns, times in the file
    tables = sorted((out / "raven").iterdir())
    assert len(tables) == 3
    a_table = next(t for t in tables if t.name.startswith("a.wav"))
    assert a_table.read_text().splitlines()[0].split("\t") == list(RAVEN_COLUMNS)
    sel = read_raven(a_table)
    assert len(sel) == 20 * N_LABELS and sel[-1].end_s == pytest.approx(2.0) and sel[0].path.endswith("a.wav")
    assert len((out / "audacity").glob("a.wav*").__next__().read_text().splitlines()) == 20 * N_LABELS
    summary = json.loads((out / "summary.json").read_text())
    broken = next(f for f in summary["files"] if f["path"].endswith("broken.wav"))
    assert broken["status"] == "error" and broken["error"]
    assert sum(c["detections"] for c in summary["classes"]) == len(rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["model_sha256"]) == 64
    a_entry = next(f for f in manifest["files"] if f["path"].endswith("a.wav"))
    st = (root / "site1" / "a.wav").stat()
    assert (a_entry["size"], a_entry["mtime_ns"], len(a_entry["sha256"])) == (st.st_size, st.st_mtime_ns, 64)
    assert len(json.loads((out / "detections.json").read_text())) == len(rows)

    # the same OUT again: refused without --resume; with it, nothing redone, the same output
    before = _tree(out)
    capsys.readouterr()
    assert _analyze(bundle, [root], out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert _analyze(bundle, [root], out, "--resume", "--workers", "1", "--json") == 0
    run = json.loads(capsys.readouterr().out)["run"]
    assert run["files_skipped"] == 4 and run["files_done_now"] == 1  # only the failed file is tried again
    assert _tree(out) == before
    # a changed file is analyzed again
    write_wav(root / "site1" / "a.wav", 1.0, rate_hz=44_100)
    assert _analyze(bundle, [root], out, "--resume", "--workers", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["run"]["files_done_now"] == 2
    assert len([r for r in csv.DictReader((out / "detections.csv").open()) if r["file"].endswith("a.wav")]) == 30
    # other settings are refused on resume
    assert _analyze(bundle, [root], out, "--resume", "--min-confidence", "0.5") == 2


def test_kill_9_then_resume_is_byte_identical(bundle, tmp_path):
    root = tmp_path / "in"
    for i in range(10):
        write_wav(root / f"r{i:02d}.wav", 3.0 + i * 0.5, rate_hz=16_000, freq_hz=300 + 100 * i)
    full = tmp_path / "full"
    assert _analyze(bundle, [root], full, "--workers", "2") == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "edgeav", "analyze", "--bundle", str(bundle), str(root), "--out", str(killed)]
    cmd += ["--min-confidence", "0", "--format", "csv,raven,audacity,json", "--workers", "2"]
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).randint(1, 8)  # files journaled before the kill
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = killed / "journal.jsonl"
    deadline = time.monotonic() + scaled(180)
    while not (journal.is_file() and len(journal.read_text().splitlines()) >= kill_after):
        assert proc.poll() is None, f"the run ended before the kill (seed {seed}): {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {kill_after} files journaled (seed {seed})"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-file
    proc.wait(timeout=scaled(30))
    proc.stderr.close()
    assert not (killed / "summary.json").exists()
    assert _analyze(bundle, [root], killed, "--resume", "--workers", "2") == 0
    assert _tree(killed) == _tree(full), f"seed {seed}, killed after {kill_after} files"
    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip().endswith("}")]
    assert len({e["key"] for e in entries}) == 10


def test_deployment_pairs_photos_and_sound_by_time(bundle, tmp_path):
    from PIL import Image

    dep = tmp_path / "meadow"
    # recorder: 20240501_053000.WAV = 05:30:00 UTC, 3 s; second file 05:40:00, 2 s
    write_wav(dep / "audio" / "20240501_053000.WAV", 3.0, rate_hz=48_000)
    write_wav(dep / "audio" / "20240501_054000.WAV", 2.0, rate_hz=48_000)

    def photo(name: str, stamp: str) -> None:
        (dep / "photos").mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        exif[0x0132] = stamp  # DateTime (camera clock, local time UTC+2, 2 s fast)
        Image.new("RGB", (48, 40), (10, 200, 10)).save(dep / "photos" / name, exif=exif)

    photo("IMG_0001.JPG", "2024:05:01 07:30:03")  # true 05:30:01 -> in the first recording, 1 s in
    photo("IMG_0002.JPG", "2024:05:01 08:00:00")  # true 06:00:00 -> no recording: sound masked
    (dep / "deployment.yaml").write_text(
        "pair_within_s: 0.3\n"
        "devices:\n"
        "  cam: {kind: camera, path: photos, clock_offset_s: -2, utc_offset_h: 2}\n"
        "  rec: {kind: recorder, path: audio}\n"
    )
    out = tmp_path / "out"
    assert _analyze(bundle, [tmp_path], out, "--workers", "1") == 0
    rows = list(csv.DictReader((out / "detections.csv").open()))
    first = [r for r in rows if r["file"].endswith("20240501_053000.WAV")]
    assert len(first) == 30 * N_LABELS
    paired = [r for r in first if r["paired_file"]]
    # windows whose centre is within 0.3 s of 05:30:01: [0.7, 0.8) .. [1.2, 1.3) -> centres 0.75 .. 1.25
    assert sorted({r["begin_s"] for r in paired}) == ["0.700", "0.800", "0.900", "1.000", "1.100", "1.200"]
    assert {r["modalities"] for r in paired} == {"audio+image"} and paired[0]["paired_file"].endswith("IMG_0001.JPG")
    assert {r["modalities"] for r in first if not r["paired_file"]} == {"audio"}
    assert first[0]["utc"] == "2024-05-01T05:30:00.000Z" and first[0]["deployment"] == "meadow"
    p1 = [r for r in rows if r["file"].endswith("IMG_0001.JPG")]
    assert {r["modalities"] for r in p1} == {"audio+image"} and p1[0]["paired_file"].endswith("053000.WAV")
    assert p1[0]["paired_offset_s"] == "0.950" and p1[0]["utc"] == "2024-05-01T05:30:00.950Z"
    p2 = [r for r in rows if r["file"].endswith("IMG_0002.JPG")]
    assert {r["modalities"] for r in p2} == {"image"} and not p2[0]["paired_file"]
    assert not [r for r in rows if r["file"].endswith("054000.WAV") and r["paired_file"]]


def test_bad_arguments_are_one_line(bundle, tmp_path, capsys):
    assert main(["analyze", "--bundle", str(bundle), str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert (
        main(["analyze", "--bundle", str(bundle), str(tmp_path), "--out", str(tmp_path / "o"), "--format", "xls"]) == 2
    )
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and "no such file" in errs[0] and "xls" in errs[1]


def test_nearest_photo_is_the_nearest_with_ties_to_the_smallest_path() -> None:
    """The bisection gives what a scan of every photo gives: nearest time, then smallest path (bursts share an EXIF
    second), for windows before, between, on and after the photos."""
    import random

    from edgeav.runtime.analyze.worker import nearest_photo

    rng = random.Random(7)
    photos = sorted((rng.randrange(0, 50) * 10**9, f"p{k:03d}.jpg") for k in range(120))  # many shared seconds
    times = [t for t, _ in photos]
    for centre in [-(10**9), *range(0, 52 * 10**9, 250_000_000), 5 * 10**9 + 500_000_000]:
        assert nearest_photo(photos, times, centre) == min(photos, key=lambda p: (abs(p[0] - centre), p[1]))
