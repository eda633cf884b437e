"""What a command handler returns: figures for `--json`, and the same in words for a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CommandResult:
    data: dict[str, Any] = field(default_factory=dict)  # printed as one JSON object with --json
    text: str = ""  # printed otherwise
    exit_code: int = 0
