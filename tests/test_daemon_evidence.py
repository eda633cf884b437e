"""Evidence clips (WAV via the stdlib, JPEG via GStreamer jpegenc), retention by age and by disk usage on a real
small file system (a tmpfs mounted for the test when we may mount; else a byte quota over the real files), and a
full disk that stops evidence but never detections."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
from _daemon_fixtures import small_fs, stored_detection

from edgeav.runtime.evidence import EvidenceStore, WindowContext, stitch_audio, write_wav
from edgeav.runtime.store import DetectionStore, query_detections
from edgeav.schema.daemon import EvidenceConfig

gi = pytest.importorskip("gi", reason="JPEG evidence uses GStreamer")


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
    ws = [WindowContext(s * 10**9 // 2, s * 10**9 // 2 + 10**9, sig[s * 500 : s * 500 + 1000], None) for s in range(5)]
    out = stitch_audio(ws, 500_000_000, 2_500_000_000, rate)
    assert np.array_equal(out, sig[500:2500])
    assert stitch_audio([WindowContext(0, 10**9, None, None)], 0, 10**9, rate) is None


def _evidence(root: Path, store: DetectionStore, free, **cfg) -> EvidenceStore:
    ecfg = EvidenceConfig(dir=str(root), **cfg)

    def rows():
        store.flush()
        return store.evidence_rows()

    return EvidenceStore(
        root, ecfg, 16000, rows, lambda i, r: store.update_evidence(i, None, None, f"deleted: {r}"), free_ratio=free
    ).start()


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
            store.add(
                stored_detection(label, i),
                detection_id=did,
                utc_ns=t0 + i * 10**9,
                audio_path=r.audio_path,
                image_path=r.image_path,
                evidence_note=r.note,
            )
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
        store.add(stored_detection("crow", 0), detection_id="first", audio_path=ok.audio_path, evidence_note=ok.note)
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
            store.add(stored_detection("crow", i), detection_id=f"n{i}", evidence_note=r.note)
        store.close()
        rows = query_detections(fs / "d.db", limit=None)
        assert len(rows) == 30 and ev.disk_low and ev.counts["skipped"] == 29
        assert Path(ok.audio_path).is_file()  # keep_per_class=1: the only crow set is kept
        ballast.unlink()
        r = ev.write("after", 1_780_000_000 * 10**9 + 99, "crow", audio, None)
        assert r.outcome == "partial" and r.audio_path and not ev.disk_low  # resumes when space is back
        ev.stop()


def _decode_mp4(path: Path) -> tuple[list[float], list[int], tuple[int, int]]:
    """(mean RGB level per frame, PTS ns per frame, (H, W)) of an MP4, decoded with GStreamer."""
    from edgeav.runtime.capture import _gst

    Gst = _gst()
    p = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    )
    p.get_by_name("src").set_property("location", str(path))
    sink = p.get_by_name("sink")
    p.set_state(Gst.State.PLAYING)
    means, pts, hw = [], [], (0, 0)
    try:
        while True:
            sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
            if sample is None:
                assert sink.get_property("eos"), "the decoder stalled before the end of the clip"
                break
            s = sample.get_caps().get_structure(0)
            h, w = s.get_value("height"), s.get_value("width")
            buf = sample.get_buffer()
            ok, info = buf.map(Gst.MapFlags.READ)
            stride = len(info.data) // h
            grey = np.frombuffer(bytes(info.data), np.uint8).reshape(h, stride)[:, : w * 3]  # (H, W * 3) RGB
            buf.unmap(info)
            means.append(float(grey.mean()))
            pts.append(int(buf.pts))
            hw = (h, w)
    finally:
        p.set_state(Gst.State.NULL)
    return means, pts, hw


@pytest.mark.gstreamer
def test_clip_mp4_of_the_window_frames_is_referenced_and_retained(tmp_path: Path) -> None:
    """evidence.clip: the T frames as an MP4 at the model's rate (decodes to T frames, a missing frame black as the
    model got it), linked from the detection's record; retention and the orphan sweep remove it with its set."""
    from edgeav.runtime.capture import _gst
    from edgeav.runtime.evidence import ClipEncoder

    if missing := [e for e in ClipEncoder.NEEDS if _gst().ElementFactory.find(e) is None]:
        pytest.skip(f"GStreamer lacks {missing} (gstreamer1.0-plugins-bad)")
    store = DetectionStore(tmp_path / "d.db")
    root = tmp_path / "evidence"
    ecfg = EvidenceConfig(dir=str(root), clip=True, min_free_percent=0.0, keep_per_class=0, max_age_days=1.0)

    def rows():
        store.flush()
        return store.evidence_rows()

    ev = EvidenceStore(
        root,
        ecfg,
        16000,
        rows,
        lambda i, r: store.update_evidence(i, None, None, f"deleted: {r}", clip_path=None),
        free_ratio=lambda p: 1.0,
        frame_rate_hz=25.0,
    ).start()
    frames = np.zeros((10, 32, 40, 3), np.uint8)  # (T, H, W, 3)
    for k in range(10):
        frames[k] = 40 + 20 * k  # grey ramp, frame by frame
    frames[6] = 0  # a missing frame: the aligner's zero frame
    t0 = 1_780_000_000 * 10**9
    r = ev.write("clip1", t0, "crow", np.zeros(16000, np.float32), frames[5], frames)
    assert r.outcome == "written" and r.clip_path and r.clip_path.endswith("clip1.mp4") and Path(r.clip_path).is_file()
    means, pts, hw = _decode_mp4(Path(r.clip_path))
    assert len(means) == 10 and hw == (32, 40)
    assert [p - pts[0] for p in pts] == [k * 40_000_000 for k in range(10)]  # 25 Hz
    want = [float(frames[k].mean()) for k in range(10)]
    assert max(abs(a - b) for a, b in zip(means, want)) < 12, (means, want)
    assert means[6] < 20  # the missing frame stays black, not its neighbour
    store.add(
        stored_detection("crow", 0),
        detection_id="clip1",
        utc_ns=t0,
        audio_path=r.audio_path,
        image_path=r.image_path,
        evidence_note=r.note,
        clip_path=r.clip_path,
    )
    store.flush()
    row = query_detections(tmp_path / "d.db", limit=None)[0]
    assert row["clip_path"] == r.clip_path and row["image_path"] and row["audio_path"]
    # no frames in the window: a note, no clip
    r2 = ev.write("clip2", t0 + 10**9, "crow", np.zeros(16000, np.float32), None, None)
    assert r2.clip_path is None and "no frames for a clip" in r2.note and r2.outcome == "partial"
    # an orphan (a crash between the file and the commit) goes, clip included
    orphan = Path(r.clip_path).with_name("orphan.mp4")
    orphan.write_bytes(b"x")
    assert ev.sweep_orphans(store.known_ids) >= 1 and not orphan.exists() and Path(r.clip_path).is_file()
    # retention by age deletes the whole set, the clip too, and unlinks it in the log
    n = ev.apply_retention(force=True, now_ns=t0 + 10 * 86_400 * 10**9)
    store.flush()
    assert n >= 1 and not Path(r.clip_path).exists() and not list(root.rglob("clip1.*"))
    row = query_detections(tmp_path / "d.db", limit=None)[0]
    assert row["clip_path"] is None and row["evidence_note"].startswith("deleted: age")
    ev.stop()
    store.close()


