"""`load_dataset(cfg, path)` -> `AVDataset`: one API over three layouts.

Layouts (a registry: `LAYOUTS`; `cfg.kind="auto"` picks one from what is on disk):

- `paired`: species-paired folders in the style of AViS: `images/<class>/*.{jpg,png}` and `audio/<class>/*` (or
  `recordings/<class>/*`), recordings of any length, format and rate, cut into windows at load time. An optional
  index file (recordings.csv) gives split and group (recording) per file. Photos: test if their name is in
  `test_image_names`, else the index's split, else a seeded split by file. Audio and photos are paired by class,
  re-paired every epoch (`pairs(split, epoch)`).
- `video`: videos with sound, `<class>/*.{mp4,mpg,flv,mkv,webm,avi,mov}`, a flat folder with `label_regex`, or an
  index with a video/clip column (grid/manifest.csv).
- `manifest`: an index file (CSV/JSONL) with columns image, video, audio, label, split, group.
- `images`: photos only, `images/<class>/*` without sound (`edgeav.train.data.images`).

Windows: a recording of duration D is cut into windows of W = window_s every H = hop_s, starting at 0, for as long
as a window fits (1 + floor((D - W) / H) windows); a recording shorter than W gives one window, padded with zeros
at load time. The same holds for a video's sound track; a video window's frames are `frames_per_clip` times spread
evenly over the part of the window that has picture (t_i = start + span * (2i + 1) / (2N)); with
`frames_per_window` T > 1 a window's frames are T consecutive ones at `frame_rate_hz` from its start (t_k = start +
k / rate), and the model takes all T (motion).

Splits: by group, never by clip (see `splits.py`). A split column, when present, is obeyed; validation is then
carved from train by group. When train holds a single group (GRID: one speaker), validation is carved from train
clips BY CLIP, and a warning says so once. Test only ever comes from the split column (or, without one, from a
seeded group split).

Bad input (unreadable/truncated/empty file, video without sound, a class with images but no audio, a row naming a
missing file, an unknown column) is skipped with a warning and listed in `summary()["skipped"]`; with `strict` it
raises `MediaError`/`DataError`. A file that fails later, while loading, yields a missing modality (mask 0), a
warning once per file, and an entry in `load_failures` (strict: raises) -- never a crash mid-epoch.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from edgeav.errors import ConfigError, DataError, MediaError
from edgeav.registry import Registry
from edgeav.schema.data import DataConfig
from edgeav.timebase import NS_PER_S, ns_to_s, s_to_ns, samples_for_ns
from edgeav.train.data import media
from edgeav.train.data.cache import DecodeCache
from edgeav.train.data.records import SPLITS, AudioRef, ImageRef, Sample, Skipped, VideoRef
from edgeav.train.data.splits import pick_groups
from edgeav.train.data.tables import SPLIT_VALUES, IndexTable, find_index, read_index

log = logging.getLogger(__name__)

AUDIO_DIR_NAMES = ("audio", "recordings")
IMAGE_DIR_NAME = "images"

_warned_once: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
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


class Loaded(NamedTuple):
    """What `AVDataset.load` returns. `visual` is (3, H, W) for a photo, (N, 3, H, W) for video frames."""

    audio: np.ndarray | None  # (T,) float32 at cfg.sample_rate_hz, T = window samples exactly
    visual: np.ndarray | None  # uint8 RGB


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


class _Problems:
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
        reason = msg[len(prefix):] if msg.startswith(prefix) else msg
        self.skip(file, reason)


class _Ctx:
    def __init__(self, cfg: DataConfig, root: Path, index_path: Path | None = None) -> None:
        self.cfg = cfg
        self.root = root  # a folder; paths in the summary and sample ids are relative to it
        self.index_path = index_path  # the manifest file when the data set was given as a file
        self.problems = _Problems(cfg.strict)
        self.files: list[FileInfo] = []
        self.notes: list[str] = []
        self.window_ns = s_to_ns(cfg.window_s)
        self.hop_ns = s_to_ns(cfg.hop_s)
        self.label_rx = re.compile(cfg.label_regex) if cfg.label_regex else None
        self.group_rx = re.compile(cfg.group_regex) if cfg.group_regex else None

    def rel(self, p: Path) -> str:
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def note(self, msg: str) -> None:
        """A loud fact about how the data was split: logged once per data set, kept in the summary."""
        _warn_once(f"{self.root}|{msg}", "%s: %s", self.root, msg)
        self.notes.append(msg)

    def window_starts(self, duration_ns: int) -> list[int]:
        if duration_ns <= self.window_ns:
            return [0]
        n = 1 + (duration_ns - self.window_ns) // self.hop_ns
        return [i * self.hop_ns for i in range(n)]

    def frame_times(self, start_ns: int, duration_ns: int) -> tuple[int, ...]:
        if self.cfg.frames_per_window > 1:  # a clip: T consecutive frames at the frame rate from the window's start
            assert self.cfg.frame_rate_hz is not None
            return tuple(start_ns + int(round(k * NS_PER_S / self.cfg.frame_rate_hz))
                         for k in range(self.cfg.frames_per_window))
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
            _warn_once(f"{self.root}|group_regex", "%s: group_regex %r does not match %s (and maybe others): such a "
                       "file is its own group", self.root, self.cfg.group_regex, p.name)
        return self.rel(p)


def _check_unknown_columns(ctx: _Ctx, table: IndexTable) -> None:
    for col in table.unknown_columns:
        ctx.problems.skip(
            table.path,
            f"unknown column {col!r} ignored (roles: image, video, audio, file, label, split, group; "
            f"informational: data.info_columns)",
            DataError,
        )


def _media_files(folder: Path, want: str) -> tuple[list[Path], list[Path]]:
    """Files of media type `want` under `folder` (not recursive), and the other non-hidden files."""
    keep, other = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (keep if media.media_type(p) == want else other).append(p)
    return keep, other


LAYOUTS: Registry[Callable[[_Ctx], Catalog]] = Registry("data set layout")


# ----------------------------------------------------------------------------------------------------- paired
@LAYOUTS.register("paired")
def build_paired(ctx: _Ctx) -> Catalog:
    cfg, root = ctx.cfg, ctx.root
    img_dir = root / IMAGE_DIR_NAME
    audio_dirs = [root / n for n in AUDIO_DIR_NAMES if (root / n).is_dir()]
    if not img_dir.is_dir() or not audio_dirs:
        raise DataError(f"{root}: a species-paired data set needs images/<class>/ and audio/<class>/ (or recordings/<class>/)")
    if len(audio_dirs) > 1:
        raise DataError(f"{root}: both audio/ and recordings/ exist; keep one")
    aud_dir = audio_dirs[0]

    index_path = find_index(root, cfg.index_file)
    listed: dict[str, dict[str, str]] = {}
    if index_path is not None:
        table = read_index(index_path, cfg.info_columns)
        _check_unknown_columns(ctx, table)
        path_role = next((r for r in ("file", "audio", "image") if table.has(r)), None)
        if path_role is None:
            raise DataError(f"{index_path}: needs a file (or audio/image) column naming each file")
        for i, row in enumerate(table.rows, 2):
            rel = row.get(path_role, "")
            if not rel:
                ctx.problems.skip(index_path, f"row {i}: empty {table.roles[path_role]!r}", DataError)
                continue
            if row.get("split") and row["split"] not in SPLIT_VALUES:
                ctx.problems.skip(index_path, f"row {i}: split {row['split']!r} is not one of {SPLIT_VALUES}", DataError)
                continue
            listed[(root / rel).resolve().as_posix()] = row
        log.info("%s: split and group from %s (%d rows)", root, index_path.name, len(listed))

    def class_dirs(d: Path) -> dict[str, Path]:
        return {p.name: p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")}

    img_classes, aud_classes = class_dirs(img_dir), class_dirs(aud_dir)
    all_names = sorted(set(img_classes) | set(aud_classes))
    class_files: dict[str, tuple[list[Path], list[Path]]] = {}
    for name in all_names:
        imgs = _media_files(img_classes[name], "image")[0] if name in img_classes else []
        auds = _media_files(aud_classes[name], "audio")[0] if name in aud_classes else []
        if not auds:
            ctx.problems.skip(aud_dir / name, f"class {name!r} has {len(imgs)} images but no audio; class left out", DataError)
            continue
        if not imgs:
            ctx.problems.skip(img_dir / name, f"class {name!r} has {len(auds)} recordings but no images; class left out", DataError)
            continue
        class_files[name] = (imgs, auds)
    classes = sorted(class_files)
    if not classes:
        raise DataError(f"{root}: no class has both images and audio")
    label_of = {c: i for i, c in enumerate(classes)}
    seen_listed: set[str] = set()

    # --- audio: header, group and split per recording
    rec_rows: list[tuple[str, Path, media.MediaInfo, str, str]] = []  # class, path, info, group, split
    for cls in classes:
        for p in class_files[cls][1]:
            key = p.resolve().as_posix()
            row = listed.get(key)
            if index_path is not None:
                if row is None:
                    ctx.problems.skip(p, f"not listed in {index_path.name}; its split is unknown", DataError)
                    continue
                seen_listed.add(key)
                if row.get("label") and row["label"] != cls:
                    ctx.problems.skip(p, f"{index_path.name} says class {row['label']!r}, folder says {cls!r}", DataError)
                    continue
            info = ctx.probe_sound(p, "audio")
            if info is None:
                continue
            group = ctx.group_for(p, (row or {}).get("group", ""))
            rec_rows.append((cls, p, info, group, (row or {}).get("split", "")))
    if index_path is not None:
        for key, row in listed.items():
            if key not in seen_listed and media.media_type(key) == "audio" and not Path(key).is_file():
                ctx.problems.skip(key, f"listed in {index_path.name} but missing on disk", DataError)

    # splits of recordings: the index's column, else a seeded group split
    group_split: dict[str, str] = {}
    for cls, p, info, group, split in rec_rows:
        if split:
            prev = group_split.setdefault(group, split)
            if prev != split:
                raise DataError(f"{index_path}: group {group!r} appears in both {prev!r} and {split!r}")
    if any(not s for *_, s in rec_rows):
        gc: dict[str, set[str]] = defaultdict(set)
        for c, _, _, g, s in rec_rows:
            if not s:
                gc[g].add(c)
        test = pick_groups(gc, cfg.test_fraction, cfg.seed)
        for g in gc:
            group_split[g] = "test" if g in test else "train"
    if not any(s == "val" for s in group_split.values()) and cfg.val_fraction > 0:
        train_gc: dict[str, set[str]] = defaultdict(set)
        for c, _, _, g, _ in rec_rows:
            if group_split[g] == "train":
                train_gc[g].add(c)
        val = pick_groups(train_gc, cfg.val_fraction, cfg.seed)
        if not val:
            ctx.note("no validation recordings: too few training recordings to hold one out by group")
        for g in val:
            group_split[g] = "val"

    samples: list[Sample] = []
    for cls, p, info, group, _ in rec_rows:
        rel = ctx.rel(p)
        for start in ctx.window_starts(info.duration_ns):
            samples.append(Sample(
                id=f"{rel}@{start}", label=label_of[cls], class_name=cls, group=group, split=group_split[group],
                audio=AudioRef(str(p.resolve()), start, ctx.window_ns),
            ))

    # --- images: test by name, else the index, else a seeded split by file; val follows the classes with val audio
    test_names = set(cfg.test_image_names)
    img_split: dict[Path, str] = {}
    for cls in classes:
        imgs = class_files[cls][0]
        free: list[Path] = []
        for p in imgs:
            row = listed.get(p.resolve().as_posix())
            if p.name in test_names:
                img_split[p] = "test"
            elif row is not None and row.get("split"):
                img_split[p] = row["split"]
            else:
                free.append(p)
        if free:
            if test_names:
                for p in free:
                    img_split[p] = "train"
            else:
                test = pick_groups({ctx.rel(p): {cls} for p in free}, cfg.test_fraction, cfg.seed)
                for p in free:
                    img_split[p] = "test" if ctx.rel(p) in test else "train"
    val_classes = {s.class_name for s in samples if s.split == "val"}
    for cls in classes:
        imgs = class_files[cls][0]
        if cls in val_classes and not any(img_split[p] == "val" for p in imgs):
            train_imgs = {ctx.rel(p): {cls} for p in imgs if img_split[p] == "train"}
            val = pick_groups(train_imgs, cfg.val_fraction if cfg.val_fraction > 0 else 0.0, cfg.seed)
            for p in imgs:
                if ctx.rel(p) in val:
                    img_split[p] = "val"
    for cls in classes:
        for p in class_files[cls][0]:
            rel = ctx.rel(p)
            ctx.files.append(FileInfo(str(p), "image"))
            samples.append(Sample(
                id=f"{rel}@0", label=label_of[cls], class_name=cls, group=rel, split=img_split[p],
                image=ImageRef(str(p.resolve())),
            ))
    return Catalog("paired", root, classes, samples, ctx.files, ctx.problems.items, ctx.notes,
                   str(index_path) if index_path else None)


# ---------------------------------------------------------------------------------------- videos and manifests
@dataclass
class _Row:
    label: str
    group: str
    split: str  # "" when no split column
    audio: Path | None = None
    image: Path | None = None
    video: Path | None = None
    where: str = ""  # for messages: "manifest.csv row 7" or the file


def _rows_from_index(ctx: _Ctx, table: IndexTable) -> list[_Row]:
    base = table.path.parent
    out: list[_Row] = []
    for i, r in enumerate(table.rows, 2):
        where = f"{table.path.name} row {i}"
        paths: dict[str, Path] = {}
        for role in ("image", "video", "audio"):
            if r.get(role):
                paths[role] = base / r[role]
        if r.get("file"):
            mt = media.media_type(r["file"])
            if mt is None:
                ctx.problems.skip(table.path, f"{where}: {r['file']!r} is not a known media type", DataError)
                continue
            paths.setdefault(mt, base / r["file"])
        if not paths:
            ctx.problems.skip(table.path, f"{where}: no media file", DataError)
            continue
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            ctx.problems.skip(missing[0], f"{where}: file not found", MediaError)
            continue
        primary = paths.get("video") or paths.get("audio") or paths["image"]
        label = r.get("label", "")
        if not label and ctx.label_rx is not None:
            label = ctx.label_from_stem(primary) or ""
        if not label:
            ctx.problems.skip(primary, f"{where}: no label (no label column value, label_regex does not match)", DataError)
            continue
        split = r.get("split", "")
        if split and split not in SPLIT_VALUES:
            ctx.problems.skip(table.path, f"{where}: split {split!r} is not one of {SPLIT_VALUES}", DataError)
            continue
        out.append(_Row(label, ctx.group_for(primary, r.get("group", "")), split,
                        paths.get("audio"), paths.get("image"), paths.get("video"), where))
    return out


def _rows_from_video_folder(ctx: _Ctx) -> list[_Row]:
    root = ctx.root
    flat, _ = _media_files(root, "video")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    rows: list[_Row] = []
    if ctx.label_rx is not None:
        files = flat + [p for d in subdirs for p in _media_files(d, "video")[0]]
        for p in files:
            label = ctx.label_from_stem(p)
            if label is None:
                ctx.problems.skip(p, f"label_regex {ctx.cfg.label_regex!r} does not match the file name", DataError)
                continue
            rows.append(_Row(label, ctx.group_for(p), "", video=p, where=ctx.rel(p)))
    else:
        if flat:
            raise DataError(
                f"{root}: {len(flat)} videos in a flat folder: set data.label_regex to read the label from the file "
                r"name (e.g. '^\d+_[A-Z]+_([A-Z]+)_' for CREMA-D), or put them in <class>/ folders"
            )
        for d in subdirs:
            for p in _media_files(d, "video")[0]:
                rows.append(_Row(d.name, ctx.group_for(p), "", video=p, where=ctx.rel(p)))
    if not rows:
        raise DataError(f"{root}: no video files (.mp4 .mpg .flv .mkv .webm .avi .mov) in <class>/ folders")
    if ctx.group_rx is None:
        log.info("%s: no group column or group_regex: each video is its own group", root)
    return rows


def _split_rows(ctx: _Ctx, rows: list[_Row]) -> None:
    """Fill row.split for every row: the column, else a seeded group split; then carve val from train by group
    (by clip, loudly, when train has a single group)."""
    cfg = ctx.cfg
    by_group: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.split:
            by_group[r.group].add(r.split)
    if any(len(s) > 1 for s in by_group.values()) and not any(not r.split for r in rows):
        # A split column that itself cuts groups (GRID: one speaker in train and test) is obeyed, and said.
        crossing = sorted(g for g, s in by_group.items() if len(s) > 1)
        ctx.note(f"the split column puts group(s) {crossing[:5]} in more than one split; it is obeyed as given")
    unsplit = [r for r in rows if not r.split]
    if unsplit:
        gc: dict[str, set[str]] = defaultdict(set)
        for r in unsplit:
            gc[r.group].add(r.label)
        test = pick_groups(gc, cfg.test_fraction, cfg.seed)
        if cfg.test_fraction > 0 and not test:
            ctx.note(f"no test split: {len(gc)} group(s) without a split column cannot be split by group")
        for r in unsplit:
            r.split = "test" if r.group in test else "train"
    if any(r.split == "val" for r in rows) or cfg.val_fraction <= 0:
        return
    train = [r for r in rows if r.split == "train"]
    gc = defaultdict(set)
    for r in train:
        gc[r.group].add(r.label)
    if len(gc) >= 2:
        val = pick_groups(gc, cfg.val_fraction, cfg.seed)
        for r in train:
            if r.group in val:
                r.split = "val"
        return
    if len(train) >= 2:
        ctx.note(
            f"train holds a single group ({next(iter(gc), '?')!r}): validation is carved from train BY CLIP "
            f"(~{cfg.val_fraction:.0%} of clips per class); validation scores will be optimistic"
        )
        clips = {r.where: {r.label} for r in train}
        val = pick_groups(clips, cfg.val_fraction, cfg.seed)
        if not val:
            ctx.note("no validation clips: no class has a train clip to spare")
        for r in train:
            if r.where in val:
                r.split = "val"


def _samples_from_rows(ctx: _Ctx, rows: list[_Row]) -> tuple[list[str], list[Sample]]:
    kept: list[tuple[_Row, media.MediaInfo | None]] = []
    for r in rows:
        info = None
        sound = r.audio or r.video
        if sound is not None:
            info = ctx.probe_sound(sound, "video" if sound is r.video and r.audio is None else "audio")
            if info is None:
                continue
            if r.video is not None and r.audio is not None:
                try:
                    if not media.probe(r.video).has_video:
                        ctx.problems.skip(r.video, "no video track")
                        continue
                except MediaError as e:
                    ctx.problems.media_error(r.video, e)
                    continue
        if r.image is not None:
            ctx.files.append(FileInfo(str(r.image), "image"))
        kept.append((r, info))
    classes = sorted({r.label for r, _ in kept})
    if not classes:
        raise DataError(f"{ctx.root}: no usable sample (see the warnings above)")
    label_of = {c: i for i, c in enumerate(classes)}
    _split_rows(ctx, [r for r, _ in kept])
    samples: list[Sample] = []
    for r, info in kept:
        primary = r.video or r.audio or r.image
        assert primary is not None
        rel = ctx.rel(primary)
        common = dict(label=label_of[r.label], class_name=r.label, group=r.group, split=r.split,
                      image=ImageRef(str(r.image.resolve())) if r.image else None)
        if info is None:  # image only
            samples.append(Sample(id=f"{rel}@0", **common))
            continue
        sound = (r.audio or r.video).resolve()  # type: ignore[union-attr]
        for start in ctx.window_starts(info.duration_ns):
            samples.append(Sample(
                id=f"{rel}@{start}", audio=AudioRef(str(sound), start, ctx.window_ns),
                video=VideoRef(str(r.video.resolve()), ctx.frame_times(start, info.duration_ns)) if r.video else None,
                **common,
            ))
    return classes, samples


@LAYOUTS.register("video")
def build_video(ctx: _Ctx) -> Catalog:
    index_path = ctx.index_path or find_index(ctx.root, ctx.cfg.index_file)
    if index_path is not None:
        table = read_index(index_path, ctx.cfg.info_columns)
        _check_unknown_columns(ctx, table)
        if not table.has("video"):
            raise DataError(f"{index_path}: a video index needs a video (or clip) column; has {table.columns}")
        rows = _rows_from_index(ctx, table)
    else:
        rows = _rows_from_video_folder(ctx)
    classes, samples = _samples_from_rows(ctx, rows)
    return Catalog("video", ctx.root, classes, samples, ctx.files, ctx.problems.items, ctx.notes,
                   str(index_path) if index_path else None)


@LAYOUTS.register("manifest")
def build_manifest(ctx: _Ctx) -> Catalog:
    index_path = ctx.index_path or find_index(ctx.root, ctx.cfg.index_file)
    if index_path is None:
        raise DataError(f"{ctx.root}: no manifest (manifest.csv / manifest.jsonl, or data.index_file)")
    table = read_index(index_path, ctx.cfg.info_columns)
    _check_unknown_columns(ctx, table)
    if not any(table.has(r) for r in ("image", "video", "audio", "file")):
        raise DataError(f"{index_path}: a manifest needs at least one of the columns image, video, audio; has {table.columns}")
    if not table.has("label") and ctx.label_rx is None:
        raise DataError(f"{index_path}: no label column; add one or set data.label_regex")
    rows = _rows_from_index(ctx, table)
    classes, samples = _samples_from_rows(ctx, rows)
    return Catalog("manifest", ctx.root, classes, samples, ctx.files, ctx.problems.items, ctx.notes, str(index_path))


def detect_kind(root: Path, cfg: DataConfig) -> str:
    """Which layout `root` is, from what is on disk."""
    if root.is_file():
        return "manifest"
    if (root / IMAGE_DIR_NAME).is_dir() and any((root / n).is_dir() for n in AUDIO_DIR_NAMES):
        return "paired"
    if (root / IMAGE_DIR_NAME).is_dir() and find_index(root, cfg.index_file) is None:
        return "images"
    index_path = find_index(root, cfg.index_file)
    if index_path is not None:
        table = read_index(index_path, cfg.info_columns)
        if table.has("video") and not (table.has("image") or table.has("audio")):
            return "video"
        return "manifest"
    if _media_files(root, "video")[0] or any(
        _media_files(d, "video")[0] for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    ):
        return "video"
    raise DataError(
        f"{root}: cannot tell the layout: expected images/<class>/ + audio/<class>/ (paired), images/<class>/ alone "
        f"(images), videos in <class>/ folders (video), or a manifest.csv/.jsonl; set data.kind"
    )


# ----------------------------------------------------------------------------------------------------- dataset
class AVDataset:
    """A data set: classes, samples per split, loading through the decode cache. Build it with `load_dataset`."""

    def __init__(self, cfg: DataConfig, catalog: Catalog, cache: DecodeCache) -> None:
        self.cfg = cfg
        self.kind = catalog.kind
        self.root = catalog.root
        self.classes: list[str] = list(catalog.classes)
        self.skipped: list[Skipped] = list(catalog.skipped)
        self.notes: list[str] = list(catalog.notes)
        self.files: list[FileInfo] = list(catalog.files)
        self.index_file = catalog.index_file
        self.cache = cache
        self.window_ns = s_to_ns(cfg.window_s)
        self.window_samples = samples_for_ns(self.window_ns, cfg.sample_rate_hz)
        self.load_failures: dict[str, str] = {}  # file -> reason, for files that failed while loading
        self._samples = list(catalog.samples)
        self._by_split: dict[str, list[Sample]] = {s: [x for x in self._samples if x.split == s] for s in SPLITS}

    # ---- listing
    def samples(self, split: str | None = None) -> list[Sample]:
        """Samples of `split` ("train", "val", "test"), or all when None. Paired data: audio-window samples and
        photo samples (one modality each); other layouts: samples with both."""
        if split is None:
            return list(self._samples)
        if split not in self._by_split:
            raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return list(self._by_split[split])

    def pairs(self, split: str, epoch: int = 0, seed: int | None = None) -> list[tuple[Sample | None, Sample | None]]:
        """Examples of `split` for `epoch` as (audio sample, visual sample) of the same class.

        Paired data: per class, audio windows and photos are shuffled by an RNG seeded with (seed, epoch, split,
        class) and zipped cyclically to max(#windows, #photos) pairs, so every window and every photo appears at
        least once per epoch and the pairing changes every epoch. A class with only one modality in the split gives
        (sample, None) or (None, sample). Other layouts: each sample is its own pair (s, s), in a stable order.
        """
        items = self.samples(split)
        if self.kind != "paired":
            return [(s, s) for s in items]
        seed = self.cfg.seed if seed is None else int(seed)
        by_class: dict[int, tuple[list[Sample], list[Sample]]] = defaultdict(lambda: ([], []))
        for s in items:
            by_class[s.label][0 if s.audio is not None else 1].append(s)
        out: list[tuple[Sample | None, Sample | None]] = []
        split_code = SPLITS.index(split)
        for label in sorted(by_class):
            auds, imgs = by_class[label]
            rng = np.random.default_rng([seed, int(epoch), split_code, label])
            a_perm = [auds[i] for i in rng.permutation(len(auds))]
            i_perm = [imgs[i] for i in rng.permutation(len(imgs))]
            n = max(len(a_perm), len(i_perm))
            for k in range(n):
                out.append((a_perm[k % len(a_perm)] if a_perm else None, i_perm[k % len(i_perm)] if i_perm else None))
        return out

    # ---- loading
    def _params(self) -> dict[str, int]:
        return {"rate_hz": self.cfg.sample_rate_hz, "size_px": self.cfg.image_size_px}

    def _failed(self, file: str, e: MediaError) -> None:
        if self.cfg.strict:
            raise e
        if file not in self.load_failures:
            self.load_failures[file] = str(e)
            log.warning("load failed, modality marked missing: %s", e)

    def recording(self, file: str) -> np.ndarray:
        """The whole sound track of `file` at cfg.sample_rate_hz, mono float32 (T,), memory-mapped from the cache."""
        rate = self.cfg.sample_rate_hz
        return self.cache.get("audio", file, {"rate_hz": rate}, lambda: media.decode_audio(file, rate))

    def load_audio(self, ref: AudioRef) -> np.ndarray | None:
        """The window `ref` as float32 (window_samples,), zero-padded past the end; None if the file failed."""
        if ref.file in self.load_failures:
            return None
        try:
            full = self.recording(ref.file)
        except MediaError as e:
            self._failed(ref.file, e)
            return None
        rate = self.cfg.sample_rate_hz
        start = samples_for_ns(ref.start_ns, rate)
        n = samples_for_ns(ref.duration_ns, rate)
        out = np.zeros(n, dtype=np.float32)  # (T,)
        chunk = np.asarray(full[start:start + n], dtype=np.float32)
        out[: chunk.shape[0]] = chunk
        return out

    def load_image(self, ref: ImageRef) -> np.ndarray | None:
        """The photo as uint8 (3, S, S); None if the file failed."""
        if ref.file in self.load_failures:
            return None
        size = self.cfg.image_size_px
        try:
            return np.asarray(self.cache.get("image", ref.file, {"size_px": size}, lambda: media.read_image(ref.file, size)))
        except MediaError as e:
            self._failed(ref.file, e)
            return None

    def load_frames(self, ref: VideoRef) -> np.ndarray | None:
        """The frames as uint8 (N, 3, S, S); None if the file failed."""
        if ref.file in self.load_failures:
            return None
        size = self.cfg.image_size_px
        params = {"size_px": size, "times_ns": list(ref.frame_times_ns)}
        try:
            return np.asarray(self.cache.get(
                "frames", ref.file, params, lambda: media.decode_frames(ref.file, ref.frame_times_ns, size)))
        except MediaError as e:
            self._failed(ref.file, e)
            return None

    def load(self, sample: Sample) -> Loaded:
        """(audio (T,) float32 or None, visual uint8 (3,H,W) photo / (N,3,H,W) frames or None)."""
        audio = self.load_audio(sample.audio) if sample.audio is not None else None
        visual = None
        if sample.image is not None:
            visual = self.load_image(sample.image)
        elif sample.video is not None:
            visual = self.load_frames(sample.video)
        return Loaded(audio, visual)

    def prepare(self, split: str | None = None) -> int:
        """Decode every file of `split` (all when None) into the cache, so training never decodes mid-epoch and
        a bad file is found now. Returns how many files failed (see `load_failures`)."""
        seen: set[tuple[str, object]] = set()
        for s in self.samples(split):
            if s.audio is not None and ("a", s.audio.file) not in seen:
                seen.add(("a", s.audio.file))
                self.load_audio(s.audio)
            if s.image is not None and ("i", s.image.file) not in seen:
                seen.add(("i", s.image.file))
                self.load_image(s.image)
            if s.video is not None and ("v", s.video) not in seen:
                seen.add(("v", s.video))
                self.load_frames(s.video)
        return len(self.load_failures)

    # ---- report
    def summary(self) -> dict:
        """Classes, counts per split and class, durations, sample rates, skipped files with reasons."""
        splits: dict[str, dict] = {}
        for split in SPLITS:
            items = self._by_split[split]
            splits[split] = {
                "samples": len(items),
                "audio_windows": sum(1 for s in items if s.audio is not None),
                "images": sum(1 for s in items if s.image is not None),
                "videos": len({s.video.file for s in items if s.video is not None}),
                "groups": len({s.group for s in items}),
                "recordings": len({s.audio.file for s in items if s.audio is not None}),
                "per_class": {c: n for c, n in sorted(Counter(s.class_name for s in items).items())},
            }
        sound = [f for f in self.files if f.media in ("audio", "video")]
        durs = [f.duration_ns for f in sound]
        rates = Counter(str(f.rate_hz) for f in sound if f.rate_hz)
        return {
            "root": str(self.root),
            "kind": self.kind,
            "index_file": self.index_file,
            "classes": list(self.classes),
            "n_classes": len(self.classes),
            "splits": splits,
            "files": dict(sorted(Counter(f.media for f in self.files).items())),
            "durations_s": {
                "total": round(ns_to_s(sum(durs)), 3) if durs else 0.0,
                "min": round(ns_to_s(min(durs)), 3) if durs else None,
                "max": round(ns_to_s(max(durs)), 3) if durs else None,
                "mean": round(ns_to_s(sum(durs) // len(durs)), 3) if durs else None,
            },
            "sample_rates_hz": dict(sorted(rates.items())),
            "skipped": [{"file": s.file, "reason": s.reason} for s in self.skipped],
            "n_skipped": len(self.skipped),
            "load_failures": dict(self.load_failures),  # files that failed while loading (missing modality)
            "notes": list(self.notes),
            "config": {
                "sample_rate_hz": self.cfg.sample_rate_hz, "window_s": self.cfg.window_s, "hop_s": self.cfg.hop_s,
                "image_size_px": self.cfg.image_size_px, "frames_per_clip": self.cfg.frames_per_clip,
                "frames_per_window": self.cfg.frames_per_window, "frame_rate_hz": self.cfg.frame_rate_hz,
                "seed": self.cfg.seed,
            },
        }


def load_dataset(cfg: DataConfig, path: str | Path | None = None, cache: DecodeCache | None = None) -> AVDataset:
    """Index the data set at `path` (else cfg.path): headers only, no decoding. Raises DataError when the layout
    cannot be read or nothing usable is left; bad files are skipped and reported (strict: raise)."""
    where = path if path is not None else cfg.path
    if where is None:
        raise ConfigError("no data set path: give one (--data / PATH) or set data.path")
    root = Path(where).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data set not found")
    kind = cfg.kind if cfg.kind != "auto" else detect_kind(root, cfg)
    ctx = _Ctx(cfg, root.parent, root) if root.is_file() else _Ctx(cfg, root)
    catalog = LAYOUTS.create(kind, ctx)
    if cache is None:
        cache = DecodeCache(cfg.cache_dir, enabled=cfg.cache)
    ds = AVDataset(cfg, catalog, cache)
    log.info("%s: %s data set, %d classes, %d samples (%s), %d skipped", root, kind, len(ds.classes),
             len(ds.samples()), ", ".join(f"{s} {len(ds.samples(s))}" for s in SPLITS), len(ds.skipped))
    return ds
