"""Home Assistant MQTT discovery (`daemon.mqtt.homeassistant`): one device per unit with its sensors.

Retained discovery configs under `<homeassistant_prefix>/sensor/edgeav_<unit>/<sensor>/config`: the last detected
class, its confidence, its modalities, detections today, one per-class count of today per label, and the unit's
health. Every sensor reads one retained JSON state topic, `<prefix>/<unit>/state`, and is available while the
daemon's status topic `<prefix>/<unit>/status` says `online` (the MQTT publisher sets it on every connect; the
broker publishes the last will `offline` when the daemon dies without a goodbye).

The configs go out on every (re)connect and again when Home Assistant announces itself (`online` on
`<homeassistant_prefix>/status`, its birth message). With `homeassistant: false` the configs a previous run left are
removed (an empty retained message on each topic, once per connection). The main loop only updates counters under
a lock (`on_detection`); the MQTT thread publishes the state when it changed (`tick`).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.timebase import NS_PER_S

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgeav.runtime.postprocess import Detection
    from edgeav.schema.daemon import MqttConfig

log = logging.getLogger(__name__)


def slug(s: str) -> str:
    """A topic / id part Home Assistant accepts: [a-zA-Z0-9_-]."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", s).strip("_") or "x"


def start_of_local_day_ns(now_ns: int) -> int:
    t = time.localtime(now_ns / NS_PER_S)
    return int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1)) * NS_PER_S)


def discovery_configs(
    cfg: MqttConfig, topics: dict[str, str], unit: str, labels: Sequence[str], model: str, version: str
) -> dict[str, dict[str, Any]]:
    """{config topic: payload} of every sensor of the unit's device."""
    node = f"edgeav_{slug(unit)}"
    device = {
        "identifiers": [node],
        "name": f"edgeav {unit}",
        "manufacturer": "edgeav",
        "model": model,
        "sw_version": version,
    }
    common = {
        "state_topic": topics["state"],
        "availability_topic": topics["status"],
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    sensors: dict[str, dict[str, Any]] = {
        "last_label": {
            "name": "Last detection",
            "icon": "mdi:bird",
            "value_template": "{{ value_json.last_label }}",
            "json_attributes_topic": topics["state"],
            "json_attributes_template": "{{ value_json.last | tojson }}",
        },
        "last_confidence": {
            "name": "Last detection confidence",
            "icon": "mdi:percent",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "value_template": "{{ (value_json.last_confidence * 100) | round(1) if value_json.last_confidence "
            "is not none else none }}",
        },
        "last_modalities": {
            "name": "Last detection modalities",
            "icon": "mdi:eye-plus",
            "value_template": "{{ value_json.last_modalities }}",
        },
        "detections_today": {
            "name": "Detections today",
            "icon": "mdi:counter",
            "state_class": "total",
            "value_template": "{{ value_json.detections_today }}",
        },
        "health": {
            "name": "Health",
            "icon": "mdi:heart-pulse",
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.health }}",
        },
    }
    for lb in labels:
        sensors[f"count_{slug(lb)}"] = {
            "name": f"{lb} today",
            "icon": "mdi:counter",
            "state_class": "total",
            "value_template": "{{ value_json.counts_today.get(" + json.dumps(lb) + ", 0) }}",
        }
    prefix = cfg.homeassistant_prefix.rstrip("/")
    return {
        f"{prefix}/sensor/{node}/{key}/config": {**body, **common, "unique_id": f"{node}_{key}"}
        for key, body in sensors.items()
    }


