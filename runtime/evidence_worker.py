"""Evidence off the main loop, and the start-up check that leaves every committed row's evidence whole or marked.

The main loop decides (free-space floor, file names) and logs the detection at once, linking the planned files with
the note `PENDING_NOTE`; one thread encodes and writes them (JPEG, WAV, MP4 - an encoder may take seconds) from its
own bounded queue, and the main loop takes the results back into the log (`store.update_evidence`). A full queue
skips the set (counted, noted in the row): inference never waits on an encoder.

Every file is written durably under a temporary name and renamed (edgeav.atomic), so after kill -9 or a power cut
a name is whole or absent. At start, `remove_temp_files` deletes what a crash left half-written and
`check_committed` unlinks from its row every file that is absent or empty (note `missing: ...`) and settles rows
still `pending` whose files did arrive.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeav.atomic import TEMP_SUFFIX
from edgeav.runtime.evidence import EVIDENCE_PATH_KEYS, PENDING_NOTE, EvidenceResult, EvidenceStore, WindowContext
from edgeav.runtime.queues import BoundedQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceJob:
    detection_id: str
    utc_ns: int
    media: WindowContext  # the detection's span: its audio stitched from the windows, the confirming window's frames


class EvidenceWorker:
    """One thread writing the evidence sets queued by `submit`, at most `max_sets` waiting. live: a set beyond
    that is refused and counted in `jobs.dropped` (inference never waits); a replay (live=False) waits for room
    instead, as its sensors do. `results()` hands back (detection id, result) of the sets finished since."""

    def __init__(self, store: EvidenceStore, max_sets: int, live: bool = True) -> None:
        self.store = store
        self.jobs: BoundedQueue[EvidenceJob] = BoundedQueue(
            max_sets, "drop_newest" if live else "block", name="evidence"
        )
        self._done: collections.deque[tuple[str, EvidenceResult]] = collections.deque()
        self._busy: str | None = None
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)

    def start(self) -> EvidenceWorker:
        self._thread.start()
        return self

    def submit(self, job: EvidenceJob) -> bool:
        """Queue one set; False (counted) when `max_sets` are already waiting (a replay waits up to a minute)."""
        return self.jobs.put(job, timeout_s=60.0)

    @property
    def backlog(self) -> int:
        """Sets queued or being written."""
        return len(self.jobs) + (self._busy is not None)

    def _run(self) -> None:
        while True:
            ok, job = self.jobs.get(timeout_s=0.5)
            if not ok:
                if self.jobs.closed:
                    return
                continue
            self._busy = job.detection_id
            try:
                m = job.media
                res = self.store.write_files(job.detection_id, job.utc_ns, m.audio, m.frame, m.frames)
            except Exception as e:  # an encoder bug must not end the thread: the row says what happened
                log.error("evidence for %s failed: %s", job.detection_id, e)
                res = EvidenceResult(None, None, f"failed: {e}", "failed")
            with self._idle:
                self._done.append((job.detection_id, res))
                self._busy = None
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued set is written (end of a replay); False if some are still waiting at the end."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self.backlog:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(remaining, 0.5))
        return True

    def results(self) -> list[tuple[str, EvidenceResult]]:
        out = []
        while self._done:  # one consumer (the main loop): popleft cannot find it empty
            out.append(self._done.popleft())
        return out

    def stop(self, timeout_s: float) -> tuple[list[str], str | None]:
        """Take no more jobs, give the set being written `timeout_s` to finish. Returns (ids of the queued sets
        that will never be written, the id still being written when time ran out or None); the second keeps its
        pending row (the next start's check settles it, whether its files arrived or not)."""
        self.jobs.close()
        left = []
        while True:
            ok, job = self.jobs.get(timeout_s=0)
            if not ok:
                break
            left.append(job.detection_id)
        self._thread.join(timeout_s)
        return left, (self._busy if self._thread.is_alive() else None)


def remove_temp_files(root: str | os.PathLike) -> int:
    """Delete the temporary files of writes a crash cut short (`.<name>.<random>.tmp` in a day folder)."""
    n = 0
    for p in Path(root).glob(f"*/.*{TEMP_SUFFIX}"):
        try:
            p.unlink()
            n += 1
        except OSError as e:
            log.warning("cannot remove %s: %s", p, e)
    if n:
        log.info("removed %d half-written evidence file(s) left by a crash", n)
    return n


def _whole(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def check_committed(rows: Iterable[Any], update: Callable[..., None]) -> dict[str, int]:
    """For each committed row linking evidence (id, audio_path, image_path, clip_path, evidence_note): a file that
    is absent or empty is unlinked from the row with note `missing: <names>`; a `pending` row whose files are all
    there is settled (note cleared). `update(id, audio_path, image_path, note, clip_path=...)` queues the change.
    Returns counts {"missing": rows marked, "settled": pending rows whose files were whole}."""
    counts = {"missing": 0, "settled": 0}
    for r in rows:
        paths = {k: r[k] for k in EVIDENCE_PATH_KEYS}
        gone = [k for k, p in paths.items() if p and not _whole(p)]
        pending = r["evidence_note"] == PENDING_NOTE
        if not gone and not pending:
            continue
        keep = {k: (None if k in gone else p) for k, p in paths.items()}
        if gone:
            names = ", ".join(Path(paths[k]).name for k in gone)
            why = "not written before the daemon stopped" if pending else "absent or empty at start"
            note = f"missing: {names} ({why})"
            counts["missing"] += 1
        else:
            note = None
            counts["settled"] += 1
        update(r["id"], keep["audio_path"], keep["image_path"], note, clip_path=keep["clip_path"])
    if counts["missing"]:
        log.warning(
            "%d detection(s) had evidence files missing at start (marked in the log)",
            counts["missing"],
            extra={"fields": {"event": "evidence_missing", "rows": counts["missing"]}},
        )
    return counts


__all__ = ["EvidenceJob", "EvidenceWorker", "remove_temp_files", "check_committed"]
