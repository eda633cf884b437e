"""The `images` layout: photos only, `images/<class>/*.{jpg,png}` and no sound (a base set for pretraining the
picture branch, such as ../shared/data/birds_pretrain).

Every sample is a photo (image only: the model sees mask [0, 1], so the fused output is the picture head's).
Splits by file, as the photos of a species-paired set: test when the name is in `data.test_image_names`, else a
seeded split with `data.test_fraction` (0 = no test split); validation is carved from train with
`data.val_fraction`. A class folder without photos is skipped with a warning.
"""

from __future__ import annotations

from edgeav.errors import DataError
from edgeav.train.data.layouts.base import (
    IMAGE_DIR_NAME,
    LAYOUTS,
    Catalog,
    LayoutContext,
    media_files,
    photo_sample,
)
from edgeav.train.data.records import Sample
from edgeav.train.data.splits import pick_groups


@LAYOUTS.register("images")
def build_images(ctx: LayoutContext) -> Catalog:
    cfg, root = ctx.cfg, ctx.root
    img_dir = root / IMAGE_DIR_NAME
    if not img_dir.is_dir():
        raise DataError(f"{root}: a photos-only data set needs images/<class>/")
    files: dict[str, list] = {}
    for d in sorted(p for p in img_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = media_files(d, "image")[0]
        if not imgs:
            ctx.problems.skip(d, f"class {d.name!r} has no photos; class left out", DataError)
            continue
        files[d.name] = imgs
    classes = sorted(files)
    if not classes:
        raise DataError(f"{img_dir}: no class folder with photos")
    rel_class = {ctx.rel(p): c for c, ps in files.items() for p in ps}
    test_names = set(cfg.test_image_names)
    split = {r: "test" for c, ps in files.items() for p in ps if p.name in test_names for r in [ctx.rel(p)]}
    if not test_names:
        split = {r: "test" for r in pick_groups({r: {c} for r, c in rel_class.items()}, cfg.test_fraction, cfg.seed)}
    train = {r: {c} for r, c in rel_class.items() if r not in split}
    val = pick_groups(train, cfg.val_fraction, cfg.seed)
    label_of = {c: i for i, c in enumerate(classes)}
    samples: list[Sample] = []
    for c in classes:
        for p in files[c]:
            r = ctx.rel(p)
            samples.append(photo_sample(ctx, p, label_of[c], c, split.get(r, "val" if r in val else "train")))
    return ctx.catalog("images", classes, samples, root=root)
