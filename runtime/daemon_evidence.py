"""The daemon's evidence side (a mixin of `Daemon`): start-up check, the evidence thread, results into the log.

The main loop decides (free-space floor, file names) and logs each detection at once; the evidence thread
(edgeav.runtime.evidence_worker) encodes and writes, so a slow JPEG / MP4 encoder never stalls inference; the loop
takes the results back each turn (`store.update_evidence`). Also the per-queue stats for /health and the result.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from edgeav.errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from edgeav.runtime.evidence import EvidenceResult, EvidenceStore, WindowContext
    from edgeav.runtime.evidence_worker import EvidenceWorker
    from edgeav.runtime.postprocess import Detection

log = logging.getLogger("edgeav.runtime.daemon")


class DaemonEvidence:
    """Needs from the daemon: daemon_cfg, live, contract, store, metrics, queue, _stop_deadline."""

    evidence: EvidenceStore | None = None
    evidence_worker: EvidenceWorker | None = None  # with evidence on
    evidence_check: dict[str, int] = {}  # the start-up check's counts (rows marked missing, pending rows settled)

    def _start_evidence_worker(self) -> None:
        from edgeav.runtime.evidence_worker import EvidenceWorker

        self.evidence_worker = EvidenceWorker(
            self.evidence, self.daemon_cfg.evidence.queue_max_sets, live=self.live
        ).start()  # live: drops as the sensor queues do

    def _check_evidence(self) -> None:
        """After a crash: no half-written temp file stays, and no committed row names a file that is not whole.

        Only rows still `pending` are checked: every evidence file is written atomically (temp name, fsync, rename),
        so a settled row's file is whole or was never linked, and a start costs one filtered query and a stat per
        interrupted write, not a stat per file of months of evidence."""
        from edgeav.runtime.evidence import PENDING_NOTE
        from edgeav.runtime.evidence_worker import check_committed, remove_temp_files

        remove_temp_files(self.evidence.root)
        rows = self.store.con.execute(
            "SELECT id, audio_path, image_path, clip_path, evidence_note FROM detections WHERE evidence_note = ?",
            (PENDING_NOTE,),
        ).fetchall()
        self.evidence_check = check_committed(rows, self.store.update_evidence)
        if any(self.evidence_check.values()):
            try:
                self.store.flush()  # the marks are in the log before anything new is
            except StorageError as e:
                log.error("%s (kept in memory, retrying)", e)

    def _stop_evidence(self) -> None:
        if self.evidence_worker is not None:
            left, busy = self.evidence_worker.stop(
                timeout_s=max(0.1, min(1.0, self._stop_deadline - time.monotonic() - 1.5))
            )
            self._drain_evidence()
            for did in left:  # never started: the row stops naming files that will not come
                self.store.update_evidence(did, None, None, "missing: not written before the daemon stopped")
            if left or busy:
                log.warning(
                    "evidence of %d detection(s) not written at stop%s",
                    len(left) + bool(busy),
                    f" ({busy} is settled at the next start)" if busy else "",
                )
        if self.evidence is not None:
            self.evidence.stop()

    def _finish_evidence(self) -> None:
        """End of a replay: the sets still queued are written (each encoder has its own time-out) before the end."""
        w = self.evidence_worker
        if w is not None and w.backlog and not w.wait_idle(timeout_s=w.jobs.maxsize * 15.0):
            log.warning("evidence thread still busy at end of stream: %d set(s) left", w.backlog)
        self._drain_evidence()

    def _drain_evidence(self) -> None:
        """Evidence sets the evidence thread finished: their rows get the final files and note."""
        if self.evidence_worker is None:
            return
        for did, ev in self.evidence_worker.results():
            self.store.update_evidence(did, ev.audio_path, ev.image_path, ev.note, clip_path=ev.clip_path)
            if self.metrics is not None:
                self.metrics.evidence.labels(ev.outcome).inc()

    def _evidence_for(
        self,
        did: str,
        utc: int,
        det: Detection,
        context: Sequence[WindowContext],
        frame: np.ndarray | None,
        frames: np.ndarray | None,
        drop_audio: bool = False,
    ) -> EvidenceResult:
        """Decide on the main loop (free-space floor, file names) and hand the encoding to the evidence thread:
        the row links the planned files now (note pending); a full evidence queue skips the set."""
        from edgeav.runtime.evidence import EvidenceResult, WindowContext, stitch_audio
        from edgeav.runtime.evidence_worker import EvidenceJob

        # drop_audio: the privacy filter heard speech in the span; no audio of it leaves the main loop
        audio = (
            None if drop_audio else stitch_audio(context, det.start_ns, det.end_ns, self.contract.audio.sample_rate_hz)
        )
        ev = self.evidence.admit() or self.evidence.plan(did, utc, audio, frame, frames)
        media = WindowContext(det.start_ns, det.end_ns, audio, frame, frames)
        if ev.outcome == "pending" and not self.evidence_worker.submit(EvidenceJob(did, utc, media)):
            self.evidence.counts["queue_full"] = self.evidence.counts.get("queue_full", 0) + 1
            ev = EvidenceResult(
                None,
                None,
                f"skipped: evidence queue full ({self.evidence_worker.jobs.maxsize} sets waiting)",
                "skipped",
            )
        return ev

    def _queue_stats(self) -> dict[str, dict[str, int]]:
        """Per sensor queue (and the evidence queue): items waiting and items dropped since start."""
        group = getattr(self, "queue", None)
        out = {n: {"size": len(q), "dropped": q.dropped} for n, q in group.queues.items()} if group is not None else {}
        if self.evidence_worker is not None:
            out["evidence"] = {"size": self.evidence_worker.backlog, "dropped": self.evidence_worker.jobs.dropped}
        return out

    def _queue_gauges(self, state: dict[str, Any]) -> None:
        """Depth and drops of each queue into the metrics (drops as a counter: the increase since the last call)."""
        for name, st in self._queue_stats().items():
            self.metrics.queue_depth.labels(name).set(st["size"])
            key = f"drops_{name}"
            if st["dropped"] > state.get(key, 0):
                self.metrics.drops.labels(name).inc(st["dropped"] - state.get(key, 0))
                state[key] = st["dropped"]


__all__ = ["DaemonEvidence"]
