"""The privacy filter: Silero VAD (its ONNX from the silero-vad package, run without torch) hears GRID speech and
not the bird recordings, and the daemon on a GRID clip logs the same detections without their audio (drop_audio)
or leaves the speech ones out (drop_detection)."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.schema.integrations import PrivacyConfig

NS = 1_000_000_000


def _filter():
    from edgeav.runtime.privacy import PrivacyFilter

    try:
        return PrivacyFilter(PrivacyConfig(mode="drop_audio"), keep_s=600.0)
    except Exception as e:  # a missing model must fail under EDGEAV_REQUIRE_ALL (the "No module named" form)
        if "silero-vad" in str(e):
            pytest.skip(f"No module named 'silero_vad' ({e})")
        raise


def test_vad_runs_where_torch_cannot_be_imported() -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] == 'torch': raise ModuleNotFoundError(n)\n"
        "sys.meta_path.insert(0, B())\n"
        "import numpy as np\n"
        "from edgeav.runtime.privacy import PrivacyFilter\n"
        "from edgeav.schema.integrations import PrivacyConfig\n"
        "f = PrivacyFilter(PrivacyConfig(mode='drop_audio'))\n"
        "f.window(np.zeros(16000, np.float32), 16000, 0)\n"
        "assert not f.is_speech(0, 10**9) and 'torch' not in sys.modules\n"
        "print('ok', len(f.vad.frames))\n"
    )
    _filter()  # skips (or fails under EDGEAV_REQUIRE_ALL) without the model
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["ok", "31"]  # 1 s = 31 whole 32 ms frames


def test_overlapping_windows_are_heard_once() -> None:
    import numpy as np

    from edgeav.runtime.privacy import FRAME_NS

    f = _filter()
    audio = np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32)  # 1 s windows, 0.5 s hop
    assert f.vad.feed(audio, 16000, 0) == 31
    assert f.vad.feed(audio, 16000, NS // 2) == 15  # only the 0.5 s not heard before
    assert f.vad.feed(audio, 16000, NS // 5) == 0  # all of it heard already
    starts = [t for t, _ in f.vad.frames]
    assert len(starts) == 1500 * 16 // 512 and starts == [i * FRAME_NS for i in range(len(starts))]  # 1.5 s once
    assert f.vad.feed(audio, 16000, 10 * NS) == 31 and f.vad.frames[-31][0] == 10 * NS  # a gap: heard afresh


@pytest.mark.data
def test_speech_caught_birds_kept(shared_data: Path) -> None:
    from edgeav.train.data.media import decode_audio

    f = _filter()
    rows = list(csv.DictReader(open(shared_data / "grid" / "manifest.csv")))[::20]  # 8 clips, 2 per word
    caught = 0
    for r in rows:
        f.vad.reset()
        f.vad.frames.clear()  # each recording starts at 0 on the timeline
        f.window(decode_audio(shared_data / "grid" / r["clip"], 16000), 16000, 0)
        caught += f.is_speech(0, 3 * NS)
    birds = list(csv.DictReader(open(shared_data / "birds" / "recordings.csv")))[:6]
    windows = dropped = 0
    for r in birds:
        a = decode_audio(shared_data / "birds" / r["file"], 16000)
        f.vad.reset()
        f.vad.frames.clear()  # each recording starts at 0 on the timeline
        f.window(a, 16000, 0)
        for s in range(0, a.size // 16000 - 2, 3):
            windows += 1
            dropped += f.is_speech(s * NS, (s + 3) * NS)
    assert caught == len(rows) == 8
    assert windows >= 50 and dropped <= 0.05 * windows, f"{dropped}/{windows} bird windows taken for speech"


@pytest.mark.data
@pytest.mark.gstreamer
def test_daemon_modes_on_a_spoken_clip(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the test bundle's model is built with torch")
    pytest.importorskip("gi", reason="the daemon captures through GStreamer")
    _filter()
    from _daemon_fixtures import EDGEAV, daemon_tree, env, make_bundle, scaled, write_config

    bundle = make_bundle(tmp_path / "bundle")
    clip = shared_data / "grid" / "clips" / "bin" / "bbas2p.mpg"  # silence to 0.61 s, words to 2.5 s, silence
    runs = {}
    for mode in ("off", "drop_audio", "drop_detection"):
        d = tmp_path / mode
        d.mkdir()
        tree = daemon_tree(d, bundle, f"file://{clip}", realtime=False, sensors="combined", privacy={"mode": mode})
        cfg = write_config(d / "d.yaml", tree)
        r = subprocess.run(
            [*EDGEAV, "run", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=scaled(120),
        )
        assert r.returncode == 0, r.stderr[-2000:]
        con = sqlite3.connect(d / "det.db")
        rows = con.execute(
            "SELECT start_ns, label, audio_path, image_path FROM detections ORDER BY start_ns"
        ).fetchall()
        con.close()
        runs[mode] = (json.loads(r.stdout), rows)
    off, audio, drop = (runs[m][1] for m in ("off", "drop_audio", "drop_detection"))
    heard = {r[0] for r in off if r[2]}  # detections with audio (the clip's first and last windows may have none)
    assert len(heard) >= 10
    assert [r[:2] for r in audio] == [r[:2] for r in off]  # drop_audio: the same detections are logged ...
    muted = [r for r in audio if r[0] in heard and r[2] is None]
    assert len(muted) >= len(heard) // 3 and all(r[3] for r in muted)  # ... the spoken ones without audio, with a frame
    assert runs["drop_audio"][0]["privacy"]["drop_audio"] == len(muted)
    assert len(muted) < len(heard)  # the silence before the first word keeps its audio
    # drop_detection: the detections with speech are not logged at all, the others are
    assert {r[0] for r in drop} == {r[0] for r in off} - {r[0] for r in muted}
