"""Raven selection tables and Audacity labels as BirdNET-Analyzer writes them (runtime/detection_formats.py)."""

from __future__ import annotations

import io

import pytest

from edgeav.errors import DataError
from edgeav.runtime.detection_formats import (
    RAVEN_COLUMNS,
    DetectionRow,
    read_audacity,
    read_raven,
    write_audacity,
    write_raven,
)

ROWS = [
    DetectionRow(0.0, 3.0, "Turdus merula_Eurasian Blackbird", 0.91234, "/data/a.WAV", 0, 24000, "eurbla"),
    DetectionRow(3.0, 6.0, "Erithacus rubecula_European Robin", 0.5, "/data/a.WAV", 150, 15000.4),
    DetectionRow(1.5, 4.5, "speaker_3", 0.123456, "/data/b.flac", file_offset_s=61.5),
]


def test_raven_table_has_birdnets_columns_and_rows(tmp_path):
    path = write_raven(ROWS, tmp_path / "a.selection.table.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
        "Common Name\tSpecies Code\tConfidence\tBegin Path\tFile Offset (s)"
    )
    assert lines[0].split("\t") == list(RAVEN_COLUMNS)
    assert lines[1].split("\t") == [
        "1",
        "Spectrogram 1",
        "1",
        "0.0",
        "3.0",
        "0",
        "24000",
        "Eurasian Blackbird",
        "eurbla",
        "0.9123",
        "/data/a.WAV",
        "0.0",
    ]
    # no species code: the label; frequencies whole hertz; the file offset defaults to the begin time
    assert lines[2].split("\t")[5:9] == ["150", "15000", "European Robin", "Erithacus rubecula_European Robin"]
    assert lines[2].split("\t")[11] == "3.0"
    # a label that is no "Scientific name_Common name" stays whole
    assert lines[3].split("\t")[0] == "3" and lines[3].split("\t")[7] == "speaker_3"
    assert lines[3].split("\t")[11] == "61.5"
    assert len(lines) == 4


def test_empty_raven_table_is_the_header_alone():
    buf = io.StringIO()
    write_raven([], buf)
    assert buf.getvalue() == "\t".join(RAVEN_COLUMNS) + "\n"


def test_audacity_labels_as_birdnet_writes_them(tmp_path):
    path = write_audacity(ROWS, tmp_path / "a.labels.txt")
    assert path.read_text(encoding="utf-8") == (
        "0.0\t3.0\tTurdus merula, Eurasian Blackbird\t0.9123\n"
        "3.0\t6.0\tErithacus rubecula, European Robin\t0.5000\n"
        "1.5\t4.5\tspeaker_3\t0.1235\n"
    )


def test_tables_read_back(tmp_path):
    raven = read_raven(write_raven(ROWS, tmp_path / "t.txt"))
    assert [(r.begin_s, r.end_s, r.label, r.path, r.file_offset_s) for r in raven] == [
        (0.0, 3.0, "Eurasian Blackbird", "/data/a.WAV", 0.0),
        (3.0, 6.0, "European Robin", "/data/a.WAV", 3.0),
        (1.5, 4.5, "speaker_3", "/data/b.flac", 61.5),
    ]
    assert [r.confidence for r in raven] == [0.9123, 0.5, 0.1235]
    labels = read_audacity(write_audacity(ROWS, tmp_path / "l.txt"))
    assert [(r.begin_s, r.label, r.confidence) for r in labels][0] == (0.0, "Turdus merula, Eurasian Blackbird", 0.9123)


def test_cells_never_break_the_table():
    buf = io.StringIO()
    write_raven([DetectionRow(0, 1, "a\tb\nc", 0.5, "x\ty")], buf)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and len(lines[1].split("\t")) == len(RAVEN_COLUMNS)


def test_reading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "x.txt").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="not a Raven selection table"):
        read_raven(tmp_path / "x.txt")
