"""Atomic file writes, shared by every stage: a temporary file in the destination's folder, then `os.replace`.

A reader (or a process killed part-way) sees either the old file or the whole new one, never a half file.
`durable=True` also fsyncs the data before the rename and the folder after it (checkpoints, engines, evidence): after
a power cut the new name then points at the whole new file, not at an empty one; a cache of derived data can skip it.
Temporary names are `.<name>.<random>.tmp` (`TEMP_SUFFIX`): a crash can leave one behind, a start-up sweep removes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)  # read once (os.umask both sets and returns it): new files get the mode open() would give
os.umask(_UMASK)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the folder's entries (a rename, a new name) durable. A no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` (created empty, so it is ours) for a writer that needs a path, not a
    file object (e.g. GStreamer's filesink); finish with `durable_replace`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    finally:
        os.close(fd)
    return Path(tmp)


def durable_replace(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync `tmp`, rename it to `path`, fsync the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it to `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; readers of the result expect open()'s mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), durable)


__all__ = ["atomic_write", "atomic_write_bytes", "durable_replace", "fsync_dir", "temp_path_for", "TEMP_SUFFIX"]
