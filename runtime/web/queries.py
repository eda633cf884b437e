"""What the web view reads from the detection log: a filtered page of detections (newest first, keyset paging), one
detection with its review and neighbours, and the counts the charts draw.

Every query runs on a read-only connection of the request's thread (WAL: the daemon's writer is never blocked) and
takes its values as SQL parameters, never as text pasted into the statement. A page costs one indexed range scan:
no COUNT(*) over the log, so a page of a log of 100,000 detections answers as fast as one of 100.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from edgeav.errors import ConfigError
from edgeav.runtime.postprocess import utc_iso
from edgeav.runtime.store import parse_iso_utc
from edgeav.runtime.store_reviews import VERDICTS, is_detection_id

REVIEW_FILTERS = ("", "unreviewed", *VERDICTS)
MODALITY_FILTERS = ("", "audio,image", "audio", "image")
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
CHART_DAYS = 30

_LIST_COLS = (
    "d.id, d.label, d.utc_ns, d.end_utc, d.confidence, d.audio_confidence, d.image_confidence, d.modalities, "
    "d.image_path IS NOT NULL AS has_image, d.audio_path IS NOT NULL AS has_audio, r.verdict AS review"
)


@dataclass
class Filters:
    """The detections page's query string, checked (ConfigError names the bad parameter)."""

    label: str = ""
    since: str = ""
    until: str = ""
    min_confidence: float = 0.0
    modalities: str = ""
    review: str = ""
    show_ignored: bool = False
    before: str = ""  # cursor "utc_ns:id": the page of detections older than this one
    after: str = ""  # cursor: the page newer than this one
    since_ns: int | None = field(default=None, repr=False)
    until_ns: int | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, args: Any) -> Filters:
        f = cls(
            label=args.get("label", "").strip(),
            since=args.get("since", "").strip(),
            until=args.get("until", "").strip(),
            modalities=args.get("modalities", ""),
            review=args.get("review", ""),
            show_ignored=args.get("show_ignored", "") in ("1", "on", "true"),
            before=args.get("before", ""),
            after=args.get("after", ""),
        )
        mc = args.get("min_confidence", "").strip()
        try:
            f.min_confidence = float(mc) if mc else 0.0
        except ValueError:
            raise ConfigError(f"min_confidence {mc!r} is not a number") from None
        if not 0.0 <= f.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence {mc} is outside [0, 1]")
        if f.modalities not in MODALITY_FILTERS:
            raise ConfigError(f"modalities {f.modalities!r}; valid: audio,image, audio, image")
        if f.review not in REVIEW_FILTERS:
            raise ConfigError(f"review {f.review!r}; valid: {', '.join(REVIEW_FILTERS[1:])}")
        f.since_ns = parse_iso_utc(f.since) if f.since else None
        f.until_ns = parse_iso_utc(f.until) if f.until else None
        for c in (f.before, f.after):
            if c:
                parse_cursor(c)
        return f

    def query_args(self, **change: Any) -> dict[str, str]:
        """The filters as query-string arguments (empty ones left out), with `change` applied: for links."""
        d = {
            "label": self.label,
            "since": self.since,
            "until": self.until,
            "min_confidence": f"{self.min_confidence:g}" if self.min_confidence else "",
            "modalities": self.modalities,
            "review": self.review,
            "show_ignored": "1" if self.show_ignored else "",
        }
        d.update(change)
        return {k: v for k, v in d.items() if v}


def parse_cursor(text: str) -> tuple[int, str]:
    ts, _, did = text.partition(":")
    if not ts.isdigit() or not is_detection_id(did):
        raise ConfigError("bad page cursor")
    return int(ts), did


def cursor_of(row: Any) -> str:
    return f"{int(row['utc_ns'])}:{row['id']}"


