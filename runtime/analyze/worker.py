"""The per-file work of `edgeav analyze`: one `Analyzer` per worker process (one ONNX Runtime session), one call
per unit (a file), returning a plain dict that the coordinator writes; the same in a local process and a Ray actor.

A unit is a dict: `key` (its results' name), `path`, `kind` (audio | video | photo), and for deployments
`deployment`, `utc_ns` and its pairing (see deploy.py). Windows never cross files and batches never cross files,
so a file's result does not depend on the engine, the number of workers or the order the files run in.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.errors import MediaError
from edgeav.manifest import sha256_file
from edgeav.runtime.align import AlignedWindow
from edgeav.runtime.engine import infer_windows
from edgeav.runtime.postprocess import PostProcessor, utc_iso
from edgeav.schema.runtime import PostprocessConfig
from edgeav.timebase import NS_PER_S

from .media import Window, audio_windows, read_audio_segment, read_photo, video_windows

log = logging.getLogger(__name__)


def file_identity(path: Path) -> dict[str, Any]:
    """size, mtime (ns) and sha256 of a file."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def nearest_photo(photos: list[tuple[int, str]], times: list[int], centre_ns: int) -> tuple[int, str]:
    """The photo nearest `centre_ns`, ties to the smallest path (a burst shares an EXIF second), by bisection:
    `photos` sorted by (utc_ns, path), `times` their utc_ns. Equal to min over all by (|t - centre|, path)."""
    i = bisect.bisect_left(times, centre_ns)
    candidates = [photos[i]] if i < len(photos) else []  # the first (smallest path) at the nearest time after
    if i > 0:
        candidates.append(photos[bisect.bisect_left(times, times[i - 1])])  # the first at the nearest time before
    return min(candidates, key=lambda p: (abs(p[0] - centre_ns), p[1]))


class Analyzer:
    """Holds the bundle's model (one session, `threads` intra-op threads) and analyzes one unit per call."""

    def __init__(
        self,
        bundle: str,
        threads: int = 1,
        batch_windows: int = 16,
        min_confidence: float = 0.5,
        role: str | None = None,
    ) -> None:
        from edgeav.bundle import verify_bundle
        from edgeav.runtime.backends import create_backend
        from edgeav.runtime.cli import pick_model_role

        info = verify_bundle(bundle)
        self.labels = info.labels
        self.contract = info.manifest.contract
        self.role = pick_model_role(info, "onnxruntime", role)
        self.backend = create_backend(
            "onnxruntime", info.model(self.role), self.contract, intra_op_threads=int(threads), inter_op_threads=1
        )
        self.batch_windows = int(batch_windows)  # capped by the backend's max_batch in infer_windows
        # every window's classes at or above min_confidence: no smoothing, confirmation or gap between detections
        self.post_cfg = PostprocessConfig(smoothing="none", threshold=float(min_confidence), min_gap_s=0.0)

    # -- one unit -------------------------------------------------------------------------------------------
    def analyze(self, unit: dict[str, Any]) -> dict[str, Any]:
        path = Path(unit["path"])
        t0 = time.perf_counter()
        result: dict[str, Any] = {
            "key": unit["key"],
            "path": unit["path"],
            "kind": unit["kind"],
            "deployment": unit.get("deployment"),
            "status": "ok",
            "error": None,
            "media_s": 0.0,
            "windows": 0,
            "rows": [],
        }
        try:
            result["file"] = file_identity(path)
            result["rows"], result["windows"], result["media_s"] = self._rows(unit)
        except (MediaError, OSError) as e:
            result.update(status="error", error=str(e) if isinstance(e, MediaError) else f"{path}: {e}", rows=[])
            result.setdefault("file", None)
        result["wall_s"] = time.perf_counter() - t0  # not part of the written result (the coordinator drops it)
        return result

    def _windows(self, unit: dict[str, Any]) -> Iterator[tuple[Window, dict[str, Any]]]:
        """(window, row fields it adds) for every window of a unit."""
        path, kind, c = Path(unit["path"]), unit["kind"], self.contract
        window_ns = c.audio.window_ns
        if kind == "photo":
            image = read_photo(path, c)  # (1, H, W, 3)
            frames = np.repeat(image, c.image.n_frames, axis=0)
            rec = unit.get("recording")
            audio = read_audio_segment(Path(rec[0]), rec[1], c) if rec else None
            extra = {"paired": rec[0] if rec and audio is not None else "", "paired_offset_s": rec[1] if rec else None}
            utc = unit.get("utc_ns")
            extra["utc"] = utc_iso(utc - window_ns // 2) if utc is not None else ""
            yield Window(0, audio, frames, c.audio.window_s), extra
            return
        windows = video_windows(path, c) if kind == "video" else audio_windows(path, c)
        photos = unit.get("photos") or []  # sorted by (utc_ns, path)
        photo_times = [t for t, _ in photos]
        start_utc = unit.get("utc_ns")
        cache: dict[str, np.ndarray] = {}
        for w in windows:
            extra: dict[str, Any] = {"utc": "", "paired": "", "paired_offset_s": None}
            if start_utc is not None:
                w_start = start_utc + w.index * window_ns
                extra["utc"] = utc_iso(w_start)
                if photos:
                    centre = w_start + window_ns // 2
                    best = nearest_photo(photos, photo_times, centre)
                    if abs(best[0] - centre) <= unit["pair_within_ns"]:
                        if best[1] not in cache:
                            cache.clear()
                            cache[best[1]] = np.repeat(read_photo(Path(best[1]), c), c.image.n_frames, axis=0)
                        w.frames = cache[best[1]]
                        extra["paired"] = best[1]
                        extra["paired_offset_s"] = round((best[0] - w_start) / NS_PER_S, 3)
            yield w, extra

    def _rows(self, unit: dict[str, Any]) -> tuple[list[dict[str, Any]], int, float]:
        """The engine's batching and post-processing (no smoothing, every window's classes at or above
        min_confidence) over the unit's windows; one row per (window, class)."""
        c = self.contract
        window_ns = c.audio.window_ns
        post = PostProcessor(self.labels, self.post_cfg)
        seen: dict[int, tuple[Window, dict[str, Any]]] = {}  # start_ns -> window awaiting its result
        n_windows = 0
        media_s = 0.0

        def aligned() -> Iterator[AlignedWindow]:
            nonlocal n_windows, media_s
            for w, extra in self._windows(unit):
                n_windows += 1
                media_s += w.valid_s
                start_ns = w.index * window_ns
                seen[start_ns] = (w, extra)
                yield AlignedWindow(start_ns, start_ns + window_ns, w.audio, w.frames)

        rows: list[dict[str, Any]] = []
        for res in infer_windows(aligned(), self.backend, c, post, self.batch_windows):
            w, extra = seen.pop(res.window.start_ns)
            for d in res.detections:
                rows.append(
                    {
                        "begin_s": round(w.index * c.audio.window_s, 4),
                        "end_s": round((w.index + 1) * c.audio.window_s, 4),
                        "label": d.label,
                        "confidence": round(d.confidence, 6),
                        "audio_confidence": None if d.audio_confidence is None else round(d.audio_confidence, 6),
                        "image_confidence": None if d.image_confidence is None else round(d.image_confidence, 6),
                        "modalities": "+".join(d.modalities),
                        **extra,
                    }
                )
        return rows, n_windows, round(media_s, 4)

    def close(self) -> None:
        self.backend.close()


__all__ = ["Analyzer", "file_identity"]
