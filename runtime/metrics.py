"""Prometheus metrics and /health for the daemon (prometheus_client, in the `runtime` extra).

One `DaemonMetrics` per daemon with its own CollectorRegistry (no global state, so tests can run several).
`MetricsServer` serves GET /metrics (the Prometheus text format) and GET /health (JSON; 200 when healthy,
503 otherwise) from a thread, bound to 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgeav.errors import ConfigError

log = logging.getLogger(__name__)

# inference latency buckets, s: 1 ms .. 2.5 s
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _prom():
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "daemon.metrics needs the prometheus_client package: pip install 'edgeav[runtime]' "
            "(or set daemon.metrics.enabled=false)"
        ) from None
    return prometheus_client


class DaemonMetrics:
    """Everything the daemon counts. Label values are bounded (sensor names, stream kinds, class labels)."""

    def __init__(self) -> None:
        p = _prom()
        self.registry = p.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.items = p.Counter(
            "edgeav_sensor_items_total", "Frames / audio buffers received per sensor", ["sensor", "stream"], registry=r
        )
        self.drops = p.Counter("edgeav_dropped_items_total", "Items dropped by a bounded queue", ["queue"], registry=r)
        self.queue_depth = p.Gauge("edgeav_queue_depth", "Items waiting in a queue", ["queue"], registry=r)
        self.restarts = p.Counter(
            "edgeav_sensor_restarts_total", "Sensor restarts (errors and silences)", ["sensor"], registry=r
        )
        self.sensor_up = p.Gauge(
            "edgeav_sensor_up", "1 when the sensor's pipeline is delivering", ["sensor"], registry=r
        )
        self.windows = p.Counter(
            "edgeav_windows_total", "Aligned windows by modalities present", ["modalities"], registry=r
        )
        self.latency = p.Histogram(
            "edgeav_inference_latency_seconds", "Model inference time per window", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.detections = p.Counter(
            "edgeav_detections_total", "Detections per class and modalities used", ["label", "modalities"], registry=r
        )
        self.committed = p.Counter("edgeav_detections_committed_total", "Detections committed to the log", registry=r)
        self.evidence = p.Counter(
            "edgeav_evidence_total", "Evidence sets by outcome (written, skipped, failed)", ["outcome"], registry=r
        )
        self.evidence_deleted = p.Counter(
            "edgeav_evidence_deleted_total", "Evidence sets deleted by retention", ["reason"], registry=r
        )
        self.disk_free = p.Gauge(
            "edgeav_evidence_disk_free_ratio", "Free share of the evidence file system", registry=r
        )
        self.mqtt_connected = p.Gauge("edgeav_mqtt_connected", "1 while connected to the broker", registry=r)
        self.mqtt_published = p.Counter(
            "edgeav_mqtt_published_total", "Messages acknowledged by the broker", ["kind"], registry=r
        )
        self.outbox_pending = p.Gauge(
            "edgeav_mqtt_outbox_pending", "Detection messages waiting for the broker", registry=r
        )
        self.up_since = p.Gauge("edgeav_start_time_seconds", "Unix time the daemon started", registry=r)
        self.class_rule_dropped = p.Counter(
            "edgeav_class_rule_dropped_total",
            "Detections dropped by a class rule (include, exclude, min_interval)",
            ["label", "rule"],
            registry=r,
        )
        self.class_threshold = p.Gauge(
            "edgeav_class_threshold", "Score threshold in force per class", ["label"], registry=r
        )
        self.privacy = p.Counter(
            "edgeav_privacy_detections_total",
            "Detections the speech filter looked at, by outcome (clear, audio_dropped, dropped)",
            ["outcome"],
            registry=r,
        )
        self.notifications = p.Counter(
            "edgeav_notifications_total",
            "Notifications by outcome (sent, failed, dropped: queue full, suppressed: a rule said no)",
            ["outcome"],
            registry=r,
        )
        self._lock = threading.Lock()

    def render(self) -> tuple[bytes, str]:
        p = _prom()
        return p.generate_latest(self.registry), p.CONTENT_TYPE_LATEST


class MetricsServer:
    """GET /metrics and GET /health on host:port, served from a daemon thread."""

    def __init__(
        self,
        metrics: DaemonMetrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        host: str = "127.0.0.1",
        port: int = 9108,
    ) -> None:
        self.metrics, self.health = metrics, health
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = outer.metrics.render()
                    code = 200
                elif path == "/health":
                    ok, detail = outer.health()
                    body, ctype, code = json.dumps(detail, default=str).encode(), "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("metrics http: " + fmt, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as e:
            raise ConfigError(f"metrics endpoint cannot bind {self.host}:{self.port}: {e.strerror or e}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics and /health", self.host, self.port)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["DaemonMetrics", "MetricsServer", "LATENCY_BUCKETS_S"]
