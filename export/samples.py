"""Real samples for export: the checkpoint's own data set, cut and split as it was in training.

    ds = dataset_for_checkpoint(info, data_path)              # the data: section stored in the checkpoint
    val = split_examples(ds, "val", limit=64)                  # parity: validation windows, stratified by class
    test = split_examples(ds, "test")                          # the gate: every held-out window
    calib = split_examples(ds, "train", limit=300, all_frames=True)   # INT8 calibration (both inputs)

Each example is one window with a batch axis of 1: feeds {audio (1, S) float32, image (1, 3, H, W) uint8 - or
(1, T, 3, H, W) for a clip model (data.frames_per_window T > 1) -, mask (1, 2) float32} and its label. Windows come
through the training data layer (`TorchAVDataset`), so the audio window, the chosen frame(s) and the modality mask are
what training and evaluation saw. With `all_frames=True` a still model's video window gives one example per sampled
frame (same audio, another real frame): calibration sees every frame. A clip model's window is one example whatever
`all_frames` says: its T frames are already all in the one feed.

Selection is stratified: classes take turns (round robin over a seeded shuffle of each class's windows), so a
limit keeps the classes balanced.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.errors import DataError, ExportError

log = logging.getLogger(__name__)


@dataclass
class Example:
    feeds: dict[str, np.ndarray]  # audio (1, S) f32, image (1, 3, H, W) or (1, T, 3, H, W) u8, mask (1, 2) f32
    label: int
    sample_id: str


def dataset_for_checkpoint(train_config: dict[str, Any], labels: Sequence[str], data_path: str | Path | None) -> Any:
    """The data set the checkpoint was trained on, read with the checkpoint's own `data:` section.

    `data_path` (from --calib-data) replaces the stored data.path. The data set's classes must be the checkpoint's
    labels, in order (else the data is not what the model was trained on)."""
    from edgeav.schema.data import DataConfig
    from edgeav.train.data import load_dataset

    stored = dict((train_config or {}).get("data") or {})
    try:
        cfg = DataConfig.model_validate(stored)
    except ValueError as e:
        raise ExportError(f"the checkpoint's data: section is not valid here: {str(e).splitlines()[0]}") from None
    path = data_path if data_path is not None else cfg.path
    if path is None:
        raise ExportError(
            "no data to check the export on: pass --calib-data PATH (the data set the checkpoint was "
            "trained on); the checkpoint stores no data.path"
        )
    if not Path(path).exists():
        raise ExportError(f"{path}: data set not found (pass --calib-data PATH)")
    try:
        ds = load_dataset(cfg, path)
    except DataError as e:
        raise ExportError(f"cannot read the data set at {path}: {e}") from None
    if list(ds.classes) != list(labels):
        raise ExportError(
            f"{path}: classes {ds.classes} are not the checkpoint's labels {list(labels)}: not the "
            "data set it was trained on"
        )
    return ds


def _stratified(items: Sequence[tuple[int, int]], limit: int | None, seed: int) -> list[int]:
    """Indices into `items` ((label, key) pairs): classes take turns over a seeded shuffle of each class."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for idx, (label, _) in enumerate(items):
        by_class[label].append(idx)
    rng = np.random.default_rng(seed)
    queues = {c: [idxs[i] for i in rng.permutation(len(idxs))] for c, idxs in sorted(by_class.items())}
    out: list[int] = []
    total = len(items) if limit is None else min(limit, len(items))
    pos = 0
    while len(out) < total:
        for c in sorted(queues):
            if pos < len(queues[c]) and len(out) < total:
                out.append(queues[c][pos])
        pos += 1
    return out


def split_examples(
    ds: Any, split: str, *, limit: int | None = None, seed: int = 0, all_frames: bool = False
) -> list[Example]:
    """Windows of `split` as batch-1 feeds, stratified by class, at most `limit` (None: all)."""
    from edgeav.train.data.torch_dataset import TorchAVDataset

    tds = TorchAVDataset(ds, split, epoch=0, with_frames=all_frames)
    if len(tds) == 0:
        raise ExportError(f"the {split!r} split of {ds.root} is empty")
    # candidates: (label, (item index, frame index)); frame counts are known without decoding
    cands: list[tuple[int, tuple[int, int]]] = []
    for i, (a, v) in enumerate(tds.items):
        label = (a or v).label
        n_frames = 1  # a clip model (T > 1 frames per window) takes all of a window's frames in one feed
        if all_frames and tds.clip_frames == 1 and v is not None and v.video is not None:
            n_frames = len(v.video.frame_times_ns)
        cands.extend((label, (i, f)) for f in range(n_frames))
    chosen = sorted(_stratified(cands, limit, seed))
    cache: dict[int, dict[str, Any]] = {}
    out: list[Example] = []
    for ci in chosen:
        label, (i, f) = cands[ci]
        item = cache.get(i)
        if item is None:
            cache.clear()
            item = cache[i] = tds[i]
        image = (
            item["frames"][f] if all_frames and tds.clip_frames == 1 else item["image"]
        )  # (3, H, W) / (T, 3, H, W) uint8
        a, v = tds.items[i]
        sid = (a or v).id + (f"#frame{f}" if all_frames and tds.clip_frames == 1 else "")
        out.append(
            Example(
                {
                    "audio": item["audio"].numpy()[None].astype(np.float32),  # (1, S)
                    "image": np.ascontiguousarray(image.numpy()[None], dtype=np.uint8),  # (1, [T,] 3, H, W)
                    "mask": item["mask"].numpy()[None].astype(np.float32),
                },  # (1, 2)
                int(label),
                sid,
            )
        )
    per_frame = all_frames and tds.clip_frames == 1
    log.info(
        "%s split: %d example(s) from %d window(s)%s",
        split,
        len(out),
        len({c[1][0] for c in (cands[i] for i in chosen)}),
        " (one per frame)" if per_frame else (f" ({tds.clip_frames} frames each)" if tds.clip_frames > 1 else ""),
    )
    return out


def class_counts(examples: Sequence[Example], labels: Sequence[str]) -> dict[str, int]:
    counts = {name: 0 for name in labels}
    for e in examples:
        counts[labels[e.label]] += 1
    return counts


def as_eval_samples(examples: Sequence[Example]) -> list[tuple[dict[str, np.ndarray], int]]:
    """(feeds, label) pairs for edgeav.export.gate.evaluate_onnx."""
    return [(e.feeds, e.label) for e in examples]


__all__ = ["Example", "as_eval_samples", "class_counts", "dataset_for_checkpoint", "split_examples"]
