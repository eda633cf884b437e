"""Reviews: a person's verdict on a detection (schema 5, table `reviews`), written by the web view.

One row per detection: `confirmed` (the detection is right; retention keeps its evidence), `false_positive`
(wrong), `ignore_class` (this class is not of interest on this unit: the web view hides its detections unless asked),
with the time (UTC ns) and an optional reason. A new verdict replaces the old one; `clear_review` removes it.

Writers open their own short read-write connection per review (`write_transaction`, WAL): the daemon's writer
is never blocked for longer than one small transaction.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgeav.errors import ConfigError, StorageError
from edgeav.runtime.store_schema import connect, migrate, schema_version, write_transaction

VERDICTS = ("confirmed", "false_positive", "ignore_class")
VERDICT_TITLES = {"confirmed": "confirmed", "false_positive": "false positive", "ignore_class": "class ignored"}
REASON_MAX_CHARS = 500

# the form every detection id has (edgeav.runtime.store.new_detection_id): 20261122T074112250Z-3f9a1c2b0d4e
DETECTION_ID_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{12}$")


def is_detection_id(text: str) -> bool:
    return bool(DETECTION_ID_RE.fullmatch(text or ""))


def ensure_reviews_table(db_path: str | Path) -> tuple[int, int]:
    """Bring an existing log to the current schema (it gains the reviews table). Returns (from, to)."""
    if not Path(db_path).is_file():
        raise StorageError(f"{db_path}: no detection log here")
    con = connect(db_path)
    try:
        if schema_version(con) < 1:
            raise StorageError(f"{db_path}: not an edgeav detection log (schema version 0)")
        return migrate(con)
    except sqlite3.DatabaseError as e:
        raise StorageError(f"{db_path}: cannot bring the log to the current schema: {e}") from None
    finally:
        con.close()


def set_review(
    db_path: str | Path, detection_id: str, verdict: str, reason: str | None = None, now_ns: int | None = None
) -> dict[str, Any]:
    """Store (or replace) the verdict on one detection. ConfigError on a bad verdict or id, StorageError when the
    detection is not in the log. Returns the stored review."""
    if verdict not in VERDICTS:
        raise ConfigError(f"review verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
    if not is_detection_id(detection_id):
        raise ConfigError(f"{detection_id!r} is not a detection id")
    reason = (reason or "").strip()[:REASON_MAX_CHARS] or None
    now = int(time.time_ns() if now_ns is None else now_ns)
    con = connect(db_path)
    try:
        with write_transaction(con):
            row = con.execute("SELECT label FROM detections WHERE id = ?", (detection_id,)).fetchone()
            if row is None:
                raise StorageError(f"no detection {detection_id} in {db_path}")
            con.execute(
                "INSERT INTO reviews (detection_id, verdict, label, reason, reviewed_utc_ns) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(detection_id) DO UPDATE SET verdict=excluded.verdict, reason=excluded.reason, "
                "reviewed_utc_ns=excluded.reviewed_utc_ns",
                (detection_id, verdict, row["label"], reason, now),
            )
    except sqlite3.DatabaseError as e:
        raise StorageError(f"{db_path}: cannot store the review: {e}") from None
    finally:
        con.close()
    return {"detection_id": detection_id, "verdict": verdict, "label": row["label"], "reason": reason, "utc_ns": now}


def clear_review(db_path: str | Path, detection_id: str) -> bool:
    """Remove the verdict on one detection; True when there was one."""
    if not is_detection_id(detection_id):
        raise ConfigError(f"{detection_id!r} is not a detection id")
    con = connect(db_path)
    try:
        with write_transaction(con):
            return con.execute("DELETE FROM reviews WHERE detection_id = ?", (detection_id,)).rowcount > 0
    except sqlite3.DatabaseError as e:
        raise StorageError(f"{db_path}: cannot clear the review: {e}") from None
    finally:
        con.close()


def ignored_classes(con: sqlite3.Connection) -> list[str]:
    """Labels someone marked `ignore_class` on any detection of theirs."""
    return [r[0] for r in con.execute("SELECT DISTINCT label FROM reviews WHERE verdict = 'ignore_class' ORDER BY 1")]


def has_reviews_table(con: sqlite3.Connection) -> bool:
    """False on a log older than schema 5 (a read-only reader cannot migrate it)."""
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone() is not None


__all__ = [
    "VERDICTS",
    "VERDICT_TITLES",
    "DETECTION_ID_RE",
    "is_detection_id",
    "ensure_reviews_table",
    "set_review",
    "clear_review",
    "ignored_classes",
    "has_reviews_table",
]