def _where(f: Filters) -> tuple[list[str], list[Any]]:
    where, params = ["d.confidence >= ?"], [f.min_confidence]
    if f.label:
        where.append("d.label = ?")
        params.append(f.label)
    if f.since_ns is not None:
        where.append("d.utc_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        where.append("d.utc_ns < ?")
        params.append(f.until_ns)
    if f.modalities:
        where.append("d.modalities = ?")
        params.append(f.modalities)
    if f.review == "unreviewed":
        where.append("r.verdict IS NULL")
    elif f.review:
        where.append("r.verdict = ?")
        params.append(f.review)
    if not f.show_ignored and f.review != "ignore_class" and not f.label:
        where.append("d.label NOT IN (SELECT label FROM reviews WHERE verdict = 'ignore_class')")
    return where, params


def detection_page(con: sqlite3.Connection, f: Filters, rows: int) -> dict[str, Any]:
    """One page of detections, newest first, with cursors to the older and the newer page (None at either end)."""
    where, params = _where(f)
    newer_first = True
    if f.after:
        where.append("(d.utc_ns, d.id) > (?, ?)")
        params.extend(parse_cursor(f.after))
        newer_first = False
    elif f.before:
        where.append("(d.utc_ns, d.id) < (?, ?)")
        params.extend(parse_cursor(f.before))
    order = "DESC" if newer_first else "ASC"
    sql = (
        f"SELECT {_LIST_COLS} FROM detections d LEFT JOIN reviews r ON r.detection_id = d.id "
        f"WHERE {' AND '.join(where)} ORDER BY d.utc_ns {order}, d.id {order} LIMIT ?"
    )
    got = [dict(r) for r in con.execute(sql, [*params, rows + 1])]
    more = len(got) > rows
    got = got[:rows]
    if not newer_first:
        got.reverse()
    for r in got:
        r["time"] = r["end_utc"] or utc_iso(r["utc_ns"])
        r["modalities"] = [m for m in (r["modalities"] or "").split(",") if m]
    # older page: there is one when this page was cut (newest-first) or when we came from an older page (after)
    older = cursor_of(got[-1]) if got and (more if newer_first else True) else None
    newer = cursor_of(got[0]) if got and ((more if not newer_first else False) or bool(f.before)) else None
    return {"rows": got, "older": older, "newer": newer}


def labels(con: sqlite3.Connection) -> list[str]:
    """Every class in the log (read off the label index)."""
    return [r[0] for r in con.execute("SELECT label FROM detections GROUP BY label ORDER BY label")]


def detection(con: sqlite3.Connection, did: str) -> dict[str, Any] | None:
    """One detection with its review and the ids of the previous (older) and next (newer) detection."""
    r = con.execute(
        "SELECT d.*, r.verdict AS review, r.reason AS review_reason, r.reviewed_utc_ns FROM detections d "
        "LEFT JOIN reviews r ON r.detection_id = d.id WHERE d.id = ?",
        (did,),
    ).fetchone()
    if r is None:
        return None
    d = dict(r)
    d["modalities"] = [m for m in (d["modalities"] or "").split(",") if m]
    d["time"] = d["end_utc"] or utc_iso(d["utc_ns"])
    d["reviewed_utc"] = utc_iso(d["reviewed_utc_ns"])
    key = (d["utc_ns"], did)
    prev = con.execute(
        "SELECT id FROM detections WHERE (utc_ns, id) < (?, ?) ORDER BY utc_ns DESC, id DESC LIMIT 1", key
    ).fetchone()
    nxt = con.execute(
        "SELECT id FROM detections WHERE (utc_ns, id) > (?, ?) ORDER BY utc_ns, id LIMIT 1", key
    ).fetchone()
    d["prev_id"], d["next_id"] = (prev[0] if prev else None), (nxt[0] if nxt else None)
    d["ignored_class"] = (
        con.execute("SELECT 1 FROM reviews WHERE verdict = 'ignore_class' AND label = ?", (d["label"],)).fetchone()
        is not None
    )
    return d


def chart_counts(con: sqlite3.Connection, days: int = CHART_DAYS) -> dict[str, Any]:
    """Detections per class per hour of day (UTC) and per day, over the `days` days that end with the newest
    detection's day (on a running unit: the last 30 days). False positives and ignored classes are left out."""
    newest = con.execute("SELECT MAX(utc_ns) FROM detections").fetchone()[0]
    if newest is None:
        return {"labels": [], "hours": {}, "days": [], "per_day": {}, "first_day": None, "last_day": None}
    last_day = int(newest) // DAY_NS
    first_day = last_day - days + 1
    keep = (
        "d.utc_ns >= ? AND d.id NOT IN (SELECT detection_id FROM reviews WHERE verdict = 'false_positive') "
        "AND d.label NOT IN (SELECT label FROM reviews WHERE verdict = 'ignore_class')"
    )
    since = first_day * DAY_NS
    hours: dict[str, list[int]] = {}
    per_day: dict[str, list[int]] = {}
    # one pass over the range: counts per class per hour since the epoch, summed here by hour of day and by day
    for label, hour, n in con.execute(
        f"SELECT d.label, d.utc_ns / {HOUR_NS}, COUNT(*) FROM detections d WHERE {keep} GROUP BY 1, 2", (since,)
    ):
        day, h = divmod(int(hour), 24)
        hours.setdefault(label, [0] * 24)[h] += int(n)
        per_day.setdefault(label, [0] * days)[day - first_day] += int(n)
    day_names = [_dt.date.fromordinal(_EPOCH_ORD + d).isoformat() for d in range(first_day, last_day + 1)]
    return {
        "labels": sorted(hours),
        "hours": hours,
        "days": day_names,
        "per_day": per_day,
        "first_day": day_names[0],
        "last_day": day_names[-1],
    }


_EPOCH_ORD = _dt.date(1970, 1, 1).toordinal()


def log_summary(con: sqlite3.Connection) -> dict[str, Any]:
    """What the log itself says about the unit (for the live page of `edgeav serve`, which has no daemon)."""
    newest = con.execute("SELECT utc_ns, label FROM detections ORDER BY utc_ns DESC, id DESC LIMIT 1").fetchone()
    run = con.execute("SELECT run_id, started_utc, source FROM runs ORDER BY started_utc DESC LIMIT 1").fetchone()
    return {
        "newest_detection_utc": utc_iso(newest[0]) if newest else None,
        "newest_detection_label": newest[1] if newest else None,
        "last_run": dict(run) if run else None,
    }


__all__ = [
    "Filters",
    "detection_page",
    "detection",
    "labels",
    "chart_counts",
    "log_summary",
    "REVIEW_FILTERS",
    "MODALITY_FILTERS",
]
