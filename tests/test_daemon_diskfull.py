"""The daemon's detection log and evidence on a real 4 MB file system (tmpfs, mounted here: needs root) that fills up
mid-run: the daemon keeps running (retention, which commits first, fails and is tried again), /health turns
unhealthy with the reason, WATCHDOG=1 stops after store.max_unhealthy_s, and when the space is back every detection
is committed by itself - none lost, no traceback; with MQTT on, every committed detection reaches a QoS 2 subscriber
once."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")

from _daemon_fixtures import (  # noqa: E402
    EDGEAV,
    daemon_tree,
    env,
    fill,
    free_port,
    make_bundle,
    real_tmpfs,
    scaled,
    write_config,
    write_media,
)

pytestmark = pytest.mark.gstreamer


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diskfull")
    return {"bundle": make_bundle(d / "bundle"), "av": write_media(d / "av.mkv", 6.0)}


@pytest.fixture
def small_fs(tmp_path: Path):
    with real_tmpfs(tmp_path / "fs", 4096) as fs:
        yield fs


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=scaled(5)) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503 while unhealthy: the body says why
        return json.loads(e.read())


def wait_for(what: str, cond, proc: subprocess.Popen, timeout_s: float = 90.0):
    deadline = time.monotonic() + scaled(timeout_s)
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the daemon ended while waiting for {what} (rc {proc.returncode})"
        try:
            last = cond()
        except OSError:
            last = None  # not listening yet
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture(params=[False, True], ids=["log", "log+mqtt"])
def broker(request, tmp_path: Path):
    """None, or (port, subscriber) of a real mosquitto on loopback with a QoS 2 subscriber."""
    if not request.param:
        yield None
        return
    pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    from test_daemon_mqtt import Broker, Subscriber

    port = free_port()
    b = Broker(tmp_path / "broker", port).start()  # the broker's files are not on the small file system
    sub = Subscriber(port, "edgeav/unit1/detection")
    try:
        yield port, sub
    finally:
        sub.close()
        b.stop()


def test_log_filled_mid_run_is_unhealthy_then_commits_everything(media, small_fs: Path, tmp_path: Path, broker) -> None:
    port = free_port()
    # 3 s on a quiet machine: on a loaded one the first failed commit comes later after the fill, and the
    # keep-alives further apart, so the window in which they must go on (and then stop) is stretched with them
    max_unhealthy_s = round(scaled(3.0), 1)
    margin_s = scaled(0.5)
    mq = (
        {}
        if broker is None
        else {
            "mqtt": {
                "enabled": True,
                "port": broker[0],
                "unit_name": "unit1",
                "client_id": "edgeav-test-daemon",
                "reconnect_min_s": 1.0,
            }
        }
    )
    tree = daemon_tree(
        small_fs,
        media["bundle"],
        media["av"].as_uri(),
        realtime=True,
        loop=True,
        sensors="combined",
        metrics={"enabled": True, "port": port},
        watchdog_interval_s=0.2,
        store={"max_pending_detections": 100_000, "max_unhealthy_s": max_unhealthy_s},
        evidence={"retention_interval_s": 0.2},
        **mq,
    )  # retention (which commits first) runs while full
    cfg = write_config(tmp_path / "d.yaml", tree)
    err_path = tmp_path / "err.log"
    sock_path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(sock_path)
    ns.settimeout(0.2)
    watchdogs: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                if ns.recv(4096).decode() == "WATCHDOG=1":
                    watchdogs.append(time.monotonic())
            except TimeoutError:
                pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [*EDGEAV, "run", "--config", str(cfg), "--json"],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**env(), "NOTIFY_SOCKET": sock_path},
            text=True,
        )
    try:
        wait_for("20 committed", lambda: health(port)["committed"] >= 20, proc)
        ballast = fill(small_fs)
        t_full = time.monotonic()
        h = wait_for("unhealthy", lambda: (lambda h: h if h["status"] == "unhealthy" else None)(health(port)), proc)
        t_unhealthy = time.monotonic()  # the first failed commit was between t_full and this
        assert h["reason"].startswith("store: database or disk is full since "), h
        n_full = h["detections"]
        # it keeps running (windows, detections) while nothing can be committed
        h = wait_for(
            "30 more detections and max_unhealthy_s + 3 s",
            lambda: (
                lambda h: (
                    h
                    if h["detections"] >= n_full + 30
                    and time.monotonic() - t_unhealthy > max_unhealthy_s + 2 * margin_s + 3
                    else None
                )
            )(health(port)),
            proc,
        )
        assert h["status"] == "unhealthy" and h["store"]["waiting"] >= 30 and h["store"]["dropped_detections"] == 0
        t_check = time.monotonic()
        # the keep-alive went on while the disk was full for less than max_unhealthy_s, and stopped after it
        assert any(t_full < t < t_full + max_unhealthy_s - margin_s for t in watchdogs), (t_full, watchdogs[-20:])
        late = [t for t in watchdogs if t_unhealthy + max_unhealthy_s + 2 * margin_s < t < t_check]
        assert not late, (t_full, t_unhealthy, watchdogs[-20:])
        ballast.unlink()
        wait_for("healthy again", lambda: health(port)["status"] == "ok", proc)
        wait_for("WATCHDOG=1 again", lambda: watchdogs and watchdogs[-1] > t_check, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=scaled(30))
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.join(2)
        ns.close()
    stderr = err_path.read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "database or disk is full" in stderr and "is written again after" in stderr
    assert "evidence retention failed (tried again later)" in stderr  # it failed and the loop went on
    assert "WATCHDOG=1 stops" in stderr
    summary = json.loads(out)
    con = sqlite3.connect(small_fs / "det.db")
    ids = {r[0] for r in con.execute("SELECT id FROM detections")}
    unsent = con.execute("SELECT COUNT(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert summary["detections"] == summary["committed"] == len(ids) > n_full + 30  # none lost
    if broker is not None:
        sub = broker[1]
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline and set(sub.detection_ids()) < ids:
            time.sleep(0.1)
        got = collections.Counter(sub.detection_ids())
        assert set(got) == ids, f"{len(ids - set(got))} of {len(ids)} committed detections never arrived"
        assert max(got.values()) == 1 and unsent == 0 and summary["mqtt_sent"] == len(ids)
