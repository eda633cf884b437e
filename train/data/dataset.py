"""`load_dataset(cfg, path)` -> `AVDataset`: one API over the data set layouts.

Layouts (a registry: `LAYOUTS`, one module each in `edgeav.train.data.layouts`; `cfg.kind="auto"` picks one from what
is on disk):

- `paired`: species-paired folders in the style of AViS: `images/<class>/*.{jpg,png}` and `audio/<class>/*` (or
  `recordings/<class>/*`), recordings of any length, format and rate, cut into windows at load time. An optional
  index file (recordings.csv) gives split and group (recording) per file. Photos: test if their name is in
  `test_image_names`, else the index's split, else a seeded split by file. Audio and photos are paired by class,
  re-paired every epoch (`pairs(split, epoch)`).
- `video`: videos with sound, `<class>/*.{mp4,mpg,flv,mkv,webm,avi,mov}`, a flat folder with `label_regex`, or an
  index with a video/clip column (grid/manifest.csv).
- `manifest`: an index file (CSV/JSONL) with columns image, video, audio, label, split, group.
- `images`: photos only, `images/<class>/*` without sound.

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
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgeav.errors import ConfigError, DataError, MediaError
from edgeav.schema.data import DataConfig
from edgeav.timebase import ns_to_s, s_to_ns, samples_for_ns
from edgeav.train.data import media
from edgeav.train.data.cache import DecodeCache
from edgeav.train.data.layouts import (
    LAYOUTS,
    Catalog,
    FileInfo,
    LayoutContext,
    detect_kind,  # noqa: F401  (re-exported: importable from here as before)
)
from edgeav.train.data.records import SPLITS, AudioRef, ImageRef, Sample, Skipped, VideoRef

log = logging.getLogger(__name__)


class SampleMedia(NamedTuple):
    """What `AVDataset.load` returns. `visual` is (3, H, W) for a photo, (N, 3, H, W) for video frames."""

    audio: np.ndarray | None  # (T,) float32 at cfg.sample_rate_hz, T = window samples exactly
    visual: np.ndarray | None  # uint8 RGB


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
        chunk = np.asarray(full[start : start + n], dtype=np.float32)
        out[: chunk.shape[0]] = chunk
        return out

    def load_image(self, ref: ImageRef) -> np.ndarray | None:
        """The photo as uint8 (3, S, S); None if the file failed."""
        if ref.file in self.load_failures:
            return None
        size = self.cfg.image_size_px
        try:
            return np.asarray(
                self.cache.get("image", ref.file, {"size_px": size}, lambda: media.read_image(ref.file, size))
            )
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
            return np.asarray(
                self.cache.get(
                    "frames", ref.file, params, lambda: media.decode_frames(ref.file, ref.frame_times_ns, size)
                )
            )
        except MediaError as e:
            self._failed(ref.file, e)
            return None

    def load(self, sample: Sample) -> SampleMedia:
        """(audio (T,) float32 or None, visual uint8 (3,H,W) photo / (N,3,H,W) frames or None)."""
        audio = self.load_audio(sample.audio) if sample.audio is not None else None
        visual = None
        if sample.image is not None:
            visual = self.load_image(sample.image)
        elif sample.video is not None:
            visual = self.load_frames(sample.video)
        return SampleMedia(audio, visual)

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
                "sample_rate_hz": self.cfg.sample_rate_hz,
                "window_s": self.cfg.window_s,
                "hop_s": self.cfg.hop_s,
                "image_size_px": self.cfg.image_size_px,
                "frames_per_clip": self.cfg.frames_per_clip,
                "frames_per_window": self.cfg.frames_per_window,
                "frame_rate_hz": self.cfg.frame_rate_hz,
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
    ctx = LayoutContext(cfg, root.parent, root) if root.is_file() else LayoutContext(cfg, root)
    catalog = LAYOUTS.create(kind, ctx)
    if cache is None:
        cache = DecodeCache(cfg.cache_dir, enabled=cfg.cache)
    ds = AVDataset(cfg, catalog, cache)
    log.info(
        "%s: %s data set, %d classes, %d samples (%s), %d skipped",
        root,
        kind,
        len(ds.classes),
        len(ds.samples()),
        ", ".join(f"{s} {len(ds.samples(s))}" for s in SPLITS),
        len(ds.skipped),
    )
    return ds
