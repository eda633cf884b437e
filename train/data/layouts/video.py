"""The `video` layout: videos with sound (GRID, CREMA-D).

`<class>/*.{mp4,mpg,flv,mkv,webm,avi,mov}`, a flat folder (or class folders) with `data.label_regex` reading the
label from the file name, or an index with a video/clip column (grid/manifest.csv). Each window of a video's sound
track comes with `frames_per_clip` frames (or `frames_per_window` consecutive ones) of the same window.
"""

from __future__ import annotations

import logging

from edgeav.errors import DataError
from edgeav.train.data.layouts.base import LAYOUTS, Catalog, LayoutContext, check_unknown_columns, media_files
from edgeav.train.data.layouts.rows import MediaRow, rows_from_index, samples_from_rows
from edgeav.train.data.tables import find_index, read_index

log = logging.getLogger(__name__)


def rows_from_video_folder(ctx: LayoutContext) -> list[MediaRow]:
    root = ctx.root
    flat, _ = media_files(root, "video")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    rows: list[MediaRow] = []
    if ctx.label_rx is not None:
        files = flat + [p for d in subdirs for p in media_files(d, "video")[0]]
        for p in files:
            label = ctx.label_from_stem(p)
            if label is None:
                ctx.problems.skip(p, f"label_regex {ctx.cfg.label_regex!r} does not match the file name", DataError)
                continue
            rows.append(MediaRow(label, ctx.group_for(p), "", video=p, where=ctx.rel(p)))
    else:
        if flat:
            raise DataError(
                f"{root}: {len(flat)} videos in a flat folder: set data.label_regex to read the label from the file "
                r"name (e.g. '^\d+_[A-Z]+_([A-Z]+)_' for CREMA-D), or put them in <class>/ folders"
            )
        for d in subdirs:
            for p in media_files(d, "video")[0]:
                rows.append(MediaRow(d.name, ctx.group_for(p), "", video=p, where=ctx.rel(p)))
    if not rows:
        raise DataError(f"{root}: no video files (.mp4 .mpg .flv .mkv .webm .avi .mov) in <class>/ folders")
    if ctx.group_rx is None:
        log.info("%s: no group column or group_regex: each video is its own group", root)
    return rows


@LAYOUTS.register("video")
def build_video(ctx: LayoutContext) -> Catalog:
    index_path = ctx.index_path or find_index(ctx.root, ctx.cfg.index_file)
    if index_path is not None:
        table = read_index(index_path, ctx.cfg.info_columns)
        check_unknown_columns(ctx, table)
        if not table.has("video"):
            raise DataError(f"{index_path}: a video index needs a video (or clip) column; has {table.columns}")
        rows = rows_from_index(ctx, table)
    else:
        rows = rows_from_video_folder(ctx)
    classes, samples = samples_from_rows(ctx, rows)
    return ctx.catalog("video", classes, samples, index_path)
