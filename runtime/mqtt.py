"""MQTT publishing from the durable outbox (optional extra `mqtt`: paho-mqtt).

Every committed detection has a row in the log's `outbox` table, written in the same transaction as the
detection. This publisher sends pending rows (QoS 1 by default) only while connected, at most `inflight_max`
unacknowledged at a time, and marks a row sent only when the broker acknowledged it (PUBACK / PUBCOMP). So:
nothing is lost while the broker is away (rows wait in SQLite, across daemon restarts too), and after it comes
back each row is sent until acknowledged once. paho's own in-memory queue is never used for detections.
A message whose acknowledgement was lost with the connection is sent again after the reconnect: subscribers
deduplicate by the detection's stable `id` (in the payload), as with any at-least-once delivery.

Topics: `<prefix>/<unit>/detection` (JSON of the detection), `<prefix>/<unit>/heartbeat` (QoS 0: uptime,
counts, sensor states), `<prefix>/<unit>/status` (retained `online` / `offline`, the latter as the last will).
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edgeav.errors import ConfigError

log = logging.getLogger(__name__)


def topics(cfg: Any) -> dict[str, str]:
    unit = cfg.unit_name or socket.gethostname()
    base = f"{cfg.topic_prefix.rstrip('/')}/{unit}"
    return {"detection": f"{base}/detection", "heartbeat": f"{base}/heartbeat", "status": f"{base}/status"}


class MqttPublisher:
    """Outbox -> broker. `start()` connects asynchronously (a broker that is down is not an error: rows wait)."""

    def __init__(self, cfg: Any, db_path: str | Path, heartbeat: Callable[[], dict[str, Any]] | None = None,
                 metrics: Any = None) -> None:
        self.cfg = cfg
        self.db_path = Path(db_path)
        self.heartbeat = heartbeat
        self.metrics = metrics
        self.topics = topics(cfg)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._client = None
        self._con = None
        self.sent = 0
        self.connects = 0
        self.last_error: str | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _make_client(self):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("daemon.mqtt needs paho-mqtt: pip install 'edgeav[mqtt]' (or set daemon.mqtt.enabled=false)") from None
        cfg = self.cfg
        client_id = cfg.client_id or f"edgeav-{socket.gethostname()}"
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        if cfg.username is not None:
            password = None
            if cfg.password_file is not None:
                p = Path(cfg.password_file)
                if not p.is_file():
                    raise ConfigError(f"daemon.mqtt.password_file {p}: not found")
                password = p.read_text(encoding="utf-8").strip()
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                v = getattr(cfg, key)
                if v is not None and not Path(v).is_file():
                    raise ConfigError(f"daemon.mqtt.{key} {v}: not found")
            try:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                               cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, OSError, ValueError) as e:
                raise ConfigError(f"daemon.mqtt TLS set-up failed: {e}") from None
            if cfg.tls_insecure:
                log.warning("MQTT TLS: the broker's host name is NOT checked (daemon.mqtt.tls_insecure=true)")
                client.tls_insecure_set(True)
        client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, int(cfg.reconnect_min_s)), max_delay=max(1, int(cfg.reconnect_max_s)))
        client.max_inflight_messages_set(cfg.inflight_max)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> "MqttPublisher":
        from edgeav.runtime.store import connect

        self._client = self._make_client()
        self._con = connect(self.db_path)  # own connection: this thread marks rows sent
        try:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as e:
            raise ConfigError(f"daemon.mqtt: cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from None
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._thread.start()
        log.info("MQTT: publishing to %s:%d%s as %s (topics %s)", self.cfg.host, self.cfg.port,
                 " over TLS" if self.cfg.tls else "", self.cfg.username or "anonymous", self.topics["detection"])
        return self

    def stop(self, timeout_s: float = 1.5) -> None:
        """Send what the outbox holds for up to `timeout_s` while connected, then disconnect (rows left wait)."""
        deadline = time.monotonic() + timeout_s
        while self.connected.is_set() and time.monotonic() < deadline and (self.pending() or self._inflight):
            time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic() + 0.5))
        if self._client is not None:
            try:
                if self.connected.is_set():
                    self._client.publish(self.topics["status"], "offline", qos=0, retain=True)
                self._client.disconnect()
            finally:
                self._client.loop_stop()
        if self._con is not None:
            self._drain_acks()
            self._con.close()
            self._con = None

    # -- paho callbacks (network thread) --------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"connection refused: {reason_code}"
            log.warning("MQTT: %s", self.last_error)
            return
        self.connects += 1
        self.connected.set()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)
        client.publish(self.topics["status"], "online", qos=1, retain=True)
        log.info("MQTT: connected to %s:%d (connection %d)", self.cfg.host, self.cfg.port, self.connects,
                 extra={"fields": {"event": "mqtt_connected", "connects": self.connects}})

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self._lock:
            lost = len(self._inflight)
            self._inflight.clear()  # not acknowledged: they stay pending in the outbox and go again
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        if was:
            log.warning("MQTT: disconnected (%s); %d unacknowledged message(s) stay in the outbox", reason_code, lost,
                        extra={"fields": {"event": "mqtt_disconnected", "unacked": lost}})

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.put(seq)

    # -- the outbox thread ------------------------------------------------------------------------------------------
    def pending(self) -> int:
        if self._con is None:
            return 0
        return int(self._con.execute("SELECT COUNT(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0])

    def _drain_acks(self) -> int:
        seqs = []
        while True:
            try:
                seqs.append(self._acked.get_nowait())
            except queue.Empty:
                break
        if seqs and self._con is not None:
            now = time.time_ns()
            self._con.execute("BEGIN IMMEDIATE")
            self._con.executemany("UPDATE outbox SET sent_ns=? WHERE seq=? AND sent_ns IS NULL", [(now, s) for s in seqs])
            self._con.execute("COMMIT")
            self.sent += len(seqs)
            if self.metrics is not None:
                self.metrics.mqtt_published.labels("detection").inc(len(seqs))
        return len(seqs)

    def _publish_pending(self) -> None:
        with self._lock:
            room = self.cfg.inflight_max - len(self._inflight)
            busy = set(self._inflight.values())
        if room <= 0:
            return
        rows = self._con.execute("SELECT seq, topic, payload FROM outbox WHERE sent_ns IS NULL ORDER BY seq LIMIT ?",
                                 (room + len(busy),)).fetchall()
        for seq, topic, payload in rows:
            if seq in busy:
                continue
            if not self.connected.is_set():
                return
            with self._lock:
                info = self._client.publish(topic, payload, qos=self.cfg.qos)
                if info.rc != 0:  # not connected any more: leave it pending
                    return
                if self.cfg.qos == 0:
                    self._acked.put(seq)
                else:
                    self._inflight[info.mid] = seq
            room -= 1
            if room <= 0:
                return

    def _run(self) -> None:
        last_hb = 0.0
        while not self._stop.is_set():
            try:
                self._drain_acks()
                if self.connected.is_set():
                    self._publish_pending()
                    now = time.monotonic()
                    if self.heartbeat is not None and now - last_hb >= self.cfg.heartbeat_interval_s:
                        last_hb = now
                        self._client.publish(self.topics["heartbeat"], json.dumps(self.heartbeat(), default=str), qos=0)
                        if self.metrics is not None:
                            self.metrics.mqtt_published.labels("heartbeat").inc()
                if self.metrics is not None:
                    self.metrics.outbox_pending.set(self.pending())
            except Exception as e:  # sqlite busy, a paho hiccup: log, keep going
                self.last_error = str(e)
                log.warning("MQTT outbox: %s", e)
            self._stop.wait(0.05)


__all__ = ["MqttPublisher", "topics"]
