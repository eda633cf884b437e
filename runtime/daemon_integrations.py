"""The daemon's integrations (a mixin of `Daemon`): the privacy filter, notifications, Home Assistant discovery and
the class rules' metrics.

On the main loop: the privacy filter feeds each window's new audio to Silero VAD (its 32 ms frames, 0.12 ms each on
one core by bench/privacy.py: ~4 ms per second of audio) and asks it about each detection's span; a notification is
an append to a deque; Home Assistant's counters are updated under a lock. Sending happens on the notification
threads and the MQTT thread (bench/integrations_delay.py measures the main loop's share per detection with every
target down: 13.5 us p50).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeav.runtime.homeassistant import HomeAssistant
    from edgeav.runtime.notify import Notifier
    from edgeav.runtime.postprocess import Detection, PostProcessor
    from edgeav.runtime.privacy import PrivacyFilter

log = logging.getLogger("edgeav.runtime.daemon")


class DaemonIntegrations:
    """Needs from the daemon: cfg, daemon_cfg, labels, contract, db_path, metrics, health, info, role."""

    privacy: PrivacyFilter | None = None
    notifier: Notifier | None = None
    homeassistant: HomeAssistant | None = None

    def _unit_name(self) -> str:
        return self.daemon_cfg.mqtt.unit_name or socket.gethostname()

    def _start_integrations(self) -> None:
        pcfg = self.daemon_cfg.privacy
        if pcfg.mode != "off":
            from edgeav.runtime.privacy import PrivacyFilter

            keep_s = max(60.0, 4 * self.contract.audio.window_s * self.daemon_cfg.evidence.context_windows)
            self.privacy = PrivacyFilter(pcfg, keep_s=keep_s)
        if self.daemon_cfg.notify.enabled:
            from edgeav.runtime.notify import Notifier

            m = self.metrics
            self.notifier = Notifier(
                self.daemon_cfg.notify,
                self._unit_name(),
                self.labels,
                self.db_path,
                on_outcome=(lambda outcome: m.notifications.labels(outcome).inc()) if m is not None else None,
            ).start()

    def _stop_integrations(self) -> None:
        if self.notifier is not None:
            self.notifier.stop(timeout_s=1.0)

    def _homeassistant(self, topics: dict[str, str]) -> HomeAssistant:
        """Discovery for the MQTT publisher (also when off: it then removes what an earlier run left)."""
        from edgeav import __version__
        from edgeav.runtime.homeassistant import HomeAssistant

        self.homeassistant = HomeAssistant(
            self.daemon_cfg.mqtt,
            topics,
            self._unit_name(),
            self.labels,
            self.db_path,
            health=lambda: str(self.health()[1].get("status", "unknown")),
            model=f"{self.role} ({len(self.labels)} classes)",
            version=__version__,
        )
        return self.homeassistant

    def _wire_class_rules(self, post: PostProcessor) -> None:
        """Class-rule drops and the thresholds in force into /metrics."""
        if self.metrics is None:
            return
        m = self.metrics
        post.class_rules.on_drop = lambda label, rule: m.class_rule_dropped.labels(label, rule).inc()
        for lb, th in zip(post.labels, post.thresholds):
            m.class_threshold.labels(lb).set(float(th))

    def _privacy_window(self, audio, start_ns: int) -> None:
        if self.privacy is not None:
            self.privacy.window(audio, self.contract.audio.sample_rate_hz, start_ns)

    def _privacy_verdict(self, det: Detection) -> str:
        """ "clear", "drop_audio" or "drop_detection" (counted in /metrics)."""
        if self.privacy is None or "audio" not in det.modalities:
            return "clear"
        v = self.privacy.verdict(det.start_ns, det.end_ns)
        if self.metrics is not None:
            self.metrics.privacy.labels({"drop_detection": "dropped", "drop_audio": "audio_dropped"}.get(v, v)).inc()
        return v

    def _after_detection(self, det: Detection, detection_id: str, utc_ns: int) -> None:
        """Logged: tell Home Assistant's counters and queue the notification (neither blocks)."""
        if self.homeassistant is not None:
            self.homeassistant.on_detection(det, detection_id, utc_ns)
        if self.notifier is not None:
            from edgeav.runtime.notify import Notice

            self.notifier.submit(Notice(detection_id, utc_ns, det.label, det.confidence, tuple(det.modalities)))


__all__ = ["DaemonIntegrations"]