@pytest.mark.gstreamer
def test_daemon_writes_a_clip_per_detection_for_a_t_frame_model(tmp_path: Path) -> None:
    """`edgeav run` with a bundle whose model takes T = 8 frames at 25 Hz and `evidence.clip: true`: each detection's
    record links an MP4 of its window's 8 frames (the source's 10 fps file is delivered at the model's 25 Hz)."""
    import subprocess

    pytest.importorskip("onnx", reason="the test model is built with onnx.helper")
    pytest.importorskip("onnxruntime")
    from _daemon_fixtures import EDGEAV, daemon_tree, env, write_config, write_media
    from test_runtime_backends import tiny_onnx_model

    from edgeav.contract import AudioContract, ImageContract, InputContract
    from edgeav.export.bundle import write_bundle
    from edgeav.manifest import ArtifactManifest

    contract = InputContract(
        audio=AudioContract(window_s=0.4, n_fft=256, win_length=256, hop_length=64),
        image=ImageContract(height_px=32, width_px=32, n_frames=8, frame_rate_hz=25.0),
    )
    model = tiny_onnx_model(tmp_path / "t8.onnx", contract)
    manifest = ArtifactManifest(
        kind="onnx", labels=["quiet", "loud"], contract=contract, precision="fp32", metrics={"fp32": {"accuracy": 0.0}}
    )
    bundle = write_bundle(
        tmp_path / "bundle", {"model_fp32": model}, manifest, "cpu", {"edgeav": "test"}, tarball=False
    )
    media = write_media(tmp_path / "av.mkv", 2.0)
    # one pipeline replayed as fast as it goes: every window waits for its frames
    tree = daemon_tree(tmp_path, bundle, media.as_uri(), realtime=False, sensors="combined", evidence={"clip": True})
    tree["runtime"]["align"]["hop_s"] = 0.4
    tree["runtime"]["postprocess"]["threshold"] = 0.0  # every window a detection
    cfg = write_config(tmp_path / "d.yaml", tree)
    p = subprocess.run(
        [*EDGEAV, "run", "--config", str(cfg), "--json"], env=env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = query_detections(tmp_path / "det.db", limit=None)
    with_clip = [r for r in rows if r["clip_path"]]
    assert rows and with_clip == rows, [r["evidence_note"] for r in rows]
    assert all(Path(r["clip_path"]).name == f"{r['id']}.mp4" and r["image_path"] for r in with_clip)
    means, pts, hw = _decode_mp4(Path(with_clip[-1]["clip_path"]))
    assert len(means) == 8 and hw == (32, 32)
    assert [q - pts[0] for q in pts] == [k * 40_000_000 for k in range(8)]
