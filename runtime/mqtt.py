"""MQTT publishing from the durable outbox (optional extra `mqtt`: paho-mqtt).

Every committed detection has a row in the log's `outbox` table, written in the same transaction as the
detection. This publisher hands pending rows to paho (QoS 2 by default) only while connected, at most
`inflight_max` at a time, and marks a row sent only when the broker acknowledged it (PUBACK / PUBCOMP). So:
nothing is lost while the broker is away (rows wait in SQLite, across daemon restarts too). A row handed to paho
is never handed again by this process: if the connection drops before its acknowledgement, paho itself sends it
again (with the DUP flag) after the reconnect - re-publishing it from the outbox as well would send it twice.

Nothing twice: with QoS 1 a message whose PUBACK was lost in the drop is delivered again when paho re-sends it.
QoS 2 over MQTT 5 closes that: the daemon starts each process with a clean session and resumes it on every
reconnect (clean start on the first connect only, `session_expiry_s`), so the broker still knows a message id it
has already taken (PUBREC) and releases it once (PUBREL/PUBCOMP). Subscribers that must not see a message twice
subscribe with QoS 2 too. Rows left unacknowledged when the process ends go again at the next start, so across
a daemon restart delivery is at least once; the detection's stable `id` (in the payload) deduplicates those.

Topics: `<prefix>/<unit>/detection` (JSON of the detection), `<prefix>/<unit>/heartbeat` (QoS 0: uptime,
counts, sensor states), `<prefix>/<unit>/status` (retained `online` / `offline`, the latter as the last will).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.errors import ConfigError

if TYPE_CHECKING:
    from edgeav.runtime.homeassistant import HomeAssistant
    from edgeav.runtime.metrics import DaemonMetrics
    from edgeav.schema.daemon import MqttConfig

log = logging.getLogger(__name__)


def topics(cfg: MqttConfig) -> dict[str, str]:
    unit = cfg.unit_name or socket.gethostname()
    base = f"{cfg.topic_prefix.rstrip('/')}/{unit}"
    return {"detection": f"{base}/detection", "heartbeat": f"{base}/heartbeat", "status": f"{base}/status"}


class MqttPublisher:
    """Outbox -> broker. `start()` connects asynchronously (a broker that is down is not an error: rows wait)."""

    def __init__(
        self,
        cfg: MqttConfig,
        db_path: str | Path,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        metrics: DaemonMetrics | None = None,
        outbox_added: Callable[[], int] | None = None,
        homeassistant: HomeAssistant | None = None,
    ) -> None:
        self.cfg = cfg
        self.db_path = Path(db_path)
        self.heartbeat = heartbeat
        self.metrics = metrics
        self.topics = topics(cfg)
        self.homeassistant = homeassistant  # discovery configs on connect, its state topic from the outbox thread
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._unacked: dict[int, Any] = {}  # outbox seq -> paho MQTTMessageInfo, until acknowledged
        self._thread: threading.Thread | None = None
        self._client = None
        self._con = None
        self.sent = 0
        # pending rows are counted in memory: (rows pending at start) + (rows the store wrote since) - (rows marked
        # sent here); `outbox_added` is the store's counter. Without it: COUNT(*) at most once a second
        self._outbox_added = outbox_added
        self._pending_base = 0
        self._pending_cache = (0.0, 0)
        self.connects = 0
        self.last_error: str | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _make_client(self):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError(
                "daemon.mqtt needs paho-mqtt: pip install 'edgeav[mqtt]' (or set daemon.mqtt.enabled=false)"
            ) from None
        cfg = self.cfg
        client_id = cfg.client_id or f"edgeav-{socket.gethostname()}"
        # MQTT 5: the session is clean at the first connect and resumed on reconnects (connect_async in start())
        proto: dict[str, Any] = (
            {"protocol": mqtt.MQTTv5} if cfg.protocol == "5" else {"protocol": mqtt.MQTTv311, "clean_session": True}
        )
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **proto)
        self._connect_kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
            self._connect_kwargs = {"clean_start": mqtt.MQTT_CLEAN_START_FIRST_ONLY, "properties": props}
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
                client.tls_set(
                    ca_certs=cfg.ca_file,
                    certfile=cfg.cert_file,
                    keyfile=cfg.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError, ValueError) as e:
                raise ConfigError(f"daemon.mqtt TLS set-up failed: {e}") from None
            if cfg.tls_insecure:
                log.warning("MQTT TLS: the broker's host name is NOT checked (daemon.mqtt.tls_insecure=true)")
                client.tls_insecure_set(True)
        client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        client.reconnect_delay_set(
            min_delay=max(1, int(cfg.reconnect_min_s)), max_delay=max(1, int(cfg.reconnect_max_s))
        )
        client.max_inflight_messages_set(cfg.inflight_max)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    def start(self) -> MqttPublisher:
        from edgeav.runtime.store import connect

        self._client = self._make_client()
        self._con = connect(self.db_path)  # own connection: this thread marks rows sent
        at_start = self._count_pending()
        self._pending_base = at_start - (self._outbox_added() if self._outbox_added is not None else 0)
        try:
            self._client.connect_async(
                self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, **self._connect_kwargs
            )
        except (OSError, ValueError) as e:
            raise ConfigError(f"daemon.mqtt: cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from None
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._thread.start()
        log.info(
            "MQTT: publishing to %s:%d%s as %s (topics %s)",
            self.cfg.host,
            self.cfg.port,
            " over TLS" if self.cfg.tls else "",
            self.cfg.username or "anonymous",
            self.topics["detection"],
        )
        return self

    def stop(self, timeout_s: float = 1.5) -> None:
        """Send what the outbox holds for up to `timeout_s` while connected, then disconnect (rows left wait)."""
        deadline = time.monotonic() + timeout_s
        while self.connected.is_set() and time.monotonic() < deadline and (self.pending() or self._unacked):
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
            try:
                self._collect_acks()
            except Exception as e:  # disk full at shutdown: the rows go again at the next start
                log.warning("MQTT outbox: cannot mark %d acknowledged row(s) sent: %s", len(self._unacked), e)
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
        if self.homeassistant is not None:
            self.homeassistant.on_connect(client)
        log.info(
            "MQTT: connected to %s:%d (connection %d)",
            self.cfg.host,
            self.cfg.port,
            self.connects,
            extra={"fields": {"event": "mqtt_connected", "connects": self.connects}},
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        if was:
            log.warning(
                "MQTT: disconnected (%s); %d unacknowledged message(s) will be sent again on reconnect",
                reason_code,
                len(self._unacked),
                extra={"fields": {"event": "mqtt_disconnected", "unacked": len(self._unacked)}},
            )

    # -- the outbox thread ------------------------------------------------------------------------------------------
    def _count_pending(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0])

    def pending(self) -> int:
        """Outbox rows not yet acknowledged (in memory; no query in the loop)."""
        if self._con is None:
            return 0
        if self._outbox_added is not None:
            return max(0, self._pending_base + self._outbox_added() - self.sent)
        t, n = self._pending_cache
        if time.monotonic() - t >= 1.0:
            n = self._count_pending()
            self._pending_cache = (time.monotonic(), n)
        return n

    def _collect_acks(self) -> int:
        """Mark acknowledged rows sent (one transaction, rolled back on error: the rows stay handed and are marked
        at the next try)."""
        from edgeav.runtime.store import mark_outbox_sent

        done = [seq for seq, info in self._unacked.items() if info.is_published()]
        if done and self._con is not None:
            mark_outbox_sent(self._con, done)
            for seq in done:
                del self._unacked[seq]
            self.sent += len(done)
            if self.metrics is not None:
                self.metrics.mqtt_published.labels("detection").inc(len(done))
        return len(done)

    def _publish_pending(self) -> None:
        import paho.mqtt.client as mqtt

        from edgeav.runtime.store import pending_outbox_rows

        room = self.cfg.inflight_max - len(self._unacked)
        if room <= 0:
            return
        for seq, _detection_id, topic, payload in pending_outbox_rows(self._con, room + len(self._unacked)):
            if seq in self._unacked:
                continue
            if not self.connected.is_set() or room <= 0:
                return
            info = self._client.publish(topic, payload, qos=self.cfg.qos)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE or (self.cfg.qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS):
                return  # not taken (paho's queue is full, or QoS 0 while the link is down): try again later
            # handed over, even with MQTT_ERR_NO_CONN (the connection dropped just now): paho keeps a QoS > 0
            # message and sends it after the reconnect
            self._unacked[seq] = info
            room -= 1

    def _run(self) -> None:
        last_hb = 0.0
        last_warn = -1e18
        while not self._stop.is_set():
            try:
                self._collect_acks()
                if self.connected.is_set():
                    self._publish_pending()
                    if self.homeassistant is not None:
                        self.homeassistant.tick(self._client)
                    now = time.monotonic()
                    if self.heartbeat is not None and now - last_hb >= self.cfg.heartbeat_interval_s:
                        last_hb = now
                        self._client.publish(self.topics["heartbeat"], json.dumps(self.heartbeat(), default=str), qos=0)
                        if self.metrics is not None:
                            self.metrics.mqtt_published.labels("heartbeat").inc()
                if self.metrics is not None:
                    self.metrics.outbox_pending.set(self.pending())
            except Exception as e:  # sqlite busy or disk full, a paho hiccup: log (at most every 10 s), keep going
                if str(e) != self.last_error or time.monotonic() - last_warn >= 10.0:
                    log.warning("MQTT outbox: %s", e)
                    last_warn = time.monotonic()
                self.last_error = str(e)
            self._stop.wait(0.05)


__all__ = ["MqttPublisher", "topics"]
