"""The detection log's schema: the version, the migrations that reach it, the column list, and the connection
helpers every reader and writer shares (`connect`, `write_transaction`, `schema_version`, `migrate`).

`edgeav.runtime.store` re-exports every name here (the schema history is in its docstring).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edgeav.errors import StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5

# version reached -> statements that take the previous version to it (each applied in its own transaction)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE detections (
            id TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            class_index INTEGER NOT NULL,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            start_utc TEXT,
            end_utc TEXT,
            utc_ns INTEGER NOT NULL,
            confidence REAL NOT NULL,
            audio_confidence REAL,
            image_confidence REAL,
            modalities TEXT NOT NULL,
            model_sha256 TEXT,
            hits INTEGER NOT NULL,
            source TEXT,
            run_id TEXT
        )""",
        "CREATE INDEX idx_detections_utc ON detections(utc_ns)",
        "CREATE INDEX idx_detections_label ON detections(label, utc_ns)",
    ),
    2: (
        "ALTER TABLE detections ADD COLUMN audio_path TEXT",
        "ALTER TABLE detections ADD COLUMN image_path TEXT",
        "ALTER TABLE detections ADD COLUMN evidence_note TEXT",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            detection_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_ns INTEGER NOT NULL,
            sent_ns INTEGER
        )""",
        "CREATE INDEX idx_outbox_pending ON outbox(sent_ns, seq)",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            started_utc TEXT NOT NULL,
            bundle TEXT,
            source TEXT,
            model_sha256 TEXT
        )""",
    ),
    3: ("ALTER TABLE detections ADD COLUMN clip_path TEXT",),
    4: ("ALTER TABLE detections ADD COLUMN clock TEXT", "ALTER TABLE detections ADD COLUMN written_op_ns INTEGER"),
    # a person's verdict on a detection (the web view, edgeav.runtime.store_reviews): one row per detection
    5: (
        """CREATE TABLE reviews (
            detection_id TEXT PRIMARY KEY,
            verdict TEXT NOT NULL CHECK (verdict IN ('confirmed', 'false_positive', 'ignore_class')),
            label TEXT NOT NULL,
            reason TEXT,
            reviewed_utc_ns INTEGER NOT NULL
        )""",
        "CREATE INDEX idx_reviews_verdict ON reviews(verdict, label)",
    ),
}

COLUMNS = (
    "id",
    "label",
    "class_index",
    "start_ns",
    "end_ns",
    "start_utc",
    "end_utc",
    "utc_ns",
    "confidence",
    "audio_confidence",
    "image_confidence",
    "modalities",
    "model_sha256",
    "hits",
    "source",
    "run_id",
    "audio_path",
    "image_path",
    "evidence_note",
    "clip_path",
    "clock",
    "written_op_ns",
)


def connect(path: str | Path, readonly: bool = False, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    p = Path(path)
    if readonly:
        if not p.is_file():
            raise StorageError(f"{p}: no detection log here")
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(p), timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return con


@contextlib.contextmanager
def write_transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`; on any error (SQLITE_FULL, an I/O error, an exception of the caller) the
    transaction is rolled back and the error re-raised, so the connection is never left inside a half transaction
    (every later BEGIN would fail). Every write of the log and the outbox goes through here."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:  # SQLite may have rolled back already (e.g. SQLITE_FULL during COMMIT)
            try:
                con.execute("ROLLBACK")
            except sqlite3.DatabaseError as e:  # the error being raised is the one that matters
                log.warning("rollback failed: %s", e)
        raise


def schema_version(con: sqlite3.Connection) -> int:
    return int(con.execute("PRAGMA user_version").fetchone()[0])


def migrate(con: sqlite3.Connection) -> tuple[int, int]:
    """Bring the database to SCHEMA_VERSION, one transaction per step. Returns (from, to)."""
    before = schema_version(con)
    if before > SCHEMA_VERSION:
        raise StorageError(
            f"detection log has schema version {before}, this edgeav knows up to {SCHEMA_VERSION} "
            "(it was written by a newer edgeav)"
        )
    v = before
    while v < SCHEMA_VERSION:
        nxt = v + 1
        with write_transaction(con):
            for stmt in MIGRATIONS[nxt]:
                con.execute(stmt)
            con.execute(f"PRAGMA user_version={nxt}")
        log.info("detection log migrated to schema version %d", nxt)
        v = nxt
    return before, v
