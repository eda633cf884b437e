"""Evidence encoding off the main loop, and one bounded queue per sensor (issue 13, part 6).

The daemon runs in-process on a live GStreamer test source (camera and microphone as two pipelines, 10 frames/s and
10 audio buffers/s, every 0.1 s window a detection). A slow encoder (an EvidenceStore subclass whose write takes
1.5 s) must not slow inference: windows keep coming and no sensor drops anything, while the evidence queue skips
sets it cannot take (counted, noted in the row). A stalled main loop fills each sensor's own queue: the camera's
drops frames, the microphone's keeps every buffer, and the per-sensor counters in /health say so.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")

from _daemon_fixtures import daemon_tree, make_bundle, scaled, write_config  # noqa: E402

from edgeav.runtime.store import query_detections  # noqa: E402

pytestmark = pytest.mark.gstreamer

LIVE = "test://?live=1&pattern=ball&wave=ticks"
ENCODE_S = 1.5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("thread") / "bundle")


def _run(daemon, until, deadline_s: float = 60.0) -> dict:
    """Run `daemon` on a thread until `until(daemon)` is true (or the deadline), stop it; returns its result data."""
    out: dict = {}

    def target() -> None:
        out["result"] = daemon.run()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    end = time.monotonic() + scaled(deadline_s)
    while time.monotonic() < end and t.is_alive() and not until(daemon):
        time.sleep(0.05)
    assert until(daemon), "the daemon did not get there within the deadline"
    daemon.health_at_stop = daemon.health()[1]
    daemon.stop_event.set()
    t.join(scaled(30))
    assert not t.is_alive()
    return out["result"].data


def _daemon(tmp_path: Path, bundle: Path, cls=None, **daemon):
    from edgeav.runtime.daemon import Daemon
    from edgeav.schema import load_config

    tree = daemon_tree(tmp_path, bundle, LIVE, sensors="split", **daemon)
    tree["runtime"]["postprocess"]["threshold"] = 0.0  # every window a detection
    return (cls or Daemon)(load_config(write_config(tmp_path / "d.yaml", tree)))


def test_slow_evidence_encoder_does_not_stall_inference(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    import wave

    import edgeav.runtime.evidence as evidence_mod
    from edgeav.runtime.daemon import Daemon

    class SlowEvidence(evidence_mod.EvidenceStore):
        def write_files(self, *a, **k):
            time.sleep(encode_s)  # an encoder that takes its time (a JPEG wait may last 2 s)
            return super().write_files(*a, **k)

    # the encoder's delay and the gap it must not cause both stretch with the load: on a loaded machine the main
    # loop's own gaps grow, and a fixed 1.5 s encode would no longer stand out from them
    encode_s = scaled(ENCODE_S)
    monkeypatch.setattr(evidence_mod, "EvidenceStore", SlowEvidence)
    stamps: list[float] = []

    class Timed(Daemon):
        def _process(self, w, *a):
            super()._process(w, *a)
            if w.audio is not None:
                stamps.append(time.monotonic())

    d = _daemon(tmp_path, bundle, Timed)
    # 40 audio windows, and one set through the slow encoder (on a loaded machine that takes longer than 40 windows)
    data = _run(d, lambda dm: len(stamps) >= 40 and dm.evidence is not None and dm.evidence.counts["written"] >= 1)
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first window may wait for the slower sensor
    # before the fix every detection held the loop for the encode: a gap of >= ENCODE_S between audio windows
    assert max(gaps) < encode_s * 0.6, f"an audio window waited {max(gaps):.2f} s (encode {encode_s:.2f} s)"
    q = data["queues"]
    assert q["microphone"]["dropped"] == 0 and q["camera"]["dropped"] == 0, q
    assert q["evidence"]["dropped"] > 0, q  # the encoder cannot keep up: sets are skipped, counted
    rows = query_detections(tmp_path / "det.db", limit=None)
    assert len(rows) >= 40
    skipped = [r for r in rows if (r["evidence_note"] or "").startswith("skipped: evidence queue full")]
    written = [r for r in rows if r["audio_path"] and r["evidence_note"] is None]
    assert skipped and written, [r["evidence_note"] for r in rows]
    for r in written:  # what the thread wrote is linked and whole
        with wave.open(r["audio_path"]) as w:
            assert w.getnframes() > 0
        assert Path(r["image_path"]).read_bytes()[:2] == b"\xff\xd8"
    print(
        f"slow encoder ({encode_s:.2f} s a set): {len(stamps)} audio windows, longest gap {max(gaps):.3f} s; "
        f"sensor drops {q['camera']['dropped']}/{q['microphone']['dropped']}, evidence skipped "
        f"{q['evidence']['dropped']}, written {len(written)}"
    )


def test_stalled_main_loop_drops_frames_never_audio(bundle: Path, tmp_path: Path) -> None:
    from edgeav.runtime.daemon import Daemon

    stall = threading.Event()

    class Stalling(Daemon):
        def _process(self, w, *a):
            super()._process(w, *a)
            if self.windows == 10 and not stall.is_set():
                stall.set()
                time.sleep(4.0)  # the main loop stalls: 40 frames and 40 audio buffers arrive meanwhile

    d = _daemon(
        tmp_path,
        bundle,
        Stalling,
        evidence={"enabled": False},
        queues={"camera_max_items": 8, "microphone_max_items": 128},
    )
    data = _run(d, lambda dm: stall.is_set() and dm.windows >= 30)
    q = data["queues"]
    assert q["camera"]["dropped"] >= 10, q  # frames pushed out of the camera's own queue
    assert q["microphone"]["dropped"] == 0, q  # and never audio
    assert d.health_at_stop["queues"]["camera"]["dropped"] >= 10  # /health shows it per sensor
    print(f"4 s stall: camera dropped {q['camera']['dropped']}, microphone {q['microphone']['dropped']}")
