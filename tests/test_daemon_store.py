"""The detection log: WAL, batched transactions, migrations from an older schema, outbox in the same transaction,
queries by time, label and confidence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgeav.errors import ConfigError, StorageError
from edgeav.runtime.postprocess import Detection
from edgeav.runtime.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DetectionStore,
    integrity_check,
    parse_iso_utc,
    query_detections,
    schema_version,
)


def det(label: str = "crow", conf: float = 0.9, t_s: float = 1.0, mods=("audio", "image")) -> Detection:
    s = int(t_s * 1e9)
    return Detection(label=label, class_index=["crow", "finch", "owl"].index(label), start_ns=s, end_ns=s + 500_000_000,
                     start_utc=None, end_utc=None, confidence=conf, audio_confidence=0.8 if "audio" in mods else None,
                     image_confidence=0.7 if "image" in mods else None, modalities=tuple(mods), model_sha256="ab" * 32,
                     hits=1)


T0 = parse_iso_utc("2026-05-01T04:00:00Z")


def test_batches_commit_in_one_transaction_and_only_on_flush(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    committed: list[list[str]] = []
    st = DetectionStore(db, batch_max=3, batch_interval_s=3600, on_commit=committed.append)
    ids = [st.add(det(t_s=i), utc_ns=T0 + i * 10**9) for i in range(2)]
    assert not st.due() and st.maybe_flush() == []
    reader = sqlite3.connect(db)
    assert reader.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 0  # queued, not committed
    ids.append(st.add(det(t_s=2), utc_ns=T0 + 2 * 10**9))
    assert st.due()
    assert st.maybe_flush() == ids and committed == [ids] and st.commits == 1
    assert reader.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 3
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.add(det(t_s=9), utc_ns=T0 + 9 * 10**9)
    st.close()  # close flushes
    assert reader.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 4
    assert integrity_check(db) == "ok"


def test_outbox_rows_are_written_with_their_detection(tmp_path: Path) -> None:
    st = DetectionStore(tmp_path / "d.db")
    did = st.add(det(), utc_ns=T0, outbox_topics=["edgeav/unit/detection"])
    assert st.outbox_pending() == []  # nothing before the commit
    st.flush()
    (seq, d2, topic, payload), = st.outbox_pending()
    assert d2 == did and topic == "edgeav/unit/detection" and f'"id": "{did}"' in payload
    st.outbox_mark_sent([seq])
    assert st.outbox_pending() == []
    st.close()


def test_migration_from_version_1_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for stmt in MIGRATIONS[1]:
        con.execute(stmt)
    con.execute("PRAGMA user_version=1")
    con.execute("INSERT INTO detections (id, label, class_index, start_ns, end_ns, utc_ns, confidence, modalities, hits)"
                " VALUES ('old-1', 'owl', 2, 0, 1, ?, 0.7, 'audio', 1)", (T0,))
    con.commit()
    con.close()
    st = DetectionStore(db)
    assert st.migrated_from == 1 and schema_version(st.con) == SCHEMA_VERSION
    st.add(det("finch"), utc_ns=T0 + 10**9, audio_path="/e/x.wav")
    st.close()
    rows = query_detections(db)
    assert [r["id"] for r in rows][0] == "old-1" and rows[0]["audio_path"] is None
    assert rows[1]["audio_path"] == "/e/x.wav" and rows[1]["modalities"] == ["audio", "image"]


def test_newer_schema_and_bad_settings_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StorageError, match="newer edgeav"):
        DetectionStore(db)
    with pytest.raises(ConfigError, match="synchronous"):
        DetectionStore(tmp_path / "x.db", synchronous="OFF")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="junk.db"):
        DetectionStore(tmp_path / "junk.db")


def test_query_filters(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    st = DetectionStore(db)
    st.add(det("crow", 0.9), utc_ns=T0)
    st.add(det("finch", 0.6, mods=("audio",)), utc_ns=T0 + 3600 * 10**9)
    st.add(det("owl", 0.95), utc_ns=T0 + 7200 * 10**9)
    st.close()
    assert [r["label"] for r in query_detections(db)] == ["crow", "finch", "owl"]
    assert [r["label"] for r in query_detections(db, min_confidence=0.8)] == ["crow", "owl"]
    assert [r["label"] for r in query_detections(db, labels=["owl", "finch"])] == ["finch", "owl"]
    since, until = parse_iso_utc("2026-05-01T04:30:00Z"), parse_iso_utc("2026-05-01T06:00:00+00:00")
    assert [r["label"] for r in query_detections(db, since, until)] == ["finch"]
    assert query_detections(db, limit=1)[0]["label"] == "crow"
    assert query_detections(db, labels=["finch"])[0]["modalities"] == ["audio"]
    assert parse_iso_utc("2026-05-01") == parse_iso_utc("2026-05-01T00:00:00Z")
    with pytest.raises(ConfigError):
        parse_iso_utc("May 1st")
