"""The reader side of the detection log: queries by time, label and confidence; the integrity check.

Readers open their own read-only connection (WAL: they never block the daemon's writer). `edgeav.runtime.store`
re-exports both functions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeav.errors import StorageError
from edgeav.runtime.store_reviews import has_reviews_table
from edgeav.runtime.store_schema import COLUMNS, connect, schema_version

# what each detection of `query_detections` carries of its review (schema 5); None where it has none
REVIEW_COLUMNS = ("review", "review_reason", "reviewed_utc_ns")


def query_detections(
    path: str | Path,
    since_utc_ns: int | None = None,
    until_utc_ns: int | None = None,
    labels: Sequence[str] | None = None,
    min_confidence: float = 0.0,
    limit: int | None = 1000,
) -> list[dict[str, Any]]:
    """Detections in [since, until) (UTC ns of the detection), oldest first."""
    con = connect(path, readonly=True)
    try:
        if schema_version(con) < 1:
            raise StorageError(f"{path}: not an edgeav detection log (schema version 0)")
        have = {r[1] for r in con.execute("PRAGMA table_info(detections)")}
        cols = [c for c in COLUMNS if c in have]
        where, params = ["d.confidence >= ?"], [float(min_confidence)]
        if since_utc_ns is not None:
            where.append("d.utc_ns >= ?")
            params.append(int(since_utc_ns))
        if until_utc_ns is not None:
            where.append("d.utc_ns < ?")
            params.append(int(until_utc_ns))
        if labels:
            where.append(f"d.label IN ({', '.join('?' * len(labels))})")
            params.extend(labels)
        # schema 5: each detection's review (verdict, reason, time) comes along; None where none (or an older log)
        reviewed = has_reviews_table(con)
        review_cols = REVIEW_COLUMNS if reviewed else ()
        picked = ", ".join(
            [f"d.{c}" for c in cols] + (["r.verdict", "r.reason", "r.reviewed_utc_ns"] if reviewed else [])
        )
        src = "detections d LEFT JOIN reviews r ON r.detection_id = d.id" if reviewed else "detections d"
        sql = f"SELECT {picked} FROM {src} WHERE {' AND '.join(where)} ORDER BY d.utc_ns, d.id"
        if limit is not None and limit > 0:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = con.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{path}: cannot read the detection log: {e}") from None
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            d.update(dict.fromkeys(REVIEW_COLUMNS), **dict(zip(review_cols, r[len(cols) :])))
            d["modalities"] = [m for m in (d.get("modalities") or "").split(",") if m]
            out.append(d)
        return out
    finally:
        con.close()


def integrity_check(path: str | Path) -> str:
    con = connect(path, readonly=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


__all__ = ["query_detections", "integrity_check", "REVIEW_COLUMNS"]
