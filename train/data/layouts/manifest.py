"""The `manifest` layout: an index file (CSV or JSONL) with the columns image, video, audio (or file), label, split,
group; paths relative to the index file. Given as the data set path, the file itself is the index.
"""

from __future__ import annotations

from edgeav.errors import DataError
from edgeav.train.data.layouts.base import LAYOUTS, Catalog, LayoutContext, check_unknown_columns
from edgeav.train.data.layouts.rows import rows_from_index, samples_from_rows
from edgeav.train.data.tables import find_index, read_index


@LAYOUTS.register("manifest")
def build_manifest(ctx: LayoutContext) -> Catalog:
    index_path = ctx.index_path or find_index(ctx.root, ctx.cfg.index_file)
    if index_path is None:
        raise DataError(f"{ctx.root}: no manifest (manifest.csv / manifest.jsonl, or data.index_file)")
    table = read_index(index_path, ctx.cfg.info_columns)
    check_unknown_columns(ctx, table)
    if not any(table.has(r) for r in ("image", "video", "audio", "file")):
        raise DataError(
            f"{index_path}: a manifest needs at least one of the columns image, video, audio; has {table.columns}"
        )
    if not table.has("label") and ctx.label_rx is None:
        raise DataError(f"{index_path}: no label column; add one or set data.label_regex")
    rows = rows_from_index(ctx, table)
    classes, samples = samples_from_rows(ctx, rows)
    return ctx.catalog("manifest", classes, samples, index_path)
