"""What one web view serves: the log, the evidence folder, who may use it, and where its live state comes from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WebSettings:
    db_path: Path
    evidence_dir: Path  # evidence files are served only from under here
    host: str = "127.0.0.1"
    password: str | None = None  # None: no login (allowed on loopback only)
    page_rows: int = 50
    status: Callable[[], dict[str, Any]] | None = None  # the unit's live state (the daemon's); None: the log's only


__all__ = ["WebSettings"]