class HomeAssistant:
    """Discovery configs and the state topic; `on_connect` / `tick` run on the MQTT side, `on_detection` on the
    main loop (a lock and a few assignments)."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: dict[str, str],
        unit: str,
        labels: Sequence[str],
        db_path: str | Path | None = None,
        health: Callable[[], str] | None = None,
        model: str = "edgeav",
        version: str = "",
    ) -> None:
        self.cfg, self.unit, self.labels = cfg, unit, list(labels)
        self.enabled = cfg.homeassistant
        self.topics = {**topics, "state": topics["status"].rsplit("/", 1)[0] + "/state"}
        self.configs = discovery_configs(cfg, self.topics, unit, self.labels, model, version)
        self.birth_topic = f"{cfg.homeassistant_prefix.rstrip('/')}/status"
        self.health = health
        self._lock = threading.Lock()
        self._day_start_ns = start_of_local_day_ns(time.time_ns())
        self.counts_today: collections.Counter[str] = collections.Counter()
        self.last: dict[str, Any] = {}
        self._dirty = True
        self._health = "starting"
        self._last_health_check = 0.0
        self.published_configs = 0
        if db_path is not None and self.enabled:
            self._seed(Path(db_path))

    def _seed(self, db: Path) -> None:
        """Today's counts and the last detection from the log, so a restart does not zero the sensors."""
        if not db.exists():
            return
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
            try:
                for lb, n in con.execute(
                    "SELECT label, COUNT(*) FROM detections WHERE utc_ns >= ? GROUP BY label", (self._day_start_ns,)
                ):
                    self.counts_today[lb] = int(n)
                row = con.execute(
                    "SELECT id, label, confidence, modalities, end_utc FROM detections ORDER BY utc_ns DESC LIMIT 1"
                ).fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            log.warning("Home Assistant: cannot read today's counts from the log (%s); they start at 0", e)
            return
        if row is not None:
            mods = [m for m in (row[3] or "").split(",") if m]  # the log keeps them comma-joined
            self.last = {"id": row[0], "label": row[1], "confidence": row[2], "modalities": mods, "utc": row[4]}

    # -- main loop ---------------------------------------------------------------------------------------------------
    def on_detection(self, det: Detection, detection_id: str, utc_ns: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if utc_ns >= self._day_start_ns + 86_400 * NS_PER_S:  # a new local day (DST: recomputed, not added)
                self._day_start_ns = start_of_local_day_ns(utc_ns)
                self.counts_today.clear()
            self.counts_today[det.label] += 1
            self.last = {
                "id": detection_id,
                "label": det.label,
                "confidence": round(det.confidence, 4),
                "modalities": list(det.modalities),
                "utc": det.end_utc,
            }
            self._dirty = True

    # -- MQTT side -------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "last_label": self.last.get("label"),
                "last_confidence": self.last.get("confidence"),
                "last_modalities": "+".join(self.last.get("modalities", [])) or None,
                "last": dict(self.last),
                "detections_today": sum(self.counts_today.values()),
                "counts_today": dict(self.counts_today),
                "health": self._health,
            }

    def publish_configs(self, client) -> None:
        for topic, payload in self.configs.items():
            client.publish(topic, json.dumps(payload) if self.enabled else b"", qos=1, retain=True)
        self.published_configs += 1
        if self.enabled:
            log.info(
                "Home Assistant: %d discovery configs under %s (device edgeav_%s)",
                len(self.configs),
                self.cfg.homeassistant_prefix,
                slug(self.unit),
                extra={"fields": {"event": "ha_discovery", "configs": len(self.configs)}},
            )

    def on_connect(self, client) -> None:
        self.publish_configs(client)
        if self.enabled:
            client.message_callback_add(self.birth_topic, self._on_birth)
            client.subscribe(self.birth_topic, qos=1)
            with self._lock:
                self._dirty = True

    def _on_birth(self, client, userdata, msg) -> None:
        if msg.payload == b"online":  # Home Assistant (re)started: it wants the configs again
            self.publish_configs(client)
            with self._lock:
                self._dirty = True

    def tick(self, client) -> None:
        """From the MQTT thread while connected: the health now and then, the state when it changed."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.health is not None and now - self._last_health_check >= 1.0:
            self._last_health_check = now
            h = self.health()
            with self._lock:
                if h != self._health:
                    self._health, self._dirty = h, True
        with self._lock:
            dirty, self._dirty = self._dirty, False
        if dirty:
            client.publish(self.topics["state"], json.dumps(self.state(), default=str), qos=1, retain=True)


__all__ = ["HomeAssistant", "discovery_configs", "slug"]
