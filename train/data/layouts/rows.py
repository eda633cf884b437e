"""Rows of media files with label, group and split, shared by the `video` and `manifest` layouts: read from an
index file, split by group (validation by clip, loudly, when train holds a single group), probed and cut into
windows of samples.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edgeav.errors import DataError, MediaError
from edgeav.train.data import media
from edgeav.train.data.layouts.base import FileInfo, LayoutContext
from edgeav.train.data.records import AudioRef, ImageRef, Sample, VideoRef
from edgeav.train.data.splits import pick_groups
from edgeav.train.data.tables import SPLIT_VALUES, IndexTable


# ---------------------------------------------------------------------------------------- videos and manifests
@dataclass
class MediaRow:
    """One example before splitting: its files (one to three modalities), label, group and split."""

    label: str
    group: str
    split: str  # "" when no split column
    audio: Path | None = None
    image: Path | None = None
    video: Path | None = None
    where: str = ""  # for messages: "manifest.csv row 7" or the file


def rows_from_index(ctx: LayoutContext, table: IndexTable) -> list[MediaRow]:
    base = table.path.parent
    out: list[MediaRow] = []
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
            ctx.problems.skip(
                primary, f"{where}: no label (no label column value, label_regex does not match)", DataError
            )
            continue
        split = r.get("split", "")
        if split and split not in SPLIT_VALUES:
            ctx.problems.skip(table.path, f"{where}: split {split!r} is not one of {SPLIT_VALUES}", DataError)
            continue
        out.append(
            MediaRow(
                label,
                ctx.group_for(primary, r.get("group", "")),
                split,
                paths.get("audio"),
                paths.get("image"),
                paths.get("video"),
                where,
            )
        )
    return out


def split_rows(ctx: LayoutContext, rows: list[MediaRow]) -> None:
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


def samples_from_rows(ctx: LayoutContext, rows: list[MediaRow]) -> tuple[list[str], list[Sample]]:
    kept: list[tuple[MediaRow, media.MediaInfo | None]] = []
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
    split_rows(ctx, [r for r, _ in kept])
    samples: list[Sample] = []
    for r, info in kept:
        primary = r.video or r.audio or r.image
        assert primary is not None
        rel = ctx.rel(primary)
        common = dict(
            label=label_of[r.label],
            class_name=r.label,
            group=r.group,
            split=r.split,
            image=ImageRef(str(r.image.resolve())) if r.image else None,
        )
        if info is None:  # image only
            samples.append(Sample(id=f"{rel}@0", **common))
            continue
        sound = (r.audio or r.video).resolve()  # type: ignore[union-attr]
        for start in ctx.window_starts(info.duration_ns):
            samples.append(
                Sample(
                    id=f"{rel}@{start}",
                    audio=AudioRef(str(sound), start, ctx.window_ns),
                    video=VideoRef(str(r.video.resolve()), ctx.frame_times(start, info.duration_ns))
                    if r.video
                    else None,
                    **common,
                )
            )
    return classes, samples
