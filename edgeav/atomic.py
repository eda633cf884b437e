"""Atomic file writes, shared by every stage: a temporary file in the destination's folder, then `os.replace`.

A reader (or a process killed part-way) sees either the old file or the whole new one, never a half file.
`durable=True` also fsyncs the data before the rename (checkpoints, engines); a cache of derived data can skip it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it to `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), durable)


__all__ = ["atomic_write", "atomic_write_bytes"]
