"""The field daemon: `edgeav run --config daemon.yaml`.

capture (supervised sensor threads) -> align -> infer -> post-process -> act (evidence, MQTT outbox) -> persist.

Start, in order (each rolled back in reverse if a later one fails): bundle + backend (verified: a hash mismatch
is exit 2), detection log, evidence, metrics endpoint, MQTT, sensors. Then `READY=1` to systemd. The main loop
pulls sensor items from one bounded queue per sensor, assembles windows on the daemon's timeline, infers, logs (the
evidence thread encodes), and sends `WATCHDOG=1` while it is alive. SIGTERM / SIGINT: stop reading, flush the log, stop everything in reverse - all
within `daemon.shutdown_timeout_s` (4 s; systemd's default stop timeout is far longer, the unit says 10 s).

Exit: 0 after SIGTERM or at the end of a non-looping file source; 1 when a sensor spent its restart budget (so
systemd's Restart=on-failure starts a fresh process); 2 for a bad config or bundle.
"""

from __future__ import annotations

import collections
import logging
import signal
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from edgeav.errors import ConfigError, SensorError, StorageError
from edgeav.result import CommandResult
from edgeav.runtime.daemon_evidence import DaemonEvidence
from edgeav.runtime.daemon_health import DaemonHealth
from edgeav.runtime.daemon_integrations import DaemonIntegrations
from edgeav.runtime.daemon_sensors import DaemonSensors
from edgeav.runtime.systemd import sd_notify, systemd_watchdog_s

if TYPE_CHECKING:
    from edgeav.runtime.wallclock import TimeSource
    from edgeav.schema import EdgeAVConfig

log = logging.getLogger(__name__)


# -- the daemon ----------------------------------------------------------------------------------------------------


