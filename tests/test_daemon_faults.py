"""Fault tests of the field daemon, with real processes, files and pipelines:

- kill -9 at 20 random moments of a replay (restarted on the same log each time): `PRAGMA integrity_check` is ok
  and every detection the daemon reported committed is in the database; orphaned evidence is swept;
- the video file is truncated and removed mid-run: audio-only detections continue, the camera's restarts are
  logged (with backoff), and when the file is back both modalities return;
- (test_daemon_mqtt.py) the broker stops for a while: every detection arrives after it returns, none twice.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")

from _daemon_fixtures import (  # noqa: E402
    EDGEAV,
    daemon_tree,
    env,
    make_bundle,
    scaled,
    start_daemon,
    wait_until,
    write_config,
    write_media,
)

pytestmark = pytest.mark.gstreamer

KILL_TRIALS = int(os.environ.get("EDGEAV_KILL_TRIALS", "20"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faults")
    return {
        "bundle": make_bundle(d / "bundle"),
        "av": write_media(d / "av.mkv", 6.0),
        "video": write_media(d / "v.mkv", 30.0, audio=False),
        "audio": write_media(d / "a.mkv", 30.0, video=False),
    }


def json_logs(path: Path) -> list[dict]:
    out = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            pass  # a line cut by kill -9
    return out


def db_count(db: Path, where: str, *args: object) -> int:
    """COUNT(*) of the daemon's live log's detections WHERE ...; 0 while the log or its table does not exist yet."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=10)
        try:
            return con.execute(f"SELECT COUNT(*) FROM detections WHERE {where}", args).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_kill_9_at_random_moments_loses_nothing_committed(media, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "d.yaml",
        daemon_tree(tmp_path, media["bundle"], media["av"].as_uri(), realtime=False, loop=True, sensors="combined"),
    )
    rng = random.Random(int(os.environ.get("EDGEAV_KILL_SEED", "7")))
    reported: set[str] = set()
    per_trial = []
    db = tmp_path / "det.db"
    for trial in range(KILL_TRIALS):
        err_path = tmp_path / f"err{trial}.log"
        with open(err_path, "w") as err:
            p = subprocess.Popen(
                [*EDGEAV, "--log-json", "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=err, env=env()
            )
            # a random moment of the replay: 0 to 1.5 s after its first commit (every 5th trial: at a random
            # moment of start-up instead - imports, migration, orphan sweep, first commit - which lasts longer on
            # a loaded machine, so the moment is stretched with it)
            if trial % 5 == 4:
                time.sleep(scaled(rng.uniform(0.2, 2.0)))
            else:
                wait_until(
                    f"trial {trial}: the first commit",
                    lambda e=err_path: '"event": "committed"' in e.read_text(errors="replace"),
                    60,
                    proc=p,
                    step_s=0.02,
                )
                time.sleep(rng.uniform(0.0, 1.5))
            p.send_signal(signal.SIGKILL)
            p.wait(scaled(10))
        ids = [i for r in json_logs(err_path) if r.get("event") == "committed" for i in r["ids"]]
        reported.update(ids)
        per_trial.append(len(ids))
        if db.exists():
            con = sqlite3.connect(db)
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"trial {trial}"
            in_db = {r[0] for r in con.execute("SELECT id FROM detections")}
            con.close()
            missing = reported - in_db
            assert not missing, f"trial {trial}: {len(missing)} committed detection(s) lost"
    assert sum(1 for n in per_trial if n) >= KILL_TRIALS - KILL_TRIALS // 5, per_trial  # kills hit a running replay
    # one clean run afterwards: orphaned evidence (written, never committed) is swept, the rest stays linked
    err_path = tmp_path / "err_clean.log"
    with open(err_path, "w") as err_f:
        p = subprocess.Popen(
            [*EDGEAV, "--log-json", "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=err_f, env=env()
        )
        try:  # the sweep runs at start; stop once the run commits (it sees the swept folder)
            wait_until(
                "the clean run's first commit",
                lambda: '"event": "committed"' in err_path.read_text(errors="replace"),
                60,
                proc=p,
            )
            p.send_signal(signal.SIGTERM)
            p.wait(scaled(10))
        finally:
            if p.poll() is None:
                p.kill()
    err = err_path.read_text(errors="replace")
    assert p.returncode == 0, err[-2000:]
    con = sqlite3.connect(db)
    in_db = {r[0] for r in con.execute("SELECT id FROM detections")}
    linked = {Path(r[0]).name for r in con.execute("SELECT audio_path FROM detections WHERE audio_path IS NOT NULL")}
    con.close()
    files = [f for f in (tmp_path / "evidence").rglob("*") if f.is_file()]
    assert files and all(f.stem in in_db for f in files)
    assert {f.name for f in files if f.suffix == ".wav"} == linked
    print(
        f"kill -9: {KILL_TRIALS} trials, {len(reported)} detections reported committed, 0 lost, "
        f"{len(in_db)} in the log, integrity ok"
    )


def test_video_source_removed_mid_run_audio_continues(media, tmp_path: Path) -> None:
    video = tmp_path / "camera.mkv"
    shutil.copyfile(media["video"], video)
    tree = daemon_tree(
        tmp_path,
        media["bundle"],
        video.as_uri(),
        realtime=True,
        loop=True,
        supervisor={"backoff_initial_s": 0.3, "backoff_max_s": 1.0, "restart_budget": 100},
    )
    tree["runtime"]["source"]["audio_uri"] = media["audio"].as_uri()
    tree["runtime"]["source"]["stall_timeout_s"] = 1.0
    cfg = write_config(tmp_path / "d.yaml", tree)
    err_path = tmp_path / "err.log"
    p = start_daemon(cfg, err_path)
    db = tmp_path / "det.db"
    both = "modalities = 'audio,image' AND utc_ns > ?"
    try:  # each step waits for what the daemon does (logged, committed), not for a time
        wait_until("5 detections from both sensors", lambda: db_count(db, both, 0) >= 5, 30, proc=p)
        t_break = time.time()
        os.truncate(video, 0)  # the camera's stream breaks ...
        video.unlink()  # ... and its source is gone

        def camera_restarts() -> list[dict]:
            return [r for r in json_logs(err_path) if r.get("event") == "sensor_restart"]

        # the camera plays what it had read ahead, is declared down and restarted (twice: to see the backoff)
        wait_until("2 camera restarts", lambda: len(camera_restarts()) >= 2, 30, proc=p)
        restarts = camera_restarts()
        from edgeav.runtime.store import parse_iso_utc

        t_down_ns = parse_iso_utc(restarts[0]["ts"])  # its last frame was captured before this
        audio_only = "modalities = 'audio' AND utc_ns > ?"
        wait_until(
            "25 audio-only detections while the camera is gone",  # 10 of them 1 s before it returns
            lambda: db_count(db, audio_only, t_down_ns + 10**9) >= 25,
            30,
            proc=p,
        )
        shutil.copyfile(media["video"], video)  # back again
        t_back = time.time()
        wait_until(
            "a detection from both sensors after the camera's return",
            lambda: db_count(db, both, int(t_back * 1e9)) >= 1,
            30,
            proc=p,
        )
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=scaled(10))
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    summary = json.loads(out)
    recs = json_logs(err_path)
    restarts = [r for r in recs if r.get("event") == "sensor_restart"]
    assert restarts and all(r["sensor"] == "camera" for r in restarts)
    assert any("not found" in r["reason"] for r in restarts)
    delays = [r["delay_s"] for r in restarts]
    assert delays[0] <= 0.3 * 1.2 + 1e-6 and max(delays) > delays[0]  # backoff grows
    ups = [r for r in recs if r.get("event") == "sensor_up" and r["sensor"] == "camera"]
    assert len(ups) >= 2  # came back
    assert summary["restarts"].get("camera", 0) == len(restarts) and "microphone" not in summary["restarts"]
    con = sqlite3.connect(tmp_path / "det.db")
    rows = con.execute("SELECT utc_ns, modalities, image_path, audio_path FROM detections ORDER BY utc_ns").fetchall()
    con.close()
    t_break_ns, t_back_ns = int(t_break * 1e9), int(t_back * 1e9)
    assert t_break_ns < t_down_ns < t_back_ns  # declared down because of the break
    # from the camera's restart (the read-ahead ran out) to its return, less 1 s at each end: a window takes a frame
    # up to 0.5 s before or after it, and the first frames after the return come before the camera says it is up
    during = [r for r in rows if t_down_ns + 1e9 < r[0] < t_back_ns - 1e9]
    after = [r for r in rows if r[0] > t_back_ns]
    before = [r for r in rows if r[0] < t_break_ns]
    assert before and all(r[1] == "audio,image" for r in before)
    odd = [(round((r[0] - t_down_ns) / 1e9, 2), r[1]) for r in during if r[1] != "audio"]  # s after down
    assert len(during) >= 10 and not odd, (odd, [(r["ts"], r["reason"]) for r in restarts])  # audio-only went on
    assert all(r[2] is None and r[3] for r in during)  # their evidence: audio, no frame
    assert after and any(r[1] == "audio,image" for r in after)
    # windows never stopped: about one per hop over the whole run
    assert summary["windows_by_modality"].get("audio", 0) >= 10
    assert not any("has no audio stream" in r["msg"] for r in recs)  # the camera file needs none: audio_uri gives it
    print(
        f"video removed: {len(restarts)} camera restarts logged, {len(during)} audio-only detections during the "
        f"outage, {summary['detections']} detections in all"
    )


def test_file_without_sound_runs_image_only_and_says_so_once(media, tmp_path: Path) -> None:
    tree = daemon_tree(tmp_path, media["bundle"], media["video"].as_uri(), realtime=False, sensors="combined")
    cfg = write_config(tmp_path / "d.yaml", tree)
    r = subprocess.run(
        [*EDGEAV, "--log-json", "run", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=scaled(120),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    said = [ln for ln in r.stderr.splitlines() if "has no audio stream" in ln]
    assert len(said) == 1 and json.loads(said[0])["level"] == "warning"
    assert summary["detections"] > 0 and set(summary["detections_by_modality"]) == {"image"}


def test_restart_budget_spent_exits_non_zero_for_systemd(media, tmp_path: Path) -> None:
    tree = daemon_tree(
        tmp_path,
        media["bundle"],
        (tmp_path / "no_camera.mkv").as_uri(),
        realtime=True,
        supervisor={"backoff_initial_s": 0.2, "backoff_max_s": 0.4, "restart_budget": 3, "restart_window_s": 60},
    )
    tree["runtime"]["source"]["audio_uri"] = media["audio"].as_uri()
    tree["runtime"]["source"]["streams"] = ["video", "audio"]  # say what the camera gives: nothing to probe
    cfg = write_config(tmp_path / "d.yaml", tree)
    t0 = time.monotonic()
    r = subprocess.run(
        [*EDGEAV, "-q", "run", "--config", str(cfg)], capture_output=True, text=True, env=env(), timeout=scaled(60)
    )
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeav run: error")]
    assert len(lines) == 1 and "camera sensor" in lines[0] and "more than 3 restarts within 60 s" in lines[0]
    assert "not found" in lines[0] and time.monotonic() - t0 < scaled(30)  # gave up: no endless retrying
    con = sqlite3.connect(tmp_path / "det.db")
    mods = {r[0] for r in con.execute("SELECT DISTINCT modalities FROM detections")}
    con.close()
    assert mods <= {"audio"}  # whatever was detected before giving up came from the microphone alone


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs for the full-disk test needs root")
def test_full_disk_stops_evidence_never_detections(media, tmp_path: Path) -> None:
    from _daemon_fixtures import small_fs

    fs = tmp_path / "fs"
    with small_fs(fs, 64 * 1024):  # 12 % free = 7.7 MB: room for the log (its WAL stays under 4 MB)
        if shutil.disk_usage(fs).total > 128 * 1024 * 1024:
            pytest.skip("could not mount a small tmpfs here")
        u = shutil.disk_usage(fs)
        (fs / "ballast").write_bytes(b"\0" * int(u.total * 0.88 - (u.total - u.free)))  # 12 % free: below the floor
        tree = daemon_tree(
            fs,
            media["bundle"],
            media["av"].as_uri(),
            realtime=False,
            sensors="combined",
            evidence={"min_free_percent": 20.0},
        )  # the default floor
        cfg = write_config(tmp_path / "d.yaml", tree)
        r = subprocess.run(
            [*EDGEAV, "-q", "run", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=scaled(120),
        )
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout)
        con = sqlite3.connect(fs / "det.db")
        rows = con.execute("SELECT audio_path, image_path, evidence_note FROM detections").fetchall()
        con.close()
        assert summary["detections"] == len(rows) == 60, r.stderr[
            -3000:
        ]  # 6 s at a 0.1 s hop: every window, every detection
        assert summary["evidence"]["skipped"] == 60 and summary["evidence"]["written"] == 0
        assert all(a is None and i is None and n.startswith("skipped:") for a, i, n in rows)
        assert not [f for f in (fs / "evidence").rglob("*") if f.is_file()]
        assert "evidence paused" in r.stderr  # said once, loudly
        assert r.stderr.count("evidence paused") == 1


def test_silent_camera_is_restarted_while_audio_goes_on(media, tmp_path: Path) -> None:
    """The camera is a pipe its writer stops feeding (a hung camera): no data for stall_timeout_s -> restart."""
    import threading

    fifo = tmp_path / "camera.mkv"
    os.mkfifo(fifo)
    tree = daemon_tree(
        tmp_path,
        media["bundle"],
        fifo.as_uri(),
        realtime=True,
        supervisor={"backoff_initial_s": 0.3, "backoff_max_s": 1.0, "restart_budget": 100},
    )
    src = tree["runtime"]["source"]
    src.update(
        {
            "audio_uri": media["audio"].as_uri(),
            "streams": ["video", "audio"],
            "stall_timeout_s": 1.0,
            "start_timeout_s": 5.0,
        }
    )
    cfg = write_config(tmp_path / "d.yaml", tree)
    data = media["video"].read_bytes()
    silent, done = threading.Event(), threading.Event()

    def camera() -> None:
        deadline = time.monotonic() + scaled(60)
        while not done.is_set() and time.monotonic() < deadline:
            try:
                with open(fifo, "wb") as f:  # blocks until the daemon opens the pipe
                    f.write(data[: len(data) // 10])  # ~3 s of video, then nothing: the camera hangs
                    f.flush()
                    silent.set()
                    done.wait(scaled(60))  # holds the pipe open, sending nothing (until the test ends)
                    return
            except BrokenPipeError:  # a slow start (a loaded machine) was given up and the camera restarted:
                continue  # feed the new reader

    writer = threading.Thread(target=camera, daemon=True)
    writer.start()
    err_path = tmp_path / "err.log"
    p = start_daemon(cfg, err_path)
    try:
        assert silent.wait(scaled(30))
        stalls = wait_until(
            "the silent camera's restart",
            lambda: [
                r
                for r in json_logs(err_path)
                if r.get("event") == "sensor_restart" and r["reason"] == "no data for 1 s"
            ],
            30,
            proc=p,
        )
        from edgeav.runtime.store import parse_iso_utc

        t_down = parse_iso_utc(stalls[0]["ts"])  # the camera was declared silent (1 s after its last frame)
        wait_until(
            "5 detections after the camera went silent",  # the microphone goes on alone
            lambda: db_count(tmp_path / "det.db", "utc_ns > ?", t_down + 10**9) >= 5,
            30,
            proc=p,
        )
        p.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        out, _ = p.communicate(timeout=scaled(10))
        stop_s = time.monotonic() - t_term
    finally:
        done.set()
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and stop_s < scaled(5.0)  # the hung pipe did not hold the stop up
    summary = json.loads(out)
    restarts = [r for r in json_logs(err_path) if r.get("event") == "sensor_restart"]
    assert restarts and all(r["sensor"] == "camera" for r in restarts)
    stalls = [r for r in restarts if r["reason"] == "no data for 1 s"]
    assert stalls  # the hung camera was declared silent and restarted
    # the hung pipe blocks the pipeline's own shutdown: the worker leaves it behind instead of hanging with it
    assert any(r.get("event") == "pipeline_abandoned" for r in json_logs(err_path))
    assert "microphone" not in summary["restarts"]
    con = sqlite3.connect(tmp_path / "det.db")
    late = [r[0] for r in con.execute("SELECT modalities FROM detections WHERE utc_ns > ?", (t_down + 10**9,))]
    early = [r[0] for r in con.execute("SELECT modalities FROM detections WHERE utc_ns < ?", (t_down - 2 * 10**9,))]
    con.close()
    assert "audio,image" in early
    assert len(late) >= 5 and set(late) == {"audio"}  # the microphone kept producing detections
