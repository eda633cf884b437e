"""Reviews (schema 5): a log of schema 4 gains the table, a verdict is stored with time and reason, replaces the
previous one, comes out of `edgeav detections` (CSV and JSON), and retention keeps a confirmed detection's
evidence while it deletes the others'."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from _daemon_fixtures import stored_detection

from edgeav.cli import main
from edgeav.errors import ConfigError, StorageError
from edgeav.runtime.evidence import EvidenceStore, write_wav
from edgeav.runtime.store import MIGRATIONS, SCHEMA_VERSION, DetectionStore, new_detection_id, query_detections
from edgeav.runtime.store_reviews import clear_review, ensure_reviews_table, ignored_classes, set_review
from edgeav.schema.daemon import EvidenceConfig

T0 = 1_780_000_000 * 10**9


def _log(db: Path, n: int = 4, evidence: Path | None = None) -> list[str]:
    store = DetectionStore(db)
    ids = []
    for i in range(n):
        utc = T0 + i * 10**9
        did = new_detection_id(utc)
        wav = None
        if evidence is not None:
            wav = evidence / "2026-05-28" / f"{did}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            write_wav(wav, np.zeros(1600, np.float32), 16000)
        store.add(
            stored_detection("crow" if i % 2 == 0 else "finch", i, ("audio",)),
            detection_id=did,
            utc_ns=utc,
            audio_path=wav and str(wav),
        )
        ids.append(did)
    store.close()
    return ids


def test_a_schema_4_log_gains_reviews_and_a_verdict_is_stored_and_replaced(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    con = sqlite3.connect(db)
    for v in range(1, 5):
        for stmt in MIGRATIONS[v]:
            con.execute(stmt)
    con.execute("PRAGMA user_version=4")
    con.execute(
        "INSERT INTO detections (id, label, class_index, start_ns, end_ns, utc_ns, confidence, modalities, hits) "
        "VALUES ('20260528T000000000Z-0123456789ab', 'crow', 0, 0, 1, ?, 0.9, 'audio', 1)",
        (T0,),
    )
    con.commit()
    con.close()
    assert ensure_reviews_table(db) == (4, SCHEMA_VERSION)
    did = "20260528T000000000Z-0123456789ab"
    assert query_detections(db)[0]["review"] is None
    set_review(db, did, "false_positive", "  a <b>car</b> horn  ", now_ns=T0 + 5)
    r = query_detections(db)[0]
    assert (r["review"], r["review_reason"], r["reviewed_utc_ns"]) == ("false_positive", "a <b>car</b> horn", T0 + 5)
    set_review(db, did, "confirmed", None, now_ns=T0 + 9)
    con = sqlite3.connect(db)
    assert con.execute("SELECT verdict, reason, reviewed_utc_ns FROM reviews").fetchall() == [
        ("confirmed", None, T0 + 9)
    ]
    set_review(db, did, "ignore_class")
    con.row_factory = sqlite3.Row
    assert ignored_classes(con) == ["crow"]
    assert clear_review(db, did) and query_detections(db)[0]["review"] is None
    with pytest.raises(ConfigError, match="valid: confirmed"):
        set_review(db, did, "maybe")
    with pytest.raises(ConfigError, match="not a detection id"):
        set_review(db, "../../etc/passwd", "confirmed")
    with pytest.raises(StorageError, match="no detection"):
        set_review(db, "20260528T000000000Z-ffffffffffff", "confirmed")


def test_detections_csv_and_json_carry_the_review(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "d.db"
    ids = _log(db, 3)
    set_review(db, ids[1], "false_positive", "wind, not a finch", now_ns=T0 + 77)
    assert main(["detections", "--db", str(db), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[1]]["review"] == "false_positive" and by_id[ids[1]]["review_reason"] == "wind, not a finch"
    assert by_id[ids[1]]["reviewed_utc_ns"] == str(T0 + 77)
    assert by_id[ids[0]]["review"] == "" and len(rows) == 3
    assert main(["detections", "--db", str(db), "--format", "json"]) == 0
    js = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert js[ids[1]]["review"] == "false_positive" and js[ids[2]]["review"] is None


def test_retention_keeps_a_confirmed_detections_evidence(tmp_path: Path) -> None:
    db, root = tmp_path / "d.db", tmp_path / "evidence"
    ids = _log(db, 4, evidence=root)
    set_review(db, ids[0], "confirmed", "heard it myself")
    set_review(db, ids[1], "false_positive")
    store = DetectionStore(db)

    def rows():
        store.flush()
        return store.evidence_rows()

    cfg = EvidenceConfig(dir=str(root), image_format="none", max_age_days=1.0)
    ev = EvidenceStore(root, cfg, 16000, rows, lambda i, r: store.update_evidence(i, None, None, f"deleted: {r}"))
    deleted = ev.apply_retention(force=True, now_ns=T0 + 10 * 86_400 * 10**9)  # every set is 10 days old
    store.close()
    assert deleted == 3
    left = {p.stem for p in root.rglob("*.wav")}
    assert left == {ids[0]}
    after = {r["id"]: r for r in query_detections(db)}
    assert after[ids[0]]["audio_path"] and after[ids[1]]["audio_path"] is None
