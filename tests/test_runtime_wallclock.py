"""Wall-clock steps (an NTP sync hours after boot on a unit without an RTC): detection UTCs follow the corrected
clock from the next window on, each step is a logged and counted `clock_step` event, every detection says whether
its clock was synced, and retention ages evidence by uptime since it was written - never deleting what was
recorded before the step as "too old"."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

try:  # the daemon test builds its bundle with torch: import it before GStreamer is (torch's ONNX export aborts in a
    import torch  # noqa: F401  process where GStreamer's threads already run)
except ImportError:
    pass

from edgeav.runtime.postprocess import Detection
from edgeav.runtime.store import DetectionStore, query_detections, schema_version
from edgeav.runtime.wallclock import (
    SYNCED,
    UNSYNCED,
    OperatingClock,
    SystemTime,
    WallClock,
    kernel_sync_state,
    op_clock_path,
)
from edgeav.schema.daemon import EvidenceConfig

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS


class SteppedClock:
    """An injected time source: the real monotonic clock plus `mono_extra_ns` (to jump days ahead), a wall clock
    that is monotonic + `wall_offset_ns` (set it to step), a settable sync state and boot id."""

    def __init__(self, wall_offset_ns: int, state: str = UNSYNCED, boot: str = "boot-a") -> None:
        self.wall_offset_ns = wall_offset_ns
        self.state = state
        self.boot = boot
        self.mono_extra_ns = 0

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self.mono_extra_ns

    def time_ns(self) -> int:
        return self.monotonic_ns() + self.wall_offset_ns

    def sync_state(self) -> str:
        return self.state

    def boot_id(self) -> str:
        return self.boot


def _steps(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "clock_step"]


def test_kernel_sync_state_reads_adjtimex() -> None:
    assert kernel_sync_state() in (SYNCED, UNSYNCED)
    assert SystemTime(lambda: SYNCED).sync_state() == SYNCED  # the reader is injectable
    w = WallClock()
    assert abs(w.utc_ns_for(time.monotonic_ns()) - time.time_ns()) < 50_000_000  # the real clocks agree


@pytest.mark.parametrize("step_ns", [+5 * HOUR_NS, -3 * HOUR_NS])
def test_detection_utc_follows_a_stepped_wall_clock(step_ns: int, caplog) -> None:
    clk = SteppedClock(wall_offset_ns=1_600_000_000 * 10**9)  # a unit booted with a clock years behind
    w = WallClock(clk)
    caplog.set_level(logging.INFO, logger="edgeav.runtime.wallclock")
    capture = clk.monotonic_ns()  # a window captured now ...
    w.sample()
    before = w.utc_ns_for(capture)
    assert abs(before - clk.time_ns()) < 10**9 and w.state == UNSYNCED and w.steps == 0 and not _steps(caplog)
    clk.wall_offset_ns += step_ns  # NTP steps the clock
    clk.state = SYNCED
    w.sample()  # ... the next window re-reads it
    after = w.utc_ns_for(capture)
    assert abs((after - before) - step_ns) < 10**8  # the same capture instant, now on the corrected clock
    assert abs(w.utc_ns_for(clk.monotonic_ns()) - clk.time_ns()) < 10**8
    assert w.state == SYNCED and w.steps == 1
    (ev,) = _steps(caplog)
    assert abs(ev["step_ns"] - step_ns) < 10**8 and ev["clock_before"] == UNSYNCED and ev["clock"] == SYNCED
    # a slew (NTP's small corrections) is no step
    clk.wall_offset_ns += 300_000_000
    w.sample()
    assert w.steps == 1 and len(_steps(caplog)) == 1


def _det(label: str, i: int) -> Detection:
    return Detection(
        label=label,
        class_index=0,
        start_ns=i * 10**9,
        end_ns=i * 10**9 + 10**9,
        start_utc=None,
        end_utc=None,
        confidence=0.9,
        audio_confidence=0.9,
        image_confidence=0.9,
        modalities=("audio", "image"),
        model_sha256=None,
        hits=1,
    )


def _setup(tmp: Path, clk: SteppedClock, max_age_days: float = 90.0):
    from edgeav.runtime.evidence import EvidenceStore

    store = DetectionStore(tmp / "d.db")
    root = tmp / "evidence"
    op = OperatingClock(op_clock_path(tmp / "d.db"), clk)

    def rows():
        store.flush()
        return store.evidence_rows()

    ev = EvidenceStore(
        root,
        EvidenceConfig(dir=str(root), min_free_percent=0.0, max_age_days=max_age_days),
        16000,
        rows,
        lambda i, r: store.update_evidence(i, None, None, f"deleted: {r}"),
        free_ratio=lambda p: 1.0,
        op_clock=op,
    ).start()
    return store, ev, op


def _record(store, ev, op, w: WallClock, n: int, first: int) -> list[str]:
    ids = []
    for i in range(first, first + n):
        w.sample()
        utc = w.utc_ns_for(w.source.monotonic_ns())
        did = f"d{i:03d}"
        r = ev.write(did, utc, "crow", np.zeros(1600, np.float32), np.full((8, 8, 3), 100, np.uint8))
        store.add(
            _det("crow", i),
            detection_id=did,
            utc_ns=utc,
            audio_path=r.audio_path,
            image_path=r.image_path,
            evidence_note=r.note,
            clock=w.state,
            written_op_ns=op.now_ns(),
        )
        ids.append(did)
    store.flush()
    return ids


@pytest.mark.parametrize("step_ns", [+200 * DAY_NS, -200 * DAY_NS])
def test_retention_keeps_evidence_recorded_before_a_step(tmp_path: Path, step_ns: int, caplog) -> None:
    # fake-hwclock: the unit boots with the clock of its last shutdown, 200 days ago (or 200 days ahead)
    clk = SteppedClock(wall_offset_ns=1_780_000_000 * 10**9 - step_ns)
    w = WallClock(clk)
    store, ev, op = _setup(tmp_path, clk)
    pre = _record(store, ev, op, w, 3, 0)
    caplog.set_level(logging.INFO, logger="edgeav.runtime.wallclock")
    clk.wall_offset_ns += step_ns  # NTP syncs: the clock jumps by 200 days
    clk.state = SYNCED
    post = _record(store, ev, op, w, 3, 3)
    assert w.steps == 1 and len(_steps(caplog)) == 1
    assert ev.apply_retention(force=True) == 0  # 90-day age limit: everything is minutes old
    store.flush()
    rows = {r["id"]: r for r in query_detections(tmp_path / "d.db", limit=None)}
    for did in pre + post:
        assert Path(rows[did]["audio_path"]).is_file() and Path(rows[did]["image_path"]).is_file()
    assert [rows[d]["clock"] for d in pre + post] == [UNSYNCED] * 3 + [SYNCED] * 3
    gap = rows[post[0]]["utc_ns"] - rows[pre[-1]]["utc_ns"]
    assert abs(gap - step_ns) < HOUR_NS  # the UTC times follow the stepped clock
    # the age limit still works: 91 days of uptime later, all of it goes
    clk.mono_extra_ns += 91 * DAY_NS
    assert ev.apply_retention(force=True) == 6
    store.flush()
    assert not list((tmp_path / "evidence").rglob("*.wav"))
    store.close()
    ev.stop()


def test_operating_clock_survives_daemon_restart_and_reboot(tmp_path: Path) -> None:
    clk = SteppedClock(wall_offset_ns=0, boot="boot-a")
    state = op_clock_path(tmp_path / "d.db")
    op = OperatingClock(state, clk)
    written = op.now_ns()
    clk.mono_extra_ns += 10 * DAY_NS
    op.persist()
    # the daemon restarts in the same boot: op time continues exactly
    op2 = OperatingClock(state, clk)
    assert abs(op2.now_ns() - written - 10 * DAY_NS) < 10**9
    # a reboot: the monotonic clock restarts near 0, the wall clock is anything; op time resumes where it was
    clk.boot, clk.mono_extra_ns = "boot-b", -time.monotonic_ns() + 5 * 10**9
    clk.wall_offset_ns = -40 * 365 * DAY_NS
    op3 = OperatingClock(state, clk)
    age = op3.now_ns() - written
    assert 10 * DAY_NS - 10**9 < age < 10 * DAY_NS + 10**9  # the 10 days of uptime, not the downtime, not 1970
    clk.mono_extra_ns += 2 * DAY_NS
    assert abs(op3.now_ns() - written - 12 * DAY_NS) < 2 * 10**9
    # a torn state file: ages restart (kept longer, never deleted early), said in the log
    state.write_text("{")
    assert OperatingClock(state, clk).now_ns() < 10**10


def test_schema_4_migrates_and_legacy_rows_age_only_on_a_synced_clock(tmp_path: Path) -> None:
    import sqlite3

    from edgeav.runtime.store import MIGRATIONS
    from edgeav.runtime.store_schema import SCHEMA_VERSION

    con = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    for v in (1, 2, 3):
        for stmt in MIGRATIONS[v]:
            con.execute(stmt)
    con.execute("PRAGMA user_version=3")
    old = tmp_path / "old.wav"
    old.write_bytes(b"RIFF")
    con.execute(
        "INSERT INTO detections (id, label, class_index, start_ns, end_ns, utc_ns, confidence, modalities, "
        "hits, audio_path) VALUES ('old', 'crow', 0, 0, 1, ?, 0.9, 'audio', 1, ?)",
        (time.time_ns() - 100 * DAY_NS, str(old)),
    )
    con.close()
    clk = SteppedClock(wall_offset_ns=time.time_ns() - time.monotonic_ns(), state=UNSYNCED)
    store, ev, op = _setup(tmp_path, clk)
    assert schema_version(store.con) == SCHEMA_VERSION and store.migrated_from == 3  # 4 (clock) and what came after
    assert ev.apply_retention(force=True) == 0 and old.is_file()  # unsynced: a 100-day-old UTC may be a wrong clock
    clk.state = SYNCED
    assert ev.apply_retention(force=True) == 1 and not old.exists()
    store.close()
    ev.stop()


def test_daemon_detections_follow_a_clock_step(tmp_path: Path, caplog) -> None:
    """The daemon on a live test source with an injected clock that NTP steps 6 h forward mid-run."""
    pytest.importorskip("torch", reason="the test bundle's model is built with torch")
    pytest.importorskip("gi", reason="the daemon captures through GStreamer")
    from _daemon_fixtures import daemon_tree, make_bundle

    from edgeav.runtime.daemon import Daemon
    from edgeav.schema import load_config

    bundle = make_bundle(tmp_path / "bundle")
    tree = daemon_tree(tmp_path, bundle, "test://?live=1&pattern=ball&wave=ticks")
    import yaml

    (tmp_path / "d.yaml").write_text(yaml.safe_dump(tree))
    cfg = load_config(tmp_path / "d.yaml")
    clk = SteppedClock(wall_offset_ns=time.time_ns() - time.monotonic_ns() - 2 * DAY_NS)  # booted 2 days behind
    d = Daemon(cfg, time_source=clk)
    caplog.set_level(logging.INFO)
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while d.detections < 5 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        assert d.detections >= 5, "no detections before the step"
        clk.wall_offset_ns += 6 * HOUR_NS
        clk.state = SYNCED
        n = d.detections
        while d.detections < n + 5 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        assert d.detections >= n + 5, "no detections after the step"
    finally:
        d.stop_event.set()
        t.join(30)
    rows = query_detections(tmp_path / "det.db", limit=None)
    real = time.time_ns()
    pre = [r for r in rows if r["clock"] == UNSYNCED]
    post = [r for r in rows if r["clock"] == SYNCED]
    assert pre and post
    assert all(abs(r["utc_ns"] - (real - 2 * DAY_NS)) < HOUR_NS for r in pre)
    assert all(abs(r["utc_ns"] - (real - 2 * DAY_NS + 6 * HOUR_NS)) < HOUR_NS for r in post)
    assert d.wallclock.steps == 1 and len(_steps(caplog)) == 1
    assert all(r["written_op_ns"] is not None for r in rows)
    assert op_clock_path(tmp_path / "det.db").is_file()  # the op clock's state is beside the log, not among evidence
    assert not [f for f in (tmp_path / "evidence").rglob("*") if f.is_file() and f.suffix not in (".wav", ".jpg")]
