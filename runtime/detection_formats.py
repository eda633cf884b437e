"""Detection tables in the formats bird-sound people open: Raven selection tables and Audacity label tracks.

The layouts follow what BirdNET-Analyzer writes, so that a table from edgeav opens in the same tools and merges
with BirdNET's tables:

- Raven selection table (`*.selection.table.txt`): tab-separated, one header line with the columns of
  `RAVEN_COLUMNS`; each row is one detection, numbered from 1 in the order given; View is "Spectrogram 1", Channel 1;
  times in seconds from the start of the file; Confidence with 4 decimals; Begin Path the media file; File Offset (s)
  the begin time within that file. A table with no detection is the header line alone.
- Audacity labels (`*.labels.txt`): no header; `begin<TAB>end<TAB>label<TAB>confidence` per detection, the label's
  "Scientific_Common" underscore written as ", " as BirdNET does.

Both writers take any iterable of `DetectionRow` and either a path (written atomically: a reader never sees half a
table) or an open text stream.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from edgeav.atomic import atomic_write
from edgeav.errors import DataError

RAVEN_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Common Name",
    "Species Code",
    "Confidence",
    "Begin Path",
    "File Offset (s)",
)
RAVEN_VIEW = "Spectrogram 1"
RAVEN_SUFFIX = ".selection.table.txt"
AUDACITY_SUFFIX = ".labels.txt"


@dataclass(frozen=True)
class DetectionRow:
    """One detection as the table formats see it. Times are seconds from the start of the media file.

    `label` is the class name. A BirdNET-style "Scientific name_Common name" label (a binomial with a space before the
    first underscore) gives its common half to Raven's Common Name column and is written "Scientific, Common" in
    Audacity, as BirdNET does; any other label ("speaker_3", "dog") is written as it is. `common_name` overrides
    that; `species_code` (e.g. an eBird code) defaults to the label; `file_offset_s` to `begin_s`.
    `high_freq_hz` is usually the Nyquist frequency of the file (half its sample rate).
    """

    begin_s: float
    end_s: float
    label: str
    confidence: float
    path: str = ""
    low_freq_hz: float = 0.0
    high_freq_hz: float = 0.0
    species_code: str | None = None
    file_offset_s: float | None = None
    channel: int = 1
    common_name: str | None = None

    @property
    def birdnet_style(self) -> bool:
        return birdnet_names(self.label) is not None

    @property
    def raven_common_name(self) -> str:
        if self.common_name is not None:
            return self.common_name
        names = birdnet_names(self.label)
        return names[1] if names is not None else self.label

    @property
    def audacity_label(self) -> str:
        return self.label.replace("_", ", ", 1) if self.birdnet_style else self.label


def birdnet_names(label: str) -> tuple[str, str] | None:
    """(scientific, common) of a BirdNET label "Scientific name_Common name"; None for any other label."""
    scientific, sep, common = label.partition("_")
    return (scientific, common) if sep and " " in scientific else None


def _seconds(value: float) -> str:
    """Seconds as BirdNET prints them: the shortest decimal of the value rounded to 0.1 ms ("3.0", "1.5")."""
    return repr(round(float(value), 4) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _hertz(value: float) -> str:
    return str(int(round(float(value))))


def _clean(text: str) -> str:
    """A cell may not hold the separators of the table (tab, newline)."""
    return " ".join(str(text).replace("\t", " ").splitlines())


def raven_lines(rows: Iterable[DetectionRow]) -> Iterable[str]:
    """The lines (each ending in a newline) of one Raven selection table: the header, then one per row."""
    yield "\t".join(RAVEN_COLUMNS) + "\n"
    for selection, row in enumerate(rows, start=1):
        offset = row.begin_s if row.file_offset_s is None else row.file_offset_s
        code = row.label if row.species_code is None else row.species_code
        cells = (
            str(selection),
            RAVEN_VIEW,
            str(int(row.channel)),
            _seconds(row.begin_s),
            _seconds(row.end_s),
            _hertz(row.low_freq_hz),
            _hertz(row.high_freq_hz),
            _clean(row.raven_common_name),
            _clean(code),
            f"{float(row.confidence):.4f}",
            _clean(row.path),
            _seconds(offset),
        )
        yield "\t".join(cells) + "\n"


def audacity_lines(rows: Iterable[DetectionRow]) -> Iterable[str]:
    """The lines of one Audacity label file: `begin<TAB>end<TAB>label<TAB>confidence` per row, no header."""
    for row in rows:
        label = _clean(row.audacity_label)
        yield f"{_seconds(row.begin_s)}\t{_seconds(row.end_s)}\t{label}\t{float(row.confidence):.4f}\n"


def _write(lines: Iterable[str], out: str | os.PathLike | TextIO) -> Path | None:
    if isinstance(out, (str, os.PathLike)):
        text = "".join(lines).encode("utf-8")
        return atomic_write(out, lambda f: f.write(text), durable=False)
    for line in lines:
        out.write(line)
    return None


def write_raven(rows: Iterable[DetectionRow], out: str | os.PathLike | TextIO) -> Path | None:
    """Write a Raven selection table to a path (atomically; returns the path) or to an open text stream."""
    return _write(raven_lines(rows), out)


def write_audacity(rows: Iterable[DetectionRow], out: str | os.PathLike | TextIO) -> Path | None:
    """Write Audacity labels to a path (atomically; returns the path) or to an open text stream."""
    return _write(audacity_lines(rows), out)


def read_raven(source: str | os.PathLike | TextIO) -> list[DetectionRow]:
    """Read a Raven selection table (ours or BirdNET-Analyzer's) back into rows; a missing column is a DataError."""
    text = Path(source).read_text(encoding="utf-8") if isinstance(source, (str, os.PathLike)) else source.read()
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in RAVEN_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"not a Raven selection table: missing column(s) {missing}")
    rows = []
    for rec in reader:
        common, code = rec["Common Name"], rec["Species Code"]
        rows.append(
            DetectionRow(
                begin_s=float(rec["Begin Time (s)"]),
                end_s=float(rec["End Time (s)"]),
                label=common,
                confidence=float(rec["Confidence"]),
                path=rec["Begin Path"],
                low_freq_hz=float(rec["Low Freq (Hz)"]),
                high_freq_hz=float(rec["High Freq (Hz)"]),
                species_code=code,
                file_offset_s=float(rec["File Offset (s)"]),
                channel=int(rec["Channel"]),
            )
        )
    return rows


def read_audacity(source: str | os.PathLike | TextIO) -> list[DetectionRow]:
    """Read Audacity labels (3 or 4 tab-separated columns; confidence 1.0 where absent)."""
    text = Path(source).read_text(encoding="utf-8") if isinstance(source, (str, os.PathLike)) else source.read()
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):  # "\" lines carry a label's frequency range in Audacity
            continue
        cells = line.split("\t")
        if len(cells) < 3:
            raise DataError(f"Audacity label line {n} has {len(cells)} column(s), expected begin, end, label")
        conf = float(cells[3]) if len(cells) > 3 and cells[3] else 1.0
        rows.append(DetectionRow(float(cells[0]), float(cells[1]), cells[2], conf))
    return rows


__all__ = [
    "AUDACITY_SUFFIX",
    "DetectionRow",
    "RAVEN_COLUMNS",
    "RAVEN_SUFFIX",
    "RAVEN_VIEW",
    "audacity_lines",
    "birdnet_names",
    "raven_lines",
    "read_audacity",
    "read_raven",
    "write_audacity",
    "write_raven",
]
