"""The daemon's sensors (a mixin of `Daemon`): which streams, one supervised worker per sensor, their queues.

Each sensor (camera, microphone, or one "av" pipeline) runs in its own `SensorWorker` thread with a restart budget
and feeds its own bounded queue in `QueueGroup`; a live source drops the oldest items, a file blocks.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from edgeav.errors import ConfigError

if TYPE_CHECKING:
    from edgeav.runtime.capture import CaptureItem

log = logging.getLogger("edgeav.runtime.daemon")


class DaemonSensors:
    """Needs from the daemon: cfg, daemon_cfg, src, src_cfg, audio_src, live, clock, realtime, contract, metrics,
    stop_event, workers, sensor_streams, restarts."""

    def _streams(self) -> tuple[str, ...]:
        if self.src_cfg.streams is not None:
            return tuple(self.src_cfg.streams)
        if self.src.scheme == "file":
            from edgeav.runtime.capture import probe_streams, warn_missing_modality

            have = probe_streams(self.src_cfg.uri)
        else:
            have = self.src.default_streams
        if self.audio_src is not None and "audio" not in have:
            have = tuple(have) + ("audio",)
        if self.src.scheme == "file":
            warn_missing_modality(self.src_cfg.uri, have)  # after audio_uri: a camera file needs no sound track
        return tuple(s for s in ("video", "audio") if s in have)

    def _start_sensors(self) -> None:
        from edgeav.runtime.capture import Capture
        from edgeav.runtime.queues import QueueGroup
        from edgeav.runtime.sources import parse_source_uri
        from edgeav.runtime.supervisor import Backoff, RestartBudget, SensorWorker, stream_sets

        streams = self._streams()
        self.streams = streams
        self.queue = QueueGroup()  # one bounded queue per sensor: a fast camera cannot push audio out
        qc = self.daemon_cfg.queues
        sup = self.daemon_cfg.supervisor
        t0 = time.monotonic_ns()
        self.t0_ns = t0
        for name, sensor_stream_set in stream_sets(self.daemon_cfg.sensors, streams):
            uri = self.src_cfg.uri
            if sensor_stream_set == ("audio",) and self.audio_src is not None:
                uri = self.src_cfg.audio_uri
            elif self.audio_src is not None and "audio" in sensor_stream_set and "video" in sensor_stream_set:
                raise ConfigError("runtime.source.audio_uri needs daemon.sensors=split (two pipelines)")
            scfg = self.src_cfg.model_copy(update={"uri": uri, "audio_uri": None, "streams": list(sensor_stream_set)})

            def opener(scfg=scfg, sensor_stream_set=sensor_stream_set):
                # a live sensor runs on the one monotonic GstSystemClock with base time t0 (running time = the
                # daemon's timeline), never a sound card's own clock; its audio is re-based continuously. A file
                # (even at real time) keeps its own base time: its PTS start at 0 on every (re)start.
                return Capture(
                    scfg,
                    self.contract,
                    realtime=self.realtime,
                    streams=sensor_stream_set,
                    clock_base_ns=t0 if parse_source_uri(scfg.uri).is_live else None,
                )

            def on_restart(sensor: str, reason: str) -> None:
                self.restarts[sensor] += 1
                if self.metrics is not None:
                    self.metrics.restarts.labels(sensor).inc()

            def on_item(sensor: str, item: CaptureItem) -> None:
                if self.metrics is not None:
                    self.metrics.items.labels(sensor, item.kind).inc()

            size = {"camera": qc.camera_max_items, "microphone": qc.microphone_max_items}.get(
                name, qc.camera_max_items + qc.microphone_max_items
            )  # "av": one pipeline carries both
            w = SensorWorker(
                name,
                opener,
                self.queue.add(name, size, "drop_oldest" if self.live else "block"),
                uri=uri,
                clock=self.clock,
                t0_monotonic_ns=t0,
                stall_timeout_s=self.src_cfg.stall_timeout_s,
                read_timeout_s=min(self.src_cfg.read_timeout_s, 0.2),
                backoff=Backoff(sup.backoff_initial_s, sup.backoff_max_s, sup.backoff_factor, sup.backoff_jitter),
                budget=RestartBudget(sup.restart_budget, sup.restart_window_s),
                healthy_after_s=sup.healthy_after_s,
                loop=self.daemon_cfg.loop,
                stop_event=self.stop_event,
                on_restart=on_restart,
                on_item=on_item,
            )
            self.workers.append(w)
            self.sensor_streams[name] = sensor_stream_set
        for w in self.workers:
            w.start()
        log.info(
            "sensors: %s (%s clock)",
            ", ".join(
                f"{w.sensor}={'+'.join(s)}"
                for w, (_, s) in zip(self.workers, stream_sets(self.daemon_cfg.sensors, streams))
            ),
            self.clock,
        )

    def _stop_sensors(self) -> None:
        self.stop_event.set()
        if getattr(self, "queue", None) is not None:
            self.queue.close()
        for w in self.workers:
            w.stop(timeout_s=1.0)
