"""Index files (CSV or JSONL): which columns mean what.

Roles and the column names that carry them (first match wins; two columns for one role is an error):

| role  | columns                       | meaning                                                        |
|-------|-------------------------------|----------------------------------------------------------------|
| image | image                         | photo, path relative to the index file's folder                |
| video | video, clip                   | video with sound                                               |
| audio | audio                         | recording                                                      |
| file  | file                          | any media file; its role follows its extension                 |
| label | label, class, slug            | class name                                                     |
| split | split                         | train / val / test                                             |
| group | group, recording, speaker     | what must not cross splits                                     |

Columns in `DataConfig.info_columns` (transcript, recordist, country, licence, species, ...) are informational and
ignored. Any other column is bad input: a warning counted in the summary, or a DataError under `strict`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from edgeav.errors import DataError

ROLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "video": ("video", "clip"),
    "audio": ("audio",),
    "file": ("file",),
    "label": ("label", "class", "slug"),
    "split": ("split",),
    "group": ("group", "recording", "speaker"),
}
SPLIT_VALUES = ("train", "val", "test")
DEFAULT_INDEX_NAMES = ("manifest.csv", "manifest.jsonl", "recordings.csv")


@dataclass
class IndexTable:
    path: Path
    columns: list[str]
    roles: dict[str, str]  # role -> column name
    unknown_columns: list[str]
    rows: list[dict[str, str]]  # each row: role -> value (strings, stripped; "" when empty)

    def has(self, role: str) -> bool:
        return role in self.roles


def find_index(root: Path, configured: str | None) -> Path | None:
    """The configured index file (must exist), else the first default name present at `root`, else None."""
    if configured:
        p = Path(configured)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DataError(f"index file {p} (data.index_file) not found")
        return p
    for name in DEFAULT_INDEX_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def _read_raw(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read index file: {e}") from None
    if suffix == ".jsonl":
        rows: list[dict[str, object]] = []
        columns: list[str] = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{i}: each line must be a JSON object")
            for k in obj:
                if k not in columns:
                    columns.append(k)
            rows.append(obj)
        return columns, rows
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
        return columns, rows
    raise DataError(f"{path}: index file must be .csv, .tsv or .jsonl")


def read_index(path: Path, info_columns: list[str]) -> IndexTable:
    columns, raw = _read_raw(path)
    if not columns:
        raise DataError(f"{path}: index file has no header / columns")
    lower = {c.lower(): c for c in columns}
    roles: dict[str, str] = {}
    for role, names in ROLE_COLUMNS.items():
        present = [lower[n] for n in names if n in lower]
        if len(present) > 1:
            # label: 'slug' beside 'label'/'class' is the usual (species name, folder slug) pair; the first wins
            if role != "label":
                raise DataError(f"{path}: columns {present} all give the {role}; keep one")
        if present:
            roles[role] = present[0]
    used = set(roles.values())
    info = {c.lower() for c in info_columns}
    label_aliases = {n for n in ROLE_COLUMNS["label"]}
    unknown = [c for c in columns if c not in used and c.lower() not in info and c.lower() not in label_aliases]
    rows = []
    for r in raw:
        rows.append({role: ("" if r.get(col) is None else str(r.get(col)).strip()) for role, col in roles.items()})
    return IndexTable(path=path, columns=columns, roles=roles, unknown_columns=unknown, rows=rows)
