"""Upkeep of the detection log over months: commits that may fail, and growth that must stay bounded.

Run from the daemon's main loop (`StoreUpkeep.tick()`):
- commit what is due; a failed commit (disk full, I/O error) keeps the batch in memory (bounded by
  `store.max_pending_detections`), is logged at most every 10 s, and makes `/health` unhealthy with the reason;
  `watchdog_ok()` turns false when nothing could be committed for `store.max_unhealthy_s` (systemd then restarts);
- every `interval_s`, while commits succeed: delete outbox rows the broker acknowledged more than
  `store.outbox_keep_days` ago, and (`store.keep_days`) archive-then-delete detections older than that whose
  evidence is gone (a row is never deleted while it links evidence files: retention unlinks those first).

The archive: `<db>.archive/detections-YYYY-MM-DD.jsonl.gz` (UTC day of the detection), one JSON object per row
with every column. Each pass appends a gzip member by writing the whole file anew beside it, fsync, rename, fsync
of the folder - so a power cut leaves the old or the new file, never a torn one. Rows are deleted only after their
archive is durable; a crash between the two archives them again at the next pass (same `id`: deduplicate by it).
Every step pages through at most `page_rows` rows at a time.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import io
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.atomic import atomic_write
from edgeav.errors import StorageError
from edgeav.runtime.store import COLUMNS, DetectionStore, write_transaction

if TYPE_CHECKING:
    from edgeav.schema.daemon import StoreConfig

log = logging.getLogger(__name__)

UPKEEP_INTERVAL_S = 600.0
ERROR_LOG_INTERVAL_S = 10.0


def archive_dir_for(db_path: str | os.PathLike) -> Path:
    p = Path(db_path)
    return p.with_name(p.name + ".archive")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_archive(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append `rows` as JSON lines (one new gzip member) to `path`, atomically and durably."""
    member = io.BytesIO()
    with gzip.GzipFile(fileobj=member, mode="wb", mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, sort_keys=True) + "\n").encode("utf-8"))

    def write(f) -> None:
        if path.exists():
            with open(path, "rb") as old:
                shutil.copyfileobj(old, f)
        f.write(member.getvalue())

    atomic_write(path, write, durable=True)
    _fsync_dir(path.parent)


def read_archive(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every archived row (all files, all members), in file-name order."""
    out = []
    for p in sorted(Path(folder).glob("detections-*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            out.extend(json.loads(ln) for ln in f if ln.strip())
    return out


def archive_and_prune(
    store: DetectionStore, keep_s: float, now_ns: int, archive_dir: str | os.PathLike, page_rows: int = 2000
) -> int:
    """Archive, then delete, detections older than `keep_s` that link no evidence. Returns rows deleted."""
    folder = Path(archive_dir)
    cut = int(now_ns - keep_s * 1e9)
    cols = ", ".join(COLUMNS)
    total = 0
    while True:
        rows = store.con.execute(
            f"SELECT {cols} FROM detections WHERE utc_ns < ? AND audio_path IS NULL AND image_path IS NULL "
            "AND clip_path IS NULL ORDER BY utc_ns, id LIMIT ?",
            (cut, int(page_rows)),
        ).fetchall()
        if not rows:
            break
        by_day: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            day = _dt.datetime.fromtimestamp(r["utc_ns"] // 1_000_000_000, tz=_dt.UTC).strftime("%Y-%m-%d")
            by_day.setdefault(day, []).append(dict(zip(COLUMNS, r)))
        folder.mkdir(parents=True, exist_ok=True)
        for day, day_rows in by_day.items():
            append_archive(folder / f"detections-{day}.jsonl.gz", day_rows)
        ids = [r["id"] for r in rows]
        with write_transaction(store.con):
            n = store.con.execute(f"DELETE FROM detections WHERE id IN ({', '.join('?' * len(ids))})", ids).rowcount
        store.detections_count -= n
        total += n
        if len(rows) < page_rows:
            break
    if total:
        log.info(
            "archived and deleted %d detection(s) older than %.1f days (archive %s)",
            total,
            keep_s / 86_400,
            folder,
            extra={"fields": {"event": "detections_pruned", "rows": total}},
        )
    return total


class StoreUpkeep:
    """Commits, health and bounded growth of one `DetectionStore` (see the module docstring)."""

    def __init__(
        self,
        store: DetectionStore,
        cfg: StoreConfig,
        archive_dir: str | os.PathLike | None = None,
        interval_s: float = UPKEEP_INTERVAL_S,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.archive_dir = Path(archive_dir) if archive_dir is not None else archive_dir_for(store.path)
        self.interval_s = float(interval_s)
        self.wall_ns = wall_ns
        self._last_upkeep = time.monotonic()
        self._last_error_log = -1e18
        self._watchdog_stopped = False
        self.pruned = {"outbox": 0, "detections": 0}

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            self.store.maybe_flush()
        except StorageError as e:  # e.g. disk full for a while: the batch stays queued and is retried
            if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                log.error(
                    "%s (%d kept in memory, retrying; %d dropped so far)",
                    e,
                    self.store.pending,
                    self.store.dropped_detections,
                    extra={"fields": {"event": "commit_failed"}},
                )
                self._last_error_log = now
        if self.store.failing_since is None and now - self._last_upkeep >= self.interval_s:
            self._last_upkeep = now
            self.prune()

    def prune(self, now_ns: int | None = None) -> dict[str, int]:
        """Prune acknowledged outbox rows and (store.keep_days) old detections; a storage error is logged and
        tried again at the next interval."""
        now_ns = self.wall_ns() if now_ns is None else now_ns
        done = {"outbox": 0, "detections": 0}
        try:
            done["outbox"] = self.store.outbox_prune(self.cfg.outbox_keep_days * 86_400.0, now_ns=now_ns)
            if self.cfg.keep_days is not None:
                done["detections"] = archive_and_prune(
                    self.store, self.cfg.keep_days * 86_400.0, now_ns, self.archive_dir
                )
        except (StorageError, sqlite3.DatabaseError, OSError) as e:
            log.warning("detection log upkeep failed (tried again in %.0f s): %s", self.interval_s, e)
        for k, v in done.items():
            self.pruned[k] += v
        return done

    def watchdog_ok(self, now: float | None = None) -> bool:
        """False once nothing could be committed for `store.max_unhealthy_s` (said once)."""
        since = self.store.failing_since
        now = time.monotonic() if now is None else now
        ok = since is None or now - since < self.cfg.max_unhealthy_s
        if not ok and not self._watchdog_stopped:
            log.error(
                "nothing could be committed for %.0f s (store.max_unhealthy_s): WATCHDOG=1 stops, systemd "
                "restarts the daemon; %d detection(s) wait in memory",
                now - since,
                self.store.pending,
            )
        self._watchdog_stopped = not ok
        return ok


__all__ = ["StoreUpkeep", "archive_and_prune", "append_archive", "read_archive", "archive_dir_for", "UPKEEP_INTERVAL_S"]
