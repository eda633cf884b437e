"""MQTT against a real mosquitto broker on loopback that the test starts: detections with stable ids and
heartbeats; the broker stops for a while (5 s in the default set, 30 s under -m slow): every detection arrives
after it returns, none twice; TLS with a CA the test makes, and user/password from a file."""

from __future__ import annotations

import collections
import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")
mqtt = pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")

from _daemon_fixtures import EDGEAV, daemon_tree, env, free_port, make_bundle, scaled, start_daemon, write_config  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = [
    pytest.mark.gstreamer,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]

LIVE = "test://?live=1&pattern=ball&wave=ticks"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("mq") / "bundle")


class Broker:
    def __init__(self, folder: Path, port: int, extra: str = "") -> None:
        self.folder, self.port = folder, port
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\npersistence true\npersistence_location {folder / 'data'}/\n"
            f"autosave_interval 1\nlog_dest file {folder / 'broker.log'}\nuser {getpass.getuser()}\n{extra}"
        )
        if "password_file" not in extra:
            with self.conf.open("a") as f:
                f.write("allow_anonymous true\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.folder / "broker.log").read_text()
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(scaled(10))
        self.proc = None


class Subscriber:
    """A persistent-session QoS 2 subscriber (what a consumer that must not see a message twice uses) that records
    every message it gets."""

    def __init__(self, port: int, topic: str, tls: dict | None = None, auth: tuple[str, str] | None = None) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="edgeav-test-sub", clean_session=False
        )
        if tls:
            self.c.tls_set(**tls)
        if auth:
            self.c.username_pw_set(*auth)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=2)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(1, 1)
        self.c.connect("127.0.0.1" if not tls else "localhost", port, keepalive=5)
        self.c.loop_start()

    def _on_message(self, c, u, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, m.payload))

    def detection_ids(self) -> list[str]:
        with self.lock:
            return [json.loads(p)["id"] for t, p in self.msgs if t.endswith("/detection")]

    def count(self, suffix: str) -> int:
        with self.lock:
            return sum(1 for t, _ in self.msgs if t.endswith(suffix))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(cond, timeout_s: float, step_s: float = 0.1) -> bool:
    """Poll `cond` for `timeout_s` on a quiet machine, stretched by the load (_daemon_fixtures.time_scale)."""
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


def outbox_pending(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0]
    finally:
        con.close()


def mqtt_tree(tmp: Path, bundle: Path, port: int, **mq) -> dict:
    m = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "unit_name": "unit1",
        "heartbeat_interval_s": 1.0,
        "keepalive_s": 5,
        "reconnect_min_s": 1.0,
        "reconnect_max_s": 2.0,
        "client_id": "edgeav-test-daemon",
    }
    m.update(mq)
    return daemon_tree(tmp, bundle, LIVE, mqtt=m)


