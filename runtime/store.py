"""The detection log: SQLite in WAL mode, batched transactions, a schema version with migrations, an MQTT outbox.

One writer (the daemon's main loop) holds a `DetectionStore`; readers (`edgeav detections`, tests, the metrics
endpoint) open their own read-only connections and never block it (WAL).

Durability: `add()` only queues a detection; `flush()` commits every queued one in ONE transaction and returns
their ids - a detection is *committed* when its id came back from `flush()` (the daemon logs exactly that).
`synchronous=FULL` (the default) makes a committed transaction survive a power cut; `NORMAL` survives a killed
process but may lose the last transactions on power loss (fewer fsyncs on an SD card).

Schema versions (PRAGMA user_version):
  1  detections (+ indexes on utc time and label)
  2  evidence columns (audio_path, image_path, evidence_note), the MQTT outbox, runs
  3  clip_path (the evidence MP4 of a T-frame window)
  4  clock (`synced` / `unsynced`: was utc_ns from an NTP-disciplined clock) and written_op_ns (the
     evidence's write time on the operating clock, edgeav.runtime.wallclock: what retention ages by)
  5  reviews (a person's verdict on a detection: confirmed / false_positive / ignore_class, with time and
     reason; edgeav.runtime.store_reviews); a confirmed detection's evidence is never deleted by retention
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeav.errors import ConfigError, StorageError
from edgeav.runtime.postprocess import Detection

# the schema and the connection helpers live in store_schema.py, the reader side in store_query.py (each module
# stays under 500 lines); every name is importable from here as before
from edgeav.runtime.store_query import integrity_check, query_detections
from edgeav.runtime.store_schema import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    connect,
    migrate,
    schema_version,
    write_transaction,
)

log = logging.getLogger(__name__)

WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024


def new_detection_id(utc_ns: int) -> str:
    """Stable, unique, time-sortable, file-name safe: `20261122T074112250Z-3f9a1c2b0d4e`."""
    t = _dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, tz=_dt.UTC)
    ms = (utc_ns // 1_000_000) % 1000
    return f"{t:%Y%m%dT%H%M%S}{ms:03d}Z-{uuid.uuid4().hex[:12]}"


def parse_iso_utc(text: str) -> int:
    """ISO 8601 (`2026-05-01T04:12:33Z`, `2026-05-01`, with an offset) -> UTC ns. Naive times are UTC."""
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    try:
        t = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ConfigError(f"{text!r} is not an ISO 8601 time (e.g. 2026-05-01T04:12:33Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def pending_outbox_rows(con: sqlite3.Connection, limit: int) -> list[tuple[int, str, str, str]]:
    """(seq, detection_id, topic, payload) of outbox rows the broker has not acknowledged, oldest first."""
    rows = con.execute(
        "SELECT seq, detection_id, topic, payload FROM outbox WHERE sent_ns IS NULL ORDER BY seq LIMIT ?", (int(limit),)
    ).fetchall()
    return [(int(r[0]), r[1], r[2], r[3]) for r in rows]


def mark_outbox_sent(con: sqlite3.Connection, seqs: Iterable[int], now_ns: int | None = None) -> None:
    """The broker acknowledged these rows: one transaction (rolled back on error: they stay pending)."""
    now = time.time_ns() if now_ns is None else now_ns
    with write_transaction(con):
        con.executemany("UPDATE outbox SET sent_ns=? WHERE seq=? AND sent_ns IS NULL", [(now, s) for s in seqs])


@dataclass
class PendingDetection:
    id: str
    row: dict[str, Any]
    outbox: list[tuple[str, str]]  # (topic, payload)


class DetectionStore:
    """The writer side. Not thread-safe: one thread writes (the daemon's main loop)."""

    def __init__(
        self,
        path: str | Path,
        synchronous: str = "FULL",
        batch_max: int = 64,
        batch_interval_s: float = 1.0,
        busy_timeout_ms: int = 5000,
        on_commit: Callable[[list[str]], None] | None = None,
        max_pending: int | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"sqlite synchronous={synchronous!r}; valid: NORMAL, FULL, EXTRA")
        self.path = Path(path)
        try:
            self.con = connect(self.path, busy_timeout_ms=busy_timeout_ms)
            mode = self.con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot switch to WAL (journal_mode={mode})")
            self.con.execute(f"PRAGMA synchronous={synchronous}")
            # after a checkpoint the WAL file shrinks back to at most this; it never holds the disk's space
            self.con.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self.migrated_from, _ = migrate(self.con)
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{self.path}: cannot open the detection log: {e}") from None
        self.batch_max = int(batch_max)
        self.batch_interval_s = float(batch_interval_s)
        self.on_commit = on_commit
        # while commits fail (disk full, I/O error) detections wait in memory: at most this many; past half of it the
        # oldest waiting detection's evidence files go (they hold the disk), past all of it the oldest detection
        self.max_pending = int(max_pending) if max_pending is not None else None
        self._pending: list[PendingDetection] = []
        self._pending_updates: list[tuple[str, dict[str, Any]]] = []
        self._oldest_pending: float | None = None
        self._evidence_scan = 0  # index in _pending below which no waiting detection links evidence any more
        self.committed = 0
        self.commits = 0
        self.commit_errors = 0
        self.dropped_detections = 0
        self.dropped_evidence = 0
        self.failing_since: float | None = None  # monotonic time of the first failed commit since the last good one
        self.last_error: str | None = None
        # counters kept in memory (no COUNT(*) in the loop): rows in the log, outbox rows this store wrote
        self.detections_count = int(self.con.execute("SELECT COUNT(*) FROM detections").fetchone()[0])
        self.outbox_added = 0

    # -- writing ---------------------------------------------------------------------------------------------------
    def add(
        self,
        det: Detection,
        *,
        detection_id: str | None = None,
        utc_ns: int | None = None,
        source: str | None = None,
        run_id: str | None = None,
        audio_path: str | None = None,
        image_path: str | None = None,
        evidence_note: str | None = None,
        outbox_topics: Sequence[str] = (),
        clip_path: str | None = None,
        clock: str | None = None,
        written_op_ns: int | None = None,
    ) -> str:
        """Queue one detection (and one outbox message per topic in `outbox_topics`, committed in the same
        transaction, so the broker gets every committed detection and nothing else). Returns its id."""
        utc = int(utc_ns if utc_ns is not None else time.time_ns())
        did = detection_id or new_detection_id(utc)
        row = {
            "id": did,
            "label": det.label,
            "class_index": det.class_index,
            "start_ns": det.start_ns,
            "end_ns": det.end_ns,
            "start_utc": det.start_utc,
            "end_utc": det.end_utc,
            "utc_ns": utc,
            "confidence": det.confidence,
            "audio_confidence": det.audio_confidence,
            "image_confidence": det.image_confidence,
            "modalities": ",".join(det.modalities),
            "model_sha256": det.model_sha256,
            "hits": det.hits,
            "source": source,
            "run_id": run_id,
            "audio_path": audio_path,
            "image_path": image_path,
            "evidence_note": evidence_note,
            "clip_path": clip_path,
            "clock": clock,
            "written_op_ns": written_op_ns,
        }
        payload = detection_payload(row) if outbox_topics else ""
        self._pending.append(PendingDetection(did, row, [(t, payload) for t in outbox_topics]))
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        if self.max_pending is not None:
            self._bound_pending()
        return did

    def _bound_pending(self) -> None:
        """Keep what waits for a commit bounded: evidence of the oldest waiting detections first, detections last."""
        cap = self.max_pending
        while len(self._pending) > max(1, cap // 2) and self._evidence_scan < len(self._pending) - cap // 2:
            p = self._pending[self._evidence_scan]
            self._evidence_scan += 1
            paths = [p.row[k] for k in ("audio_path", "image_path", "clip_path") if p.row.get(k)]
            for f in paths:
                try:
                    os.unlink(f)
                except OSError as e:  # FileNotFoundError: nothing to free
                    log.log(logging.DEBUG if isinstance(e, FileNotFoundError) else logging.WARNING, "%s: %s", f, e)
            if not paths:
                continue
            p.row.update(
                audio_path=None,
                image_path=None,
                clip_path=None,
                evidence_note=f"dropped: the log could not be written for {self._failing_for_s():.0f} s",
            )
            self.dropped_evidence += 1
            log.warning(
                "dropped the evidence of waiting detection %s (%d wait for the log; bound %d)",
                p.id,
                len(self._pending),
                cap,
                extra={"fields": {"event": "dropped_evidence", "id": p.id}},
            )
        while len(self._pending) > cap:
            p = self._pending.pop(0)
            self._evidence_scan = max(0, self._evidence_scan - 1)
            self.dropped_detections += 1
            log.error(
                "dropped waiting detection %s (%s at %s): the log could not be written for %.0f s and %d "
                "detections wait (store.max_pending_detections)",
                p.id,
                p.row["label"],
                p.row["utc_ns"],
                self._failing_for_s(),
                cap,
                extra={"fields": {"event": "dropped_detection", "id": p.id, "dropped": self.dropped_detections}},
            )

    def _failing_for_s(self) -> float:
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    def problem(self) -> str | None:
        """None while commits succeed; else what fails and for how long (for /health)."""
        return (
            None
            if self.failing_since is None
            else f"store: {self.last_error} since {self._failing_for_s():.0f}s ({self.pending} waiting)"
        )

    def update_evidence(
        self,
        detection_id: str,
        audio_path: str | None,
        image_path: str | None,
        note: str | None,
        clip_path: str | None = None,
    ) -> None:
        """Queue a change of a detection's evidence links (retention deleting files, late evidence)."""
        self._pending_updates.append(
            (
                detection_id,
                {"audio_path": audio_path, "image_path": image_path, "evidence_note": note, "clip_path": clip_path},
            )
        )
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._pending_updates)

    def due(self) -> bool:
        if not self._pending and not self._pending_updates:
            return False
        if len(self._pending) >= self.batch_max:
            return True
        return self._oldest_pending is not None and time.monotonic() - self._oldest_pending >= self.batch_interval_s

    def maybe_flush(self) -> list[str]:
        return self.flush() if self.due() else []

    def flush(self) -> list[str]:
        """Commit everything queued in one transaction; returns the ids of the detections committed."""
        if not self._pending and not self._pending_updates:
            return []
        batch, updates = self._pending, self._pending_updates
        now_ns = time.time_ns()
        cols = ", ".join(COLUMNS)
        marks = ", ".join(f":{c}" for c in COLUMNS)
        outbox = [(p.id, topic, payload, now_ns) for p in batch for topic, payload in p.outbox]
        try:
            with write_transaction(self.con):
                inserted = self.con.executemany(
                    f"INSERT OR IGNORE INTO detections ({cols}) VALUES ({marks})", [p.row for p in batch]
                ).rowcount
                self.con.executemany(
                    "INSERT INTO outbox (detection_id, topic, payload, created_ns) VALUES (?, ?, ?, ?)", outbox
                )
                for did, vals in updates:
                    self.con.execute(
                        "UPDATE detections SET audio_path=:audio_path, image_path=:image_path, "
                        "evidence_note=:evidence_note, clip_path=:clip_path WHERE id=:id",
                        {**vals, "id": did},
                    )
        except sqlite3.DatabaseError as e:
            self.commit_errors += 1
            self.last_error = str(e)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            # keep the batch queued: the next flush retries it (e.g. after the disk got space back)
            raise StorageError(f"{self.path}: commit of {len(batch)} detection(s) failed: {e}") from None
        if self.failing_since is not None:
            log.warning(
                "the detection log is written again after %.0f s of failed commits (%s); %d detection(s) "
                "committed now, %d dropped meanwhile",
                self._failing_for_s(),
                self.last_error,
                len(batch),
                self.dropped_detections,
                extra={"fields": {"event": "store_recovered"}},
            )
        self.failing_since, self.last_error = None, None
        self._pending, self._pending_updates, self._oldest_pending, self._evidence_scan = [], [], None, 0
        ids = [p.id for p in batch]
        self.committed += len(ids)
        self.commits += 1
        self.detections_count += max(0, inserted)
        self.outbox_added += len(outbox)
        if self.on_commit is not None and ids:
            self.on_commit(ids)
        return ids

    def record_run(self, run_id: str, bundle: str | None, source: str | None, model_sha256: str | None) -> None:
        started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        try:  # the run's record is bookkeeping: a full disk at start must not keep the daemon from logging later
            with write_transaction(self.con):
                self.con.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                    (run_id, started, bundle, source, model_sha256),
                )
        except sqlite3.DatabaseError as e:
            log.error(
                "%s: cannot record run %s: %s (detections are still logged once there is space)", self.path, run_id, e
            )

    # -- outbox (MQTT) -------------------------------------------------------------------------------------------
    def outbox_pending(self, limit: int = 100) -> list[tuple[int, str, str, str]]:
        """(seq, detection_id, topic, payload) not yet acknowledged by the broker, oldest first."""
        return pending_outbox_rows(self.con, limit)

    def outbox_mark_sent(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if seqs:
            mark_outbox_sent(self.con, seqs)

    def outbox_prune(self, keep_sent_s: float = 86_400.0, now_ns: int | None = None) -> int:
        """Delete outbox rows the broker acknowledged more than `keep_sent_s` ago; pending rows always stay."""
        cut = (now_ns if now_ns is not None else time.time_ns()) - int(keep_sent_s * 1e9)
        with write_transaction(self.con):
            n = self.con.execute("DELETE FROM outbox WHERE sent_ns IS NOT NULL AND sent_ns < ?", (cut,)).rowcount
        if n:
            log.info(
                "outbox: pruned %d acknowledged message(s)", n, extra={"fields": {"event": "outbox_pruned", "rows": n}}
            )
        return n

    # -- evidence bookkeeping ------------------------------------------------------------------------------------
    def evidence_rows(self, page_rows: int = 500) -> Iterator[sqlite3.Row]:
        """Detections that still link evidence and that no one confirmed (retention's candidates), oldest first, read
        `page_rows` at a time (keyset on (utc_ns, id))."""
        after: tuple[int, str] = (-(2**63), "")
        while True:
            page = self.con.execute(
                "SELECT id, label, utc_ns, audio_path, image_path, clip_path, written_op_ns FROM detections WHERE "
                "(audio_path IS NOT NULL OR image_path IS NOT NULL OR clip_path IS NOT NULL) AND (utc_ns, id) > (?, ?) "
                # a detection a person confirmed keeps its evidence (schema 5: reviews)
                "AND id NOT IN (SELECT detection_id FROM reviews WHERE verdict = 'confirmed') "
                "ORDER BY utc_ns, id LIMIT ?",
                (*after, int(page_rows)),
            ).fetchall()
            yield from page
            if len(page) < page_rows:
                return
            after = (page[-1]["utc_ns"], page[-1]["id"])

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id FROM detections WHERE id IN ({', '.join('?' * len(chunk))})"
            out.update(r[0] for r in self.con.execute(q, chunk))
        out.update(p.id for p in self._pending)
        return out

    def count(self) -> int:
        """Detections in the log (kept in memory: counted once at open, then by commits and prunes)."""
        return self.detections_count

    def close(self) -> None:
        """Flush what is queued, checkpoint the WAL, close."""
        try:
            self.flush()
        finally:
            try:
                self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError as e:
                log.warning("WAL checkpoint failed: %s", e)
            self.con.close()


def detection_payload(row: dict[str, Any]) -> str:
    """The JSON an MQTT subscriber gets for one detection (stable id, times, scores, modalities)."""
    keep = (
        "id",
        "label",
        "confidence",
        "audio_confidence",
        "image_confidence",
        "start_utc",
        "end_utc",
        "utc_ns",
        "start_ns",
        "end_ns",
        "modalities",
        "model_sha256",
        "hits",
        "source",
        "run_id",
        "clock",
    )
    d = {k: row.get(k) for k in keep}
    if isinstance(d["modalities"], str):
        d["modalities"] = [m for m in d["modalities"].split(",") if m]
    return json.dumps(d, sort_keys=True)


__all__ = [
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "COLUMNS",
    "DetectionStore",
    "connect",
    "migrate",
    "schema_version",
    "query_detections",
    "integrity_check",
    "new_detection_id",
    "parse_iso_utc",
    "detection_payload",
    "write_transaction",
    "pending_outbox_rows",
    "mark_outbox_sent",
]
