"""The `paired` layout: species-paired folders in the style of AViS.

`images/<class>/*.{jpg,png}` and `audio/<class>/*` (or `recordings/<class>/*`), recordings of any length, format and
rate, cut into windows at load time. An optional index file (recordings.csv) gives split and group (recording) per
file. Recordings: the index's split, else a seeded split by group; validation carved from train by group. Photos:
test if their name is in `test_image_names`, else the index's split, else a seeded split by file; validation photos
for the classes with validation audio. Audio and photos are paired by class when loading (`AVDataset.pairs`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from edgeav.errors import DataError
from edgeav.train.data import media
from edgeav.train.data.layouts.base import (
    AUDIO_DIR_NAMES,
    IMAGE_DIR_NAME,
    LAYOUTS,
    Catalog,
    LayoutContext,
    check_unknown_columns,
    media_files,
    photo_sample,
)
from edgeav.train.data.records import AudioRef, Sample
from edgeav.train.data.splits import pick_groups
from edgeav.train.data.tables import SPLIT_VALUES, find_index, read_index

log = logging.getLogger(__name__)


@LAYOUTS.register("paired")
def build_paired(ctx: LayoutContext) -> Catalog:
    cfg, root = ctx.cfg, ctx.root
    img_dir = root / IMAGE_DIR_NAME
    audio_dirs = [root / n for n in AUDIO_DIR_NAMES if (root / n).is_dir()]
    if not img_dir.is_dir() or not audio_dirs:
        raise DataError(
            f"{root}: a species-paired data set needs images/<class>/ and audio/<class>/ (or recordings/<class>/)"
        )
    if len(audio_dirs) > 1:
        raise DataError(f"{root}: both audio/ and recordings/ exist; keep one")
    aud_dir = audio_dirs[0]

    index_path = find_index(root, cfg.index_file)
    listed: dict[str, dict[str, str]] = {}
    if index_path is not None:
        table = read_index(index_path, cfg.info_columns)
        check_unknown_columns(ctx, table)
        path_role = next((r for r in ("file", "audio", "image") if table.has(r)), None)
        if path_role is None:
            raise DataError(f"{index_path}: needs a file (or audio/image) column naming each file")
        for i, row in enumerate(table.rows, 2):
            rel = row.get(path_role, "")
            if not rel:
                ctx.problems.skip(index_path, f"row {i}: empty {table.roles[path_role]!r}", DataError)
                continue
            if row.get("split") and row["split"] not in SPLIT_VALUES:
                ctx.problems.skip(
                    index_path, f"row {i}: split {row['split']!r} is not one of {SPLIT_VALUES}", DataError
                )
                continue
            listed[(root / rel).resolve().as_posix()] = row
        log.info("%s: split and group from %s (%d rows)", root, index_path.name, len(listed))

    def class_dirs(d: Path) -> dict[str, Path]:
        return {p.name: p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")}

    img_classes, aud_classes = class_dirs(img_dir), class_dirs(aud_dir)
    all_names = sorted(set(img_classes) | set(aud_classes))
    class_files: dict[str, tuple[list[Path], list[Path]]] = {}
    for name in all_names:
        imgs = media_files(img_classes[name], "image")[0] if name in img_classes else []
        auds = media_files(aud_classes[name], "audio")[0] if name in aud_classes else []
        if not auds:
            ctx.problems.skip(
                aud_dir / name, f"class {name!r} has {len(imgs)} images but no audio; class left out", DataError
            )
            continue
        if not imgs:
            ctx.problems.skip(
                img_dir / name, f"class {name!r} has {len(auds)} recordings but no images; class left out", DataError
            )
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
                    ctx.problems.skip(
                        p, f"{index_path.name} says class {row['label']!r}, folder says {cls!r}", DataError
                    )
                    continue
            info = ctx.probe_sound(p, "audio")
            if info is None:
                continue
            group = ctx.group_for(p, (row or {}).get("group", ""))
            rec_rows.append((cls, p, info, group, (row or {}).get("split", "")))
    if index_path is not None:
        for key in listed:
            if key not in seen_listed and media.media_type(key) == "audio" and not Path(key).is_file():
                ctx.problems.skip(key, f"listed in {index_path.name} but missing on disk", DataError)

    # splits of recordings: the index's column, else a seeded group split
    group_split: dict[str, str] = {}
    for _cls, _path, _info, group, split in rec_rows:
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
            samples.append(
                Sample(
                    id=f"{rel}@{start}",
                    label=label_of[cls],
                    class_name=cls,
                    group=group,
                    split=group_split[group],
                    audio=AudioRef(str(p.resolve()), start, ctx.window_ns),
                )
            )

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
            samples.append(photo_sample(ctx, p, label_of[cls], cls, img_split[p]))
    return ctx.catalog("paired", classes, samples, index_path, root=root)
