"""Data set layouts, one module each, registered by name in `LAYOUTS` (`cfg.kind`; "auto" asks `detect_kind`):

- `paired` (`paired.py`): species-paired folders in the style of AViS, `images/<class>/*` + `audio/<class>/*`.
- `video` (`video.py`): videos with sound (GRID, CREMA-D) in `<class>/` folders, a flat folder, or a video index.
- `manifest` (`manifest.py`): an index file (CSV/JSONL) with columns image, video, audio, label, split, group.
- `images` (`images.py`): photos only, `images/<class>/*` without sound.

What they share (the registry, the context, the catalog) is in `base.py`; the rows of the video and manifest
layouts in `rows.py`.
"""

from __future__ import annotations

from pathlib import Path

from edgeav.errors import DataError
from edgeav.schema.data import DataConfig
from edgeav.train.data.layouts import images, manifest, paired, video  # noqa: F401  (register the layouts)
from edgeav.train.data.layouts.base import (
    AUDIO_DIR_NAMES,
    IMAGE_DIR_NAME,
    LAYOUTS,
    Catalog,
    FileInfo,
    LayoutBuilder,
    LayoutContext,
    media_files,
)
from edgeav.train.data.tables import find_index, read_index

__all__ = [
    "AUDIO_DIR_NAMES",
    "Catalog",
    "FileInfo",
    "IMAGE_DIR_NAME",
    "LAYOUTS",
    "LayoutBuilder",
    "LayoutContext",
    "detect_kind",
]


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
    if media_files(root, "video")[0] or any(
        media_files(d, "video")[0] for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    ):
        return "video"
    raise DataError(
        f"{root}: cannot tell the layout: expected images/<class>/ + audio/<class>/ (paired), images/<class>/ alone "
        f"(images), videos in <class>/ folders (video), or a manifest.csv/.jsonl; set data.kind"
    )
