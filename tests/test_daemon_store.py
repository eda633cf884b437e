"""The detection log: WAL, batched transactions, migrations from an older schema, outbox in the same transaction,
queries by time, label and confidence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from _daemon_fixtures import fill, real_tmpfs

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
    return Detection(
        label=label,
        class_index=["crow", "finch", "owl"].index(label),
        start_ns=s,
        end_ns=s + 500_000_000,
        start_utc=None,
        end_utc=None,
        confidence=conf,
        audio_confidence=0.8 if "audio" in mods else None,
        image_confidence=0.7 if "image" in mods else None,
        modalities=tuple(mods),
        model_sha256="ab" * 32,
        hits=1,
    )


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
    ((seq, d2, topic, payload),) = st.outbox_pending()
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
    con.execute(
        "INSERT INTO detections (id, label, class_index, start_ns, end_ns, utc_ns, confidence, modalities, hits)"
        " VALUES ('old-1', 'owl', 2, 0, 1, ?, 0.7, 'audio', 1)",
        (T0,),
    )
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


# -- full disk, bounded growth (issue 13) --------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):
    with real_tmpfs(tmp_path / "fs", 4096) as fs:
        yield fs


def test_full_disk_keeps_detections_bounded_drops_evidence_first_and_recovers(small_fs: Path, tmp_path: Path) -> None:
    ev = tmp_path / "ev"  # evidence elsewhere: deleting it must not give the log's file system space back here
    ev.mkdir()
    st = DetectionStore(small_fs / "d.db", max_pending=10)
    ok = st.add(det(), utc_ns=T0)
    assert st.flush() == [ok] and st.problem() is None
    files = []
    for i in range(30):
        f = ev / f"{i}.wav"
        f.write_bytes(b"x" * 1000)
        files.append(f)
    ballast = fill(small_fs)
    ids = []
    for i in range(30):
        ids.append(st.add(det(t_s=i), utc_ns=T0 + (i + 1) * 10**9, audio_path=str(files[i]), outbox_topics=["t/d"]))
        with pytest.raises(StorageError, match="database or disk is full"):
            st.flush()
    # bounded: the 20 oldest waiting detections are dropped, the evidence of the oldest survivors went first
    assert st.pending == 10 and st.dropped_detections == 20
    assert st.dropped_evidence == 25  # past half the bound: 20 of the dropped + 5 of the waiting lost their files
    assert [f.exists() for f in files] == [False] * 25 + [True] * 5
    problem = st.problem()
    assert problem is not None and problem.startswith("store: database or disk is full since ")
    ballast.unlink()
    assert st.flush() == ids[20:] and st.problem() is None  # space is back: the waiting ones commit by themselves
    rows = query_detections(small_fs / "d.db")
    assert [r["id"] for r in rows] == [ok] + ids[20:] and st.count() == 11
    assert [r["evidence_note"] or "" for r in rows[1:6]] == [rows[1]["evidence_note"]] * 5
    assert rows[1]["evidence_note"].startswith("dropped: the log could not be written for")
    assert rows[1]["audio_path"] is None and rows[6]["audio_path"] == str(files[25])
    assert len(st.outbox_pending()) == 10
    st.close()
    assert integrity_check(small_fs / "d.db") == "ok"


def test_outbox_write_on_a_full_disk_rolls_back_and_works_again(small_fs: Path) -> None:
    st = DetectionStore(small_fs / "d.db")
    for i in range(200):
        st.add(det(t_s=i), utc_ns=T0 + i * 10**9, outbox_topics=["t/d"])
    st.flush()
    st.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seqs = [r[0] for r in st.outbox_pending(limit=1000)]
    ballast = fill(small_fs)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        st.outbox_mark_sent(seqs)
    assert not st.con.in_transaction  # rolled back: a half-open transaction would fail every later write
    ballast.unlink()
    st.outbox_mark_sent(seqs)
    assert st.outbox_pending() == []
    st.close()


def test_write_transaction_rolls_back_a_statement_error_sqlite_does_not(tmp_path: Path) -> None:
    from edgeav.runtime.store import write_transaction

    st = DetectionStore(tmp_path / "d.db")
    st.add(det(), utc_ns=T0, outbox_topics=["t/d"])
    st.flush()
    with pytest.raises(sqlite3.IntegrityError):  # a statement error leaves SQLite's transaction open by itself
        with write_transaction(st.con):
            st.con.execute("UPDATE outbox SET sent_ns=1")
            st.con.execute(
                "INSERT INTO outbox (seq, detection_id, topic, payload, created_ns) "
                "SELECT seq, detection_id, topic, payload, created_ns FROM outbox"
            )
    assert not st.con.in_transaction and len(st.outbox_pending()) == 1  # the whole transaction is undone
    st.outbox_mark_sent([st.outbox_pending()[0][0]])  # and the next write works
    st.close()


def test_prune_archives_old_detections_then_deletes_them_and_sent_outbox_rows(tmp_path: Path) -> None:
    import time

    from edgeav.runtime.growth import StoreUpkeep, archive_dir_for, read_archive
    from edgeav.schema.daemon import StoreConfig

    db = tmp_path / "d.db"
    st = DetectionStore(db)
    day_ns = 86_400 * 10**9
    now = time.time_ns() + 60 * 10**9  # after the outbox rows are marked sent below
    t0 = now - 10 * day_ns + 3600 * 10**9  # 10 days ago (+1 h)
    ids = [st.add(det(t_s=i), utc_ns=t0 + i * day_ns // 4, outbox_topics=["t/d"]) for i in range(40)]  # 4 a day
    st.add(det(), utc_ns=t0, audio_path=str(tmp_path / "kept.wav"))  # old, but still links evidence
    st.flush()
    assert st.count() == 41
    seqs = [r[0] for r in st.outbox_pending(limit=1000)]
    st.outbox_mark_sent(seqs[:30])
    up = StoreUpkeep(st, StoreConfig(keep_days=3.0, outbox_keep_days=0.0), wall_ns=lambda: now)
    done = up.prune()
    assert done == {"outbox": 30, "detections": 28}  # the first 7 days (28 rows); the row with evidence stays
    assert st.count() == 13 == len(query_detections(db, limit=None))
    assert len(st.outbox_pending(limit=1000)) == 10  # unacknowledged messages are never pruned
    archived = read_archive(archive_dir_for(db))
    assert [r["id"] for r in archived] == ids[:28] and archived[0]["label"] == "crow"
    days = {time.strftime("%Y-%m-%d", time.gmtime(r["utc_ns"] // 10**9)) for r in archived}
    assert sorted(p.name for p in archive_dir_for(db).iterdir()) == [f"detections-{d}.jsonl.gz" for d in sorted(days)]
    assert up.prune() == {"outbox": 0, "detections": 0}
    st.add(det(), utc_ns=t0 + 8, outbox_topics=[])  # a late one of the first day: appended to that day's file
    st.flush()
    up.prune()
    assert len(read_archive(archive_dir_for(db))) == 29
    st.close()


def test_evidence_rows_are_read_a_page_at_a_time(tmp_path: Path) -> None:
    st = DetectionStore(tmp_path / "d.db")
    for i in range(25):
        st.add(det(t_s=i), utc_ns=T0 + (i % 5) * 10**9, audio_path=f"/e/{i}.wav")  # equal times: paged by (utc, id)
    st.flush()
    rows = st.evidence_rows(page_rows=4)
    assert not isinstance(rows, list)
    got = [r["id"] for r in rows]
    assert len(got) == 25 == len(set(got)) and got == [r["id"] for r in query_detections(tmp_path / "d.db")]
    st.close()


def test_outbox_pending_is_counted_in_memory_not_queried(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")
    import socket

    from edgeav.runtime.mqtt import MqttPublisher
    from edgeav.schema.daemon import MqttConfig

    st = DetectionStore(tmp_path / "d.db")
    for i in range(5):
        st.add(det(t_s=i), utc_ns=T0 + i, outbox_topics=["t/d"])
    st.flush()
    with socket.socket() as s:  # a port nobody listens on: the publisher keeps trying, rows wait
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pub = MqttPublisher(MqttConfig(enabled=True, port=port), tmp_path / "d.db", outbox_added=lambda: st.outbox_added)
    pub.start()
    try:
        statements: list[str] = []
        pub._con.set_trace_callback(statements.append)
        assert pub.pending() == 5
        for i in range(3):
            st.add(det(t_s=10 + i), utc_ns=T0 + 10 + i, outbox_topics=["t/d"])
        st.flush()
        assert [pub.pending() for _ in range(100)] == [8] * 100
        assert not [q for q in statements if "COUNT" in q.upper()]  # the 50 ms loop no longer scans the outbox
    finally:
        pub.stop(timeout_s=0.2)
        st.close()
