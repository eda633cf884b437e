"""The daemon's health (a mixin of `Daemon`): one answer for /health, the MQTT heartbeat and systemd STATUS."""

from __future__ import annotations

import time
from typing import Any


class DaemonHealth:
    """Needs from the daemon: daemon_cfg, workers, store, evidence, mqtt, fatal, stop_event, started_monotonic,
    last_window_monotonic, windows, detections, committed, _queue_stats (DaemonEvidence)."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        age = None if self.last_window_monotonic is None else now - self.last_window_monotonic
        max_age = self.daemon_cfg.metrics.health_max_age_s
        sensors = {
            w.sensor: {"state": w.state, "restarts": w.restarts, "epoch": w.epoch, "last_error": w.last_error}
            for w in self.workers
        }
        fresh = (age is not None and age <= max_age) or (age is None and now - self.started_monotonic <= max_age)
        store_problem = self.store.problem() if self.store is not None else None  # e.g. disk full: commits fail
        ok = fresh and self.fatal is None and not self.stop_event.is_set() and store_problem is None
        detail = {
            # a heartbeat or probe during shutdown says so, instead of reading as a failure
            "status": "ok" if ok else ("stopping" if self.stop_event.is_set() and self.fatal is None else "unhealthy"),
            "reason": store_problem or self.fatal or (None if fresh else f"no window for over {max_age:g} s"),
            "uptime_s": round(now - self.started_monotonic, 1),
            "last_window_age_s": None if age is None else round(age, 2),
            "windows": self.windows,
            "detections": self.detections,
            "committed": self.committed,
            "sensors": sensors,
            "store": None
            if self.store is None
            else {
                "waiting": self.store.pending,
                "rows": self.store.count(),
                "dropped_detections": self.store.dropped_detections,
                "dropped_evidence": self.store.dropped_evidence,
            },
            "evidence_paused": bool(self.evidence is not None and self.evidence.disk_low),
            "queues": self._queue_stats(),
            "mqtt_connected": bool(self.mqtt is not None and self.mqtt.connected.is_set()),
        }
        return ok, detail
