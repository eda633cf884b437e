"""Home Assistant MQTT discovery against a real mosquitto on loopback: a subscriber to `homeassistant/#` sees one
device's valid retained configs and a state that counts the detections; SIGKILL flips availability to `offline`
(the last will); a restarted daemon carries today's counts on and republishes the configs after a broker restart and
on Home Assistant's birth message; `homeassistant: false` removes them."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")
mqtt = pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")

from _daemon_fixtures import LABELS, free_port, make_bundle, scaled, start_daemon, wait_until, write_config  # noqa: E402
from test_daemon_mqtt import MOSQUITTO, Broker, mqtt_tree  # noqa: E402

pytestmark = [
    pytest.mark.gstreamer,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]
PREFIX = "homeassistant/sensor/edgeav_unit1/"


class Recorder:
    """Every message on `topics` with its retain flag; `latest(topic)` is the newest payload."""

    def __init__(self, port: int, *topics: str) -> None:
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"rec-{free_port()}")
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.c.on_message = self._on
        self.c.reconnect_delay_set(1, 1)
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()

    def _on(self, c, u, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, m.payload, bool(m.retain)))

    def latest(self, topic: str) -> bytes | None:
        with self.lock:
            return next((p for t, p, _ in reversed(self.msgs) if t == topic), None)

    def configs(self) -> dict[str, bytes]:
        with self.lock:
            return {t: p for t, p, _ in self.msgs if t.startswith(PREFIX) and t.endswith("/config")}

    def count(self, pred) -> int:
        with self.lock:
            return sum(1 for m in self.msgs if pred(m))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _state(rec: Recorder) -> dict:
    p = rec.latest("edgeav/unit1/state")
    return json.loads(p) if p else {}


def test_home_assistant_discovery_availability_and_removal(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    port = free_port()
    broker = Broker(tmp_path / "broker", port).start()
    rec = Recorder(port, "homeassistant/#", "edgeav/unit1/status", "edgeav/unit1/state")
    on = write_config(tmp_path / "on.yaml", mqtt_tree(tmp_path, bundle, port, homeassistant=True))
    procs: list[subprocess.Popen] = []
    try:
        # 1. discovery: one device, a sensor per figure and one count per class, all retained and valid
        p = start_daemon(on, tmp_path / "run1.err")
        procs.append(p)
        n_sensors = 5 + len(LABELS)
        configs = wait_until("the discovery configs", lambda: len(rec.configs()) == n_sensors and rec.configs(), 40, p)
        docs = {t.removeprefix(PREFIX).removesuffix("/config"): json.loads(b) for t, b in configs.items()}
        assert {"last_label", "last_confidence", "last_modalities", "detections_today", "health"} <= set(docs)
        assert {f"count_{lb}" for lb in LABELS} <= set(docs)
        assert len({d["unique_id"] for d in docs.values()}) == n_sensors
        assert {tuple(d["device"]["identifiers"]) for d in docs.values()} == {("edgeav_unit1",)}
        for d in docs.values():
            assert d["state_topic"] == "edgeav/unit1/state" and d["availability_topic"] == "edgeav/unit1/status"
            assert d["payload_available"] == "online" and d["payload_not_available"] == "offline"
            assert d["value_template"].startswith("{{") and d["name"]
        st = wait_until(
            "a state with 3 detections", lambda: _state(rec).get("detections_today", 0) >= 3 and _state(rec), 30, p
        )
        assert st["last_label"] in LABELS and 0.0 <= st["last_confidence"] <= 1.0
        assert st["last_modalities"] in ("audio", "image", "audio+image")
        assert sum(st["counts_today"].values()) == st["detections_today"]
        assert wait_until("health ok", lambda: _state(rec).get("health") == "ok", 20, p)
        assert rec.latest("edgeav/unit1/status") == b"online"
        # 2. killed without a goodbye: the broker publishes the last will
        p.send_signal(signal.SIGKILL)
        p.wait(scaled(10))
        wait_until("availability offline", lambda: rec.latest("edgeav/unit1/status") == b"offline", 20)
        before = _state(rec)["detections_today"]

        # 3. restart: today's counts carry on; configs again after a broker restart and on HA's birth message
        p = start_daemon(on, tmp_path / "run2.err")
        procs.append(p)
        wait_until("online again", lambda: rec.latest("edgeav/unit1/status") == b"online", 40, p)
        wait_until("a new state", lambda: _state(rec).get("detections_today", 0) > before, 30, p)
        sent = lambda: rec.count(lambda m: m[0] == PREFIX + "health/config")  # noqa: E731
        n = sent()
        broker.stop()
        broker.start()
        wait_until("configs republished after the reconnect", lambda: sent() > n, 40, p)
        n = sent()
        rec.c.publish("homeassistant/status", "online", qos=1)
        wait_until("configs republished on Home Assistant's birth message", lambda: sent() > n, 20, p)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=scaled(15))
        assert p.returncode == 0

        # 4. homeassistant: false removes the device (an empty retained config each)
        off = write_config(tmp_path / "off.yaml", mqtt_tree(tmp_path, bundle, port, homeassistant=False))
        p = start_daemon(off, tmp_path / "run3.err")
        procs.append(p)
        wait_until("configs removed", lambda: all(v == b"" for v in rec.configs().values()), 40, p)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=scaled(15))
        late = Recorder(port, "homeassistant/#")  # a newcomer gets no retained config of the unit
        wait_until("the newcomer subscribed", lambda: late.c.is_connected(), 10)
        rec.c.publish("homeassistant/probe", "x", qos=1)  # after the retained ones (if any) the probe arrives
        wait_until("the probe", lambda: late.latest("homeassistant/probe") == b"x", 10)
        assert not late.configs()
        late.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        rec.close()
        broker.stop()
