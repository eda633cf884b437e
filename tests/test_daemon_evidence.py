"""Evidence clips (WAV via the stdlib, JPEG via GStreamer jpegenc), retention by age and by disk usage on a real
small file system (a tmpfs mounted for the test when we may mount; else a byte quota over the real files), and a
full disk that stops evidence but never detections."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from _daemon_fixtures import small_fs

from edgeav.runtime.evidence import EvidenceStore, WindowContext, stitch_audio, write_wav
from edgeav.runtime.postprocess import Detection
from edgeav.runtime.store import DetectionStore, query_detections
from edgeav.schema.daemon import EvidenceConfig

gi = pytest.importorskip("gi", reason="JPEG evidence uses GStreamer")


def _det(label: str, i: int) -> Detection:
    return Detection(label, ["crow", "finch"].index(label), i * 10**9, i * 10**9 + 10**9, None, None, 0.9, 0.8, 0.7,
                     ("audio", "image"), None, 1)


def test_wav_and_jpeg_are_real_files(tmp_path: Path) -> None:
    from edgeav.runtime.evidence import JpegEncoder

    x = (0.5 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 16000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 8000)
        back = np.frombuffer(w.readframes(8000), "<i2") / 32767.0
    assert np.max(np.abs(back - x)) < 1e-4
    Image = pytest.importorskip("PIL.Image", reason="the test decodes the JPEG with Pillow")
    enc = JpegEncoder(90)
    for h, w_ in ((32, 32), (22, 30)):  # 30 px rows are padded to 4 bytes inside GStreamer
        rgb = np.zeros((h, w_, 3), np.uint8)
        rgb[..., 0] = 200
        rgb[:, : w_ // 2, 2] = 255
        data = enc.encode(rgb)
        assert data[:2] == b"\xff\xd8"
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert img.shape == (h, w_, 3)
        assert abs(int(img[..., 0].mean()) - 200) < 12 and img[:, :4, 2].mean() > 200 and img[:, -4:, 2].mean() < 50
    enc.close()


def test_stitch_audio_from_overlapping_windows() -> None:
    rate = 1000
    sig = np.arange(3000, dtype=np.float32)  # 3 s at 1 kHz
    ws = [WindowContext(s * 10**9 // 2, s * 10**9 // 2 + 10**9, sig[s * 500: s * 500 + 1000], None) for s in range(5)]
    out = stitch_audio(ws, 500_000_000, 2_500_000_000, rate)
    assert np.array_equal(out, sig[500:2500])
    assert stitch_audio([WindowContext(0, 10**9, None, None)], 0, 10**9, rate) is None


def _evidence(root: Path, store: DetectionStore, free, **cfg) -> EvidenceStore:
    ecfg = EvidenceConfig(dir=str(root), **cfg)

    def rows():
        store.flush()
        return store.evidence_rows()

    return EvidenceStore(root, ecfg, 16000, rows, lambda i, r: store.update_evidence(i, None, None, f"deleted: {r}"),
                         free_ratio=free).start()


def test_retention_by_disk_keeps_newest_per_class_and_by_age(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    with small_fs(fs, 512) as free:
        store = DetectionStore(tmp_path / "d.db")
        ev = _evidence(fs / "evidence", store, free, keep_per_class=2, min_free_percent=20.0, max_age_days=None)
        audio = np.zeros(16000, np.float32)  # 1 s = 32 kB per WAV; 20 of them do not fit in 80 % of 512 kB
        frame = np.full((32, 32, 3), 128, np.uint8)
        t0 = 1_780_000_000 * 10**9
        ids = []
        for i in range(20):
            label = "crow" if i % 2 == 0 else "finch"
            did = f"d{i:02d}"
            r = ev.write(did, t0 + i * 10**9, label, audio, frame)
            store.add(_det(label, i), detection_id=did, utc_ns=t0 + i * 10**9, audio_path=r.audio_path,
                      image_path=r.image_path, evidence_note=r.note)
            store.flush()
            ids.append(did)
        store.flush()
        assert free(fs / "evidence") >= 0.2 - 0.07  # at most one set over the floor at any time
        rows = {r["id"]: r for r in query_detections(tmp_path / "d.db", limit=None)}
        assert len(rows) == 20  # every detection logged
        kept = [i for i in ids if rows[i]["audio_path"] and Path(rows[i]["audio_path"]).is_file()]
        deleted = [i for i in ids if rows[i]["evidence_note"] and rows[i]["evidence_note"].startswith("deleted: disk")]
        assert deleted and kept and ev.counts["deleted_disk"] == len(deleted)
        assert max(int(d[1:]) for d in deleted) < min(int(k[1:]) for k in kept)  # oldest went first
        for d in deleted:
            assert not list((fs / "evidence").rglob(f"{d}.*"))
        # age: everything older than 1 day at a clock 10 days later goes, whatever the class
        ev.cfg = EvidenceConfig(dir=str(fs), keep_per_class=2, max_age_days=1.0)
        n = ev.apply_retention(force=True, now_ns=t0 + 10 * 86_400 * 10**9)
        store.flush()
        assert n == len(kept) and not list((fs / "evidence").rglob("*.wav"))
        store.close()
        ev.stop()


def test_full_disk_stops_evidence_never_detections(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    with small_fs(fs, 8192) as free:
        store = DetectionStore(fs / "d.db")  # the log on the same small file system
        ev = _evidence(fs / "evidence", store, free, keep_per_class=1, min_free_percent=20.0)
        audio = np.zeros(4000, np.float32)
        ok = ev.write("first", 1_780_000_000 * 10**9, "crow", audio, None)
        assert ok.outcome == "partial" and ok.audio_path and "no frame" in ok.note
        store.add(_det("crow", 0), detection_id="first", audio_path=ok.audio_path, evidence_note=ok.note)
        store.flush()
        # something else fills the disk to 85 %: evidence must stop, the log must go on
        ballast = fs / "ballast"
        need = int((0.85 - (1 - free(fs))) * 8192 * 1024)
        if need > 0:
            ballast.write_bytes(b"\0" * need)
        assert free(fs) < 0.2
        for i in range(1, 30):
            r = ev.write(f"n{i}", 1_780_000_000 * 10**9 + i, "crow", audio, np.zeros((32, 32, 3), np.uint8))
            assert r.outcome == "skipped" and r.audio_path is None and "free" in r.note
            store.add(_det("crow", i), detection_id=f"n{i}", evidence_note=r.note)
        store.close()
        rows = query_detections(fs / "d.db", limit=None)
        assert len(rows) == 30 and ev.disk_low and ev.counts["skipped"] == 29
        assert Path(ok.audio_path).is_file()  # keep_per_class=1: the only crow set is kept
        ballast.unlink()
        r = ev.write("after", 1_780_000_000 * 10**9 + 99, "crow", audio, None)
        assert r.outcome == "partial" and r.audio_path and not ev.disk_low  # resumes when space is back
        ev.stop()
