"""What every data set layout shares: the layout registry, the context a builder reads the disk through (config,
windows, frame times, header probes, groups, skipped files), and the catalog a builder returns.

A layout is a function `(LayoutContext) -> Catalog` registered with `@LAYOUTS.register("name")`;
`LAYOUTS.create(name, ctx)` runs it, and an unknown name raises `UnknownNameError` with the valid names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeav.errors import DataError, MediaError
from edgeav.registry import Registry
from edgeav.schema.data import DataConfig
from edgeav.timebase import NS_PER_S, s_to_ns
from edgeav.train.data import media
from edgeav.train.data.records import ImageRef, Sample, Skipped
from edgeav.train.data.tables import IndexTable

log = logging.getLogger(__name__)

AUDIO_DIR_NAMES = ("audio", "recordings")
IMAGE_DIR_NAME = "images"

_warned_once: set[str] = set()


def warn_once(key: str, msg: str, *args: object) -> None:
    if key in _warned_once:
        return
    _warned_once.add(key)
    log.warning(msg, *args)


@dataclass(frozen=True)
class FileInfo:
    """Header facts about one media file kept in the data set (for the summary)."""

    file: str
    media: str  # "audio" | "image" | "video"
    duration_ns: int = 0
    rate_hz: int | None = None
    channels: int | None = None


@dataclass
class Catalog:
    """What a layout builder returns."""

    kind: str
    root: Path
    classes: list[str]
    samples: list[Sample]
    files: list[FileInfo]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # loud facts about the split (fallbacks), also in the summary
    index_file: str | None = None


class Problems:
    """Collects skipped files; under strict, the first one raises."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[Skipped] = []

    def skip(self, file: str | Path, reason: str, error: type[DataError] = MediaError) -> None:
        if self.strict:
            raise error(f"{file}: {reason}")
        log.warning("skipping %s: %s", file, reason)
        self.items.append(Skipped(str(file), reason))

    def media_error(self, file: str | Path, e: MediaError) -> None:
        msg = str(e)
        prefix = f"{file}: "
        reason = msg[len(prefix) :] if msg.startswith(prefix) else msg
        self.skip(file, reason)


class LayoutContext:
    """What a layout builder reads the disk through; collects the files kept, the skipped ones and the notes."""

    def __init__(self, cfg: DataConfig, root: Path, index_path: Path | None = None) -> None:
        self.cfg = cfg
        self.root = root  # a folder; paths in the summary and sample ids are relative to it
        self.index_path = index_path  # the manifest file when the data set was given as a file
        self.problems = Problems(cfg.strict)
        self.files: list[FileInfo] = []
        self.notes: list[str] = []
        self.window_ns = s_to_ns(cfg.window_s)
        self.hop_ns = s_to_ns(cfg.hop_s)
        self.label_rx = re.compile(cfg.label_regex) if cfg.label_regex else None
        self.group_rx = re.compile(cfg.group_regex) if cfg.group_regex else None

    def catalog(
        self,
        layout: str,
        classes: list[str],
        samples: list[Sample],
        index_path: Path | None = None,
        root: Path | None = None,
    ) -> Catalog:
        """The layout's result: its samples with the files kept, the skipped ones and the notes collected here."""
        return Catalog(
            layout,
            self.root if root is None else root,
            classes,
            samples,
            self.files,
            self.problems.items,
            self.notes,
            str(index_path) if index_path else None,
        )

    def rel(self, p: Path) -> str:
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def note(self, msg: str) -> None:
        """A loud fact about how the data was split: logged once per data set, kept in the summary."""
        warn_once(f"{self.root}|{msg}", "%s: %s", self.root, msg)
        self.notes.append(msg)

    def window_starts(self, duration_ns: int) -> list[int]:
        if duration_ns <= self.window_ns:
            return [0]
        n = 1 + (duration_ns - self.window_ns) // self.hop_ns
        return [i * self.hop_ns for i in range(n)]

    def frame_times(self, start_ns: int, duration_ns: int) -> tuple[int, ...]:
        if self.cfg.frames_per_window > 1:  # a clip: T consecutive frames at the frame rate from the window's start
            assert self.cfg.frame_rate_hz is not None
            return tuple(
                start_ns + int(round(k * NS_PER_S / self.cfg.frame_rate_hz)) for k in range(self.cfg.frames_per_window)
            )
        span = max(1, min(self.window_ns, duration_ns - start_ns))
        n = self.cfg.frames_per_clip
        return tuple(start_ns + span * (2 * i + 1) // (2 * n) for i in range(n))

    def probe_sound(self, p: Path, kind: str) -> media.MediaInfo | None:
        """Header of an audio or video file that must have sound; None (skipped) when it cannot serve."""
        try:
            info = media.probe(p)
        except MediaError as e:
            self.problems.media_error(p, e)
            return None
        if info.audio_rate_hz is None:
            self.problems.skip(p, "no audio track")
            return None
        if kind == "video" and not info.has_video:
            self.problems.skip(p, "no video track")
            return None
        if info.duration_ns <= 0:
            self.problems.skip(p, "zero-length audio (header duration 0)")
            return None
        self.files.append(FileInfo(str(p), kind, info.duration_ns, info.audio_rate_hz, info.audio_channels))
        return info

    def label_from_stem(self, p: Path) -> str | None:
        assert self.label_rx is not None
        m = self.label_rx.search(p.stem)
        return m.group(1) if m else None

    def group_for(self, p: Path, column_value: str = "") -> str:
        if column_value:
            return column_value
        if self.group_rx is not None:
            m = self.group_rx.search(p.stem)
            if m:
                return m.group(1)
            warn_once(
                f"{self.root}|group_regex",
                "%s: group_regex %r does not match %s (and maybe others): such a file is its own group",
                self.root,
                self.cfg.group_regex,
                p.name,
            )
        return self.rel(p)


def photo_sample(ctx: LayoutContext, path: Path, label: int, class_name: str, split: str) -> Sample:
    """One photo as an image-only example (its own group; id `<relative path>@0`), listed among the files read."""
    rel = ctx.rel(path)
    ctx.files.append(FileInfo(str(path), "image"))
    return Sample(
        id=f"{rel}@0",
        label=label,
        class_name=class_name,
        group=rel,
        split=split,
        image=ImageRef(str(path.resolve())),
    )


def check_unknown_columns(ctx: LayoutContext, table: IndexTable) -> None:
    for col in table.unknown_columns:
        ctx.problems.skip(
            table.path,
            f"unknown column {col!r} ignored (roles: image, video, audio, file, label, split, group; "
            f"informational: data.info_columns)",
            DataError,
        )


def media_files(folder: Path, want: str) -> tuple[list[Path], list[Path]]:
    """Files of media type `want` under `folder` (not recursive), and the other non-hidden files."""
    keep, other = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (keep if media.media_type(p) == want else other).append(p)
    return keep, other


LayoutBuilder = Callable[[LayoutContext], Catalog]
LAYOUTS: Registry[LayoutBuilder] = Registry("data set layout")
