"""Notifications through Apprise to a real HTTP receiver on loopback (http.server, Apprise's json:// webhook): the
rules (minimum confidence, cooldown, first of the day, rare), retries of a target that fails and then recovers, a
target that is down (never delaying `submit`, the main loop's only call), and the daemon end to end: a message with
class, confidence, modalities and the detection's web link."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("apprise", reason="the notify extra (apprise) is not installed")

from _daemon_fixtures import free_port, scaled, wait_until  # noqa: E402

from edgeav.runtime.notify import Notice, Notifier  # noqa: E402
from edgeav.schema.integrations import NotifyConfig  # noqa: E402

NS = 1_000_000_000
DAY0 = int(time.mktime((2026, 5, 1, 6, 0, 0, 0, 0, -1))) * NS  # 06:00 local time


class Receiver:
    """A webhook target: records each JSON body; fails (HTTP 500) the first `fail_first` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.requests = 0
        self.fail_first = fail_first
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                ok = outer.requests > outer.fail_first
                if ok:
                    outer.bodies.append(json.loads(body))
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notice(label: str, conf: float, t_s: float, i: int = 0) -> Notice:
    return Notice(f"id{i}", DAY0 + int(t_s * NS), label, conf, ("audio", "image"))


def settle(n: Notifier, done, timeout_s: float = 20) -> None:
    wait_until("the notifier to settle", lambda: done(n.counts), timeout_s)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_rules_decide_what_arrives(receiver: Receiver) -> None:
    cfg = NotifyConfig(
        enabled=True,
        urls=[receiver.url],
        base_url="http://unit.local:8080",
        default={"min_confidence": 0.6, "cooldown_s": 60},
        classes={"b": {"first_of_day": True}, "c": {"rare_below": 2, "rare_days": 7}},
    )
    n = Notifier(cfg, "unit1", ["a", "b", "c"]).start()
    stream = [
        notice("a", 0.5, 0, 1),  # under min_confidence
        notice("a", 0.9, 1, 2),  # sent
        notice("a", 0.9, 30, 3),  # within the 60 s cooldown
        notice("a", 0.9, 62, 4),  # sent
        notice("b", 0.2, 0, 5),  # first of the day (b's rule has no confidence floor): sent
        notice("b", 0.9, 3600, 6),  # not the first today
        notice("b", 0.9, 86_400, 7),  # the next day: sent
        notice("c", 0.9, 0, 8),  # 0 in the last 7 days: sent
        notice("c", 0.9, 10, 9),  # 1 < 2: sent
        notice("c", 0.9, 20, 10),  # 2 in the span: not rare
        notice("c", 0.9, 8 * 86_400, 11),  # the earlier ones are older than 7 days: rare again
    ]
    for x in stream:
        assert n.submit(x)
    settle(n, lambda c: c["sent"] + c["suppressed"] == len(stream))
    n.stop()
    got = [b["message"] for b in receiver.bodies]
    ids = [m.rsplit("/detections/", 1)[1] for m in got]
    assert ids == ["id2", "id4", "id5", "id7", "id8", "id9", "id11"]
    assert n.counts["suppressed"] == 4
    first = receiver.bodies[0]
    assert first["title"] == "edgeav unit1: a"
    assert "a: 90% confidence (audio+image)" in first["message"]
    assert "http://unit.local:8080/detections/id2" in first["message"]
    assert "first of the day" in receiver.bodies[2]["message"] and "rare" in receiver.bodies[4]["message"]


def test_a_failing_target_is_retried_until_it_takes_it() -> None:
    r = Receiver(fail_first=2)
    try:
        cfg = NotifyConfig(enabled=True, urls=[r.url], retries=3, retry_backoff_s=0.1)
        n = Notifier(cfg, "unit1", ["a"]).start()
        n.submit(notice("a", 0.9, 0, 1))
        settle(n, lambda c: c["sent"] == 1)
        n.stop()
        assert r.requests == 3 and n.counts["retried"] == 2 and n.counts["failed"] == 0
        assert "/detections/" not in r.bodies[0]["message"]  # no base_url: no link
    finally:
        r.close()


def test_targets_that_are_down_never_delay_submit_nor_the_live_one(receiver: Receiver) -> None:
    down = f"json://127.0.0.1:{free_port()}/hook"  # nobody listens: refused at once
    hang = socket.socket()  # accepts and never answers: each send waits for its timeout
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    hung = f"json://127.0.0.1:{hang.getsockname()[1]}/hook"
    cfg = NotifyConfig(
        enabled=True, urls=[down, hung, receiver.url], retries=2, retry_backoff_s=0.05, queue_max=64, timeout_s=2.0
    )
    n = Notifier(cfg, "unit1", ["a"]).start()
    worst = 0.0
    t_start = time.monotonic()
    try:
        for i in range(40):
            t0 = time.perf_counter()
            n.submit(notice("a", 0.9, i, i))
            worst = max(worst, time.perf_counter() - t0)
        # the live target gets all 40 long before the hung one has timed out on even a few (2 s each)
        wait_until("the live target's 40", lambda: len(receiver.bodies) == 40, 20)
        live_s = time.monotonic() - t_start
        settle(n, lambda c: c["failed"] >= 40, 30)  # the refusing one: 3 tries each
    finally:
        n.stop(timeout_s=0.1)
        hang.close()
    assert worst < 0.001, f"submit took {worst * 1e3:.3f} ms"
    assert live_s < scaled(10), f"the live target waited {live_s:.1f} s behind the dead ones"


@pytest.mark.gstreamer
def test_daemon_notifies_with_the_detection_link(receiver: Receiver, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the test bundle's model is built with torch")
    pytest.importorskip("gi", reason="the daemon captures through GStreamer")
    from _daemon_fixtures import EDGEAV, LABELS, daemon_tree, env, make_bundle, write_config

    bundle = make_bundle(tmp_path / "bundle")
    tree = daemon_tree(
        tmp_path,
        bundle,
        "test://?live=1&pattern=ball&wave=ticks",
        notify={"enabled": True, "urls": [receiver.url], "base_url": "http://unit.local:8080", "default": {}},
        metrics={"enabled": True, "port": free_port()},
    )
    cfg = write_config(tmp_path / "d.yaml", tree)
    p = subprocess.Popen([*EDGEAV, "run", "--config", str(cfg), "--json"], stdout=subprocess.PIPE, env=env(), text=True)
    try:
        wait_until("3 notifications", lambda: len(receiver.bodies) >= 3, 40, p)
        metrics_port = tree["daemon"]["metrics"]["port"]
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'edgeav_notifications_total{outcome="sent"}' in text
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=scaled(20))
    assert p.returncode == 0
    summary = json.loads(out)
    assert summary["notifications"]["sent"] >= 3
    con = sqlite3.connect(tmp_path / "det.db")
    rows = {r[0]: r[1] for r in con.execute("SELECT id, label FROM detections")}
    con.close()
    for b in receiver.bodies:
        did = b["message"].rsplit("http://unit.local:8080/detections/", 1)[1].strip()
        assert did in rows and b["title"].endswith(": " + rows[did]) and rows[did] in LABELS
        assert "% confidence (" in b["message"]