@pytest.mark.parametrize("outage_s", [5.0, pytest.param(30.0, marks=pytest.mark.slow)])
def test_broker_outage_nothing_lost_nothing_twice(bundle: Path, tmp_path: Path, outage_s: float) -> None:
    port = free_port()
    broker = Broker(tmp_path / "broker", port).start()
    sub = Subscriber(port, "edgeav/unit1/#")
    cfg = write_config(tmp_path / "d.yaml", mqtt_tree(tmp_path, bundle, port))
    err_path = tmp_path / "err.log"
    db = tmp_path / "det.db"
    try:
        p = start_daemon(cfg, err_path)
        try:
            assert wait_for(lambda: len(sub.detection_ids()) > 0, 40), err_path.read_text()[-3000:]
            broker.stop()
            t_down = time.time_ns()
            time.sleep(outage_s)  # the outage (not a wait for something)
            # detections went on and waited in the outbox (committed every batch_interval_s)
            assert wait_for(lambda: outbox_pending(db) > 0, 5), "nothing waited in the outbox"
            t_up = time.time_ns()
            broker.start()
            assert wait_for(lambda: outbox_pending(db) == 0, 30), "outbox not drained after the broker returned"
            n_hb = sub.count("/heartbeat")
            assert wait_for(lambda: sub.count("/heartbeat") > n_hb, 10)  # one sent after the drain
            n_before_term = len(sub.msgs)
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=scaled(15))
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err_path.read_text()[-3000:]
        con = sqlite3.connect(db)
        ids = {r[0] for r in con.execute("SELECT id FROM detections")}
        in_outage = con.execute(
            "SELECT COUNT(*) FROM detections WHERE utc_ns BETWEEN ? AND ?", (t_down, t_up)
        ).fetchone()[0]
        unsent = con.execute("SELECT COUNT(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0]
        con.close()
        assert unsent == 0
        assert wait_for(lambda: set(sub.detection_ids()) >= ids, 15), (
            f"{len(ids - set(sub.detection_ids()))} of {len(ids)} detections never arrived"
        )
        got = collections.Counter(sub.detection_ids())
        twice = [i for i, n in got.items() if n > 1]
        assert not twice, f"{len(twice)} detection(s) arrived more than once"
        assert set(got) == ids and in_outage >= outage_s  # about 10 detections a second were made while it was away
        assert sub.count("/heartbeat") >= 2
        hb = json.loads(next(pl for t, pl in reversed(sub.msgs[:n_before_term]) if t.endswith("/heartbeat")))
        assert hb["status"] == "ok" and set(hb["sensors"]) == {"camera", "microphone"}  # the last one before SIGTERM
        later = [json.loads(pl)["status"] for t, pl in sub.msgs[n_before_term:] if t.endswith("/heartbeat")]
        assert set(later) <= {"ok", "stopping"}  # shutting down is not reported as a failure
        logs = [json.loads(ln) for ln in err_path.read_text().splitlines() if ln.startswith("{")]
        assert any(r.get("event") == "mqtt_disconnected" for r in logs)
        assert sum(1 for r in logs if r.get("event") == "mqtt_connected") >= 2
        broker.stop()  # (flushes its log) MQTT 5: a clean session at the start, the same one resumed after the outage
        connects = [
            ln
            for ln in (tmp_path / "broker" / "broker.log").read_text().splitlines()
            if "New client connected" in ln and "edgeav-test-daemon" in ln
        ]
        assert "(p5, c1," in connects[0] and all("(p5, c0," in ln for ln in connects[1:]) and len(connects) >= 2
        print(
            f"broker outage {outage_s:g} s: {len(ids)} detections ({in_outage} during the outage), "
            f"{len(got)} arrived, 0 lost, 0 twice"
        )
    finally:
        sub.close()
        broker.stop()


def _make_tls(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=edgeav test CA",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return {"ca": ca, "crt": crt, "key": key}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make the test certificates")
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_tls_and_credentials(bundle: Path, tmp_path: Path) -> None:
    tls = _make_tls(tmp_path / "tls")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edgeav", "s3cret"], check=True, capture_output=True)
    os.chmod(pw, 0o600)
    port = free_port()
    broker = Broker(
        tmp_path / "broker",
        port,
        f"cafile {tls['ca']}\ncertfile {tls['crt']}\nkeyfile {tls['key']}\npassword_file {pw}\nallow_anonymous false\n",
    ).start()
    sub = Subscriber(port, "edgeav/unit1/#", tls={"ca_certs": str(tls["ca"])}, auth=("edgeav", "s3cret"))
    (tmp_path / "good").write_text("s3cret\n")
    (tmp_path / "bad").write_text("wrong\n")
    try:
        db = tmp_path / "det.db"
        refused: set[str] = set()
        for secret, expect in (("bad", False), ("good", True)):
            cfg = write_config(
                tmp_path / f"{secret}.yaml",
                mqtt_tree(
                    tmp_path,
                    bundle,
                    port,
                    host="localhost",
                    tls=True,
                    ca_file=str(tls["ca"]),
                    username="edgeav",
                    password_file=str(tmp_path / secret),
                ),
            )
            err_path = tmp_path / f"{secret}.err"
            p = start_daemon(cfg, err_path)
            try:
                if expect:  # run until what the refused run left behind went out, and two new ones after it
                    assert wait_for(lambda r=refused: r <= set(sub.detection_ids()), 40)
                    assert wait_for(lambda r=refused: len(set(sub.detection_ids()) - r) >= 2, 20)
                else:  # until the broker refused it and detections wait in the outbox
                    assert wait_for(
                        lambda e=err_path: "Not authorized" in e.read_text() and outbox_pending(db) > 0, 40
                    ), err_path.read_text()[-2000:]
                p.send_signal(signal.SIGTERM)
                out, _ = p.communicate(timeout=scaled(15))
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            err = err_path.read_text()
            assert p.returncode == 0, err[-2000:]
            summary = json.loads(out)
            if expect:
                assert summary["mqtt_sent"] > len(refused)
            else:
                assert summary["mqtt_sent"] == 0 and "Not authorized" in err
                assert outbox_pending(db) == summary["detections"] > 0  # kept for later
                con = sqlite3.connect(db)
                refused = {r[0] for r in con.execute("SELECT id FROM detections")}
                con.close()
        # every row the broker acknowledged reached the subscriber (over TLS, with credentials), once
        con = sqlite3.connect(db)
        sent = {r[0] for r in con.execute("SELECT detection_id FROM outbox WHERE sent_ns IS NOT NULL")}
        con.close()
        assert wait_for(lambda: set(sub.detection_ids()) >= sent, 10) and refused <= sent
        assert max(collections.Counter(sub.detection_ids()).values()) == 1
        assert "s3cret" not in (tmp_path / "good.yaml").read_text()  # the secret lives in its own file
    finally:
        sub.close()
        broker.stop()


def test_mqtt_3_1_1_for_brokers_without_v5(bundle: Path, tmp_path: Path) -> None:
    """`protocol: "3.1.1"`: detections still reach the broker, each acknowledged row once (QoS 2, no outage)."""
    port = free_port()
    broker = Broker(tmp_path / "broker", port).start()
    sub = Subscriber(port, "edgeav/unit1/#")
    cfg = write_config(tmp_path / "d.yaml", mqtt_tree(tmp_path, bundle, port, protocol="3.1.1"))
    try:
        p = subprocess.Popen(
            [*EDGEAV, "--log-json", "run", "--config", str(cfg), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
            text=True,
        )
        try:
            assert wait_for(lambda: len(sub.detection_ids()) >= 5, 40)
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=scaled(15))
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out)["mqtt_sent"] > 0
        con = sqlite3.connect(tmp_path / "det.db")
        sent = {r[0] for r in con.execute("SELECT detection_id FROM outbox WHERE sent_ns IS NOT NULL")}
        con.close()
        assert wait_for(lambda: set(sub.detection_ids()) >= sent, 10)
        assert max(collections.Counter(sub.detection_ids()).values()) == 1
        broker.stop()
        log = (tmp_path / "broker" / "broker.log").read_text()
        assert "as edgeav-test-daemon (p2, c1," in log  # protocol 3.1.1 (level 4), clean session
    finally:
        sub.close()
        broker.stop()