class Daemon(DaemonHealth, DaemonSensors, DaemonEvidence, DaemonIntegrations):
    def __init__(
        self,
        cfg: EdgeAVConfig,
        bundle_override: str | None = None,
        db_override: str | None = None,
        realtime_override: bool | None = None,
        time_source: TimeSource | None = None,
    ) -> None:
        from edgeav.runtime.sources import is_live_capture, parse_source_uri
        from edgeav.runtime.wallclock import WallClock

        self.cfg = cfg
        self.daemon_cfg = cfg.daemon
        self.bundle_path = bundle_override or self.daemon_cfg.bundle
        if not self.bundle_path:
            raise ConfigError("the daemon needs a bundle: daemon.bundle in the config, or --bundle")
        self.db_path = db_override or self.daemon_cfg.store.db_path
        self.realtime = self.daemon_cfg.realtime if realtime_override is None else realtime_override
        self.src_cfg = cfg.runtime.source
        self.src = parse_source_uri(self.src_cfg.uri)  # ConfigError on a bad URI, before anything starts
        self.audio_src = parse_source_uri(self.src_cfg.audio_uri) if self.src_cfg.audio_uri else None
        self.live = is_live_capture(self.src, self.audio_src)  # bounded queues drop instead of blocking
        self.clock = "wall" if (self.live or self.realtime) else "media"
        self.stop_event = threading.Event()
        self.fatal: str | None = None
        self.exit_reason = "running"
        self.stack = None
        self.workers: list = []
        self.sensor_streams: dict[str, tuple[str, ...]] = {}
        self.windows = 0
        self.detections = 0
        self.committed = 0
        self.windows_by_modality: dict[str, int] = collections.Counter()
        self.detections_by_modality: dict[str, int] = collections.Counter()
        self.restarts: dict[str, int] = collections.Counter()
        self.last_window_monotonic: float | None = None
        self.started_monotonic = time.monotonic()
        self.metrics = None
        self.mqtt = None
        self.evidence = None
        self.store = None
        self.backend = None
        self.run_id = None
        self.wallclock = WallClock(time_source)  # UTC re-read per window; steps logged (runtime/wallclock.py)
        self.op_clock = None  # evidence ages by it (runtime/wallclock.OperatingClock), with evidence on

    # -- helpers -------------------------------------------------------------------------------------------------
    def _utc_for(self, pts_ns: int) -> int | None:
        """UTC of a time on the daemon's timeline (clock "wall": monotonic ns since t0_ns): the capture's monotonic
        time mapped with the wall clock as read at this window (`WallClock.sample`), so an NTP step is followed
        from the next window on. None on the media clock (a full-speed replay has no wall time)."""
        return self.wallclock.utc_ns_for(self.t0_ns + int(pts_ns)) if self.clock == "wall" else None

    def _on_commit(self, ids: list[str]) -> None:
        self.committed += len(ids)
        if self.metrics is not None:
            self.metrics.committed.inc(len(ids))
        log.info(
            "committed %d detection(s): %s",
            len(ids),
            " ".join(ids),
            extra={"fields": {"event": "committed", "ids": ids}},
        )

    # -- components ----------------------------------------------------------------------------------------------
    def _start_bundle(self) -> None:
        from edgeav.runtime.cli import open_bundle

        self.info, self.backend, self.role, self.sha = open_bundle(self.bundle_path, self.cfg)
        self.contract = self.info.manifest.contract
        self.labels = self.info.labels
        from edgeav.runtime.engine import source_for_contract

        self.src_cfg = source_for_contract(self.src_cfg, self.contract)  # T > 1: frames at the model's rate

    def _stop_bundle(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def _start_store(self) -> None:
        from edgeav.runtime.growth import StoreUpkeep
        from edgeav.runtime.sources import mask_credentials
        from edgeav.runtime.store import DetectionStore, new_detection_id

        st = self.daemon_cfg.store
        self.store = DetectionStore(
            self.db_path,
            synchronous=st.synchronous,
            batch_max=st.batch_max_detections,
            batch_interval_s=st.batch_interval_s,
            on_commit=self._on_commit,
            max_pending=st.max_pending_detections,
        )
        self.upkeep = StoreUpkeep(self.store, st)  # commits (errors kept), outbox and detection pruning
        self.run_id = new_detection_id(time.time_ns())
        self.store.record_run(self.run_id, str(self.bundle_path), mask_credentials(self.src_cfg.uri), self.sha)

    def _stop_store(self) -> None:
        if self.store is not None:
            self.store.close()

    def _start_evidence(self) -> None:
        from edgeav.runtime.evidence import EvidenceStore

        ecfg = self.daemon_cfg.evidence
        if not ecfg.enabled:
            return
        store = self.store

        def rows():
            store.flush()  # deletions queued by the previous pass are committed before looking again
            return store.evidence_rows()

        def unlink(detection_id: str, reason: str) -> None:
            store.update_evidence(detection_id, None, None, f"deleted: {reason}", clip_path=None)

        def deleted(reason: str) -> None:
            if self.metrics is not None:
                self.metrics.evidence_deleted.labels(reason).inc()

        rate = self.contract.image.frame_rate_hz if self.contract.image.n_frames > 1 else None
        from edgeav.runtime.wallclock import OperatingClock, op_clock_path

        self.op_clock = OperatingClock(op_clock_path(self.db_path), self.wallclock.source)
        self.evidence = EvidenceStore(
            ecfg.dir,
            ecfg,
            self.contract.audio.sample_rate_hz,
            rows,
            unlink,
            on_deleted=deleted,
            frame_rate_hz=rate,
            op_clock=self.op_clock,
        ).start()
        self._check_evidence()
        self.evidence.sweep_orphans(store.known_ids)
        self.evidence.apply_retention(force=True)
        self._start_evidence_worker()

    def _start_metrics(self) -> None:
        from edgeav.runtime.metrics import DaemonMetrics, MetricsServer

        m = self.daemon_cfg.metrics
        self.metrics_server = None
        if not m.enabled:
            return
        self.metrics = DaemonMetrics()
        self.metrics.up_since.set(time.time())
        self.metrics_server = MetricsServer(self.metrics, self.health, m.host, m.port).start()

    def _stop_metrics(self) -> None:
        if getattr(self, "metrics_server", None) is not None:
            self.metrics_server.stop()

    def _start_web(self) -> None:
        from edgeav.runtime.web.server import start_daemon_web

        self.web = start_daemon_web(self)  # daemon.web: the web view over this log (None when off)

    def _stop_web(self) -> None:
        if getattr(self, "web", None) is not None:
            self.web.stop()

    def _start_mqtt(self) -> None:
        from edgeav.runtime.mqtt import MqttPublisher, topics

        if not self.daemon_cfg.mqtt.enabled:
            return
        store = self.store
        self.mqtt = MqttPublisher(
            self.daemon_cfg.mqtt,
            self.db_path,
            heartbeat=lambda: self.health()[1],
            metrics=self.metrics,
            outbox_added=lambda: store.outbox_added,
            homeassistant=self._homeassistant(topics(self.daemon_cfg.mqtt)),
        ).start()

    def _stop_mqtt(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop(timeout_s=min(1.5, max(0.2, self._stop_deadline - time.monotonic() - 1.0)))

    # -- the loop ------------------------------------------------------------------------------------------------
    def _process(self, w, infer_windows, post, context) -> None:
        from edgeav.runtime.evidence import WindowContext
        from edgeav.runtime.store import new_detection_id

        self.wallclock.sample()  # the wall clock and its sync state, re-read once per window
        t0 = time.perf_counter()
        res = next(iter(infer_windows([w], self.backend, self.contract, post)))
        if res.scores is not None and self.metrics is not None:
            self.metrics.latency.observe(time.perf_counter() - t0)
        self.windows += 1
        self.last_window_monotonic = time.monotonic()
        mods = (
            "+".join(m for m, on in (("audio", w.audio is not None), ("image", w.frames is not None)) if on) or "none"
        )
        self.windows_by_modality[mods] += 1
        if self.metrics is not None:
            self.metrics.windows.labels(mods).inc()
        frame = w.frames[len(w.frames) // 2] if w.frames is not None else None  # (H, W, 3): the middle frame
        context.append(WindowContext(w.start_ns, w.end_ns, w.audio, frame, w.frames))  # frames (T, H, W, 3)
        self._privacy_window(w.audio, w.start_ns)  # the speech filter hears every window (daemon_integrations)
        for det in res.detections:
            privacy = self._privacy_verdict(det)
            if privacy == "drop_detection":
                continue
            utc = self._utc_for(det.end_ns) or self.wallclock.now_utc_ns()
            did = new_detection_id(utc)
            audio_path = image_path = clip_path = note = None
            if self.evidence is not None:
                try:
                    ev = self._evidence_for(did, utc, det, context, frame, w.frames, drop_audio=privacy == "drop_audio")
                    audio_path, image_path, clip_path, note, outcome = (
                        ev.audio_path,
                        ev.image_path,
                        ev.clip_path,
                        ev.note,
                        ev.outcome,
                    )
                except Exception as e:  # evidence is best effort: the detection is logged whatever happens here
                    log.error("evidence for %s failed: %s", did, e)
                    note, outcome = f"failed: {e}", "failed"
                if self.metrics is not None and outcome != "pending":  # a pending set counts when it is written
                    self.metrics.evidence.labels(outcome).inc()
            topics = [self.mqtt.topics["detection"]] if self.mqtt is not None else []
            self.store.add(
                det,
                detection_id=did,
                utc_ns=utc,
                source=self.src_cfg.uri,
                run_id=self.run_id,
                audio_path=audio_path,
                image_path=image_path,
                evidence_note=note,
                outbox_topics=topics,
                clip_path=clip_path,
                clock=self.wallclock.state,
                written_op_ns=self.op_clock.now_ns() if self.op_clock is not None else None,
            )
            self._after_detection(det, did, utc)  # Home Assistant counters, the notification queue
            self.detections += 1
            dm = "+".join(det.modalities) or "none"
            self.detections_by_modality[dm] += 1
            if self.metrics is not None:
                self.metrics.detections.labels(det.label, dm).inc()

    def _tick(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        self.upkeep.tick(now)  # a failed commit stays queued (bounded) and is retried; /health says why
        if state["watchdog_s"] and now - state["last_watchdog"] >= state["watchdog_s"] and self.upkeep.watchdog_ok(now):
            sd_notify("WATCHDOG=1")
            state["last_watchdog"] = now
        if self.evidence is not None:
            try:  # its rows() commits first: a full disk or an I/O error must not end the loop
                self.evidence.apply_retention()
            except (StorageError, sqlite3.DatabaseError, OSError) as e:
                if now - state.get("last_retention_error", -1e18) >= 10.0:
                    log.error("evidence retention failed (tried again later): %s", e)
                    state["last_retention_error"] = now
            if self.metrics is not None and now - state.get("last_disk", 0.0) >= 5.0:
                self.metrics.disk_free.set(self.evidence.free_ratio())
                state["last_disk"] = now
        if self.metrics is not None and now - state.get("last_gauges", 0.0) >= 1.0:
            state["last_gauges"] = now
            self._queue_gauges(state)  # per sensor queue and the evidence queue
            for wk in self.workers:
                self.metrics.sensor_up.labels(wk.sensor).set(1 if wk.state == "up" else 0)

    def _loop(self) -> None:
        from edgeav.runtime.align import Aligner
        from edgeav.runtime.engine import infer_windows
        from edgeav.runtime.postprocess import PostProcessor
        from edgeav.runtime.supervisor import SensorEvent, SensorItem

        # One pipeline replayed at full speed: windows wait for every decoder (nothing is missing by being
        # early). Live sources, real-time replay and split sensors: a window waits at most max_wait_s for a
        # lagging or dead sensor, then goes without it (that is how audio-only detections continue).
        live = self.clock == "wall" or len(self.workers) > 1
        aligner = Aligner(self.contract, self.cfg.runtime.align, streams=self.streams, live=live)
        post = PostProcessor(self.labels, self.cfg.runtime.postprocess, model_sha256=self.sha, utc_ns_for=self._utc_for)
        self._wire_class_rules(post)
        context: collections.deque = collections.deque(maxlen=self.daemon_cfg.evidence.context_windows)
        wd = self.daemon_cfg.watchdog_interval_s
        sys_wd = systemd_watchdog_s()
        state: dict[str, Any] = {
            "watchdog_s": wd if wd is not None else (sys_wd / 2 if sys_wd else None),
            "last_watchdog": 0.0,
        }
        ended: set[str] = set()
        names = {w.sensor for w in self.workers}
        while not self.stop_event.is_set():
            ok, msg = self.queue.get(timeout_s=0.1)
            if ok:
                if isinstance(msg, SensorItem):
                    aligner.push(msg.item)
                    for w in aligner.ready():
                        self._process(w, infer_windows, post, context)
                elif isinstance(msg, SensorEvent):
                    if msg.kind == "eos":
                        ended.add(msg.sensor)
                        for st in self.sensor_streams.get(msg.sensor, ()):
                            aligner.end_stream(st)  # later windows stop waiting for it
                    elif msg.kind == "fatal":
                        self.fatal = msg.detail
                        self.exit_reason = "sensor restart budget spent"
                        break
                    elif msg.kind == "down":
                        sd_notify(f"STATUS={msg.sensor} sensor down: {msg.detail}"[:200])
                    elif msg.kind == "up":
                        sd_notify(f"STATUS=running; {msg.sensor} sensor up (epoch {msg.epoch})")
            self._drain_evidence()
            self._tick(state)
            if ended >= names and len(self.queue) == 0:
                for w in aligner.flush():
                    self._process(w, infer_windows, post, context)
                self._finish_evidence()
                self.exit_reason = "end of stream"
                if self.daemon_cfg.exit_on_eos:
                    break
                ended.clear()  # keep serving /health until SIGTERM
                names = set()
        if self.exit_reason == "running":
            self.exit_reason = "signal"

    # -- run ------------------------------------------------------------------------------------------------------
    def run(self) -> CommandResult:
        from edgeav.runtime.supervisor import Component, ComponentStack

        self._stop_deadline = float("inf")
        stack = ComponentStack()
        self.stack = stack
        old = {}

        def on_signal(signum, _frame) -> None:
            if not self.stop_event.is_set():
                log.info(
                    "%s: stopping (flush and exit within %.1f s)",
                    signal.Signals(signum).name,
                    self.daemon_cfg.shutdown_timeout_s,
                )
            self._stop_deadline = min(self._stop_deadline, time.monotonic() + self.daemon_cfg.shutdown_timeout_s)
            self.stop_event.set()

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, on_signal)
        t_start = time.perf_counter()
        try:
            for comp in (
                Component("bundle", self._start_bundle, self._stop_bundle, 0.5),
                Component("store", self._start_store, self._stop_store, 1.0),
                Component("evidence", self._start_evidence, self._stop_evidence, 1.0),
                Component("metrics", self._start_metrics, self._stop_metrics, 0.5),
                Component("web", self._start_web, self._stop_web, 1.0),
                Component("mqtt", self._start_mqtt, self._stop_mqtt, 2.0),
                Component("integrations", self._start_integrations, self._stop_integrations, 1.5),
                Component("sensors", self._start_sensors, self._stop_sensors, 2.0),
            ):
                if self.stop_event.is_set():
                    break
                stack.start(comp)
            if not self.stop_event.is_set():
                sd_notify("READY=1\nSTATUS=running")
                log.info(
                    "daemon ready: %s on %s (run %s)",
                    self.role,
                    ", ".join(self.streams),
                    self.run_id,
                    extra={"fields": {"event": "ready", "run_id": self.run_id}},
                )
                self._loop()
        finally:
            if self._stop_deadline == float("inf"):
                self._stop_deadline = time.monotonic() + self.daemon_cfg.shutdown_timeout_s
            sd_notify("STOPPING=1")
            t_stop = time.monotonic()
            if self.store is not None and "store" in stack.started:
                self.stop_event.set()  # sensors stop producing; then commit now, so MQTT can still send it all
                try:
                    self.store.flush()
                except StorageError as e:
                    log.error("%s", e)
            late = stack.stop_all()
            stop_s = time.monotonic() - t_stop
            for s, h in old.items():
                signal.signal(s, h)
            log.info(
                "daemon stopped in %.2f s (%s)%s",
                stop_s,
                self.exit_reason,
                f"; over budget: {', '.join(late)}" if late else "",
                extra={"fields": {"event": "stopped", "stop_s": round(stop_s, 3), "reason": self.exit_reason}},
            )
        wall = time.perf_counter() - t_start
        data = {
            "exit_reason": self.exit_reason,
            "windows": self.windows,
            "detections": self.detections,
            "committed": self.committed,
            "windows_by_modality": dict(self.windows_by_modality),
            "detections_by_modality": dict(self.detections_by_modality),
            "restarts": dict(self.restarts),
            "evidence": dict(self.evidence.counts) if self.evidence is not None else None,
            "queues": self._queue_stats(),
            "evidence_check": self.evidence_check,
            "mqtt_sent": self.mqtt.sent if self.mqtt is not None else None,
            "notifications": dict(self.notifier.counts) if self.notifier is not None else None,
            "privacy": dict(self.privacy.counts) if self.privacy is not None else None,
            "db": str(self.db_path),
            "run_id": self.run_id,
            "clock": self.wallclock.state,
            "clock_steps": self.wallclock.steps,
            "wall_s": round(wall, 3),
            "stop_s": round(stop_s, 3),
        }
        if self.fatal is not None:
            raise SensorError(self.fatal)
        text = (
            f"daemon {self.exit_reason}: {self.windows} windows, {self.detections} detections "
            f"({self.committed} committed to {self.db_path}), restarts {dict(self.restarts) or 0}, "
            f"stopped in {stop_s:.2f} s"
        )
        return CommandResult(data, text)


def run_daemon(
    cfg: EdgeAVConfig,
    bundle_override: str | None = None,
    db_override: str | None = None,
    realtime_override: bool | None = None,
) -> CommandResult:
    return Daemon(cfg, bundle_override, db_override, realtime_override).run()


__all__ = ["Daemon", "run_daemon", "sd_notify", "systemd_watchdog_s"]
