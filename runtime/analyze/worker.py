"""The per-file work of `edgeav analyze`: one `Analyzer` per worker process (one ONNX Runtime session), one call
per unit (a file), returning a plain dict that the coordinator writes; the same in a local process and a Ray actor.

A unit is a dict: `key` (its results' name), `path`, `kind` (audio | video | photo), and for deployments
`deployment`, `utc_ns` and its pairing (see deploy.py). Windows never cross files and batches never cross files,
so a file's result does not depend on the engine, the number of workers or the order the files run in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.errors import MediaError
from edgeav.timebase import NS_PER_S

from .media import Window, audio_windows, read_audio_segment, read_photo, video_windows

log = logging.getLogger(__name__)


def file_identity(path: Path) -> dict[str, Any]:
    """size, mtime (ns) and sha256 of a file (read in 1 MiB blocks)."""
    st = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _utc_iso(utc_ns: int | None) -> str:
    if utc_ns is None:
        return ""
    import datetime as dt

    sec, ns = divmod(int(utc_ns), NS_PER_S)
    t = dt.datetime.fromtimestamp(sec, tz=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        info = verify_bundle(bundle)
        self.labels = info.labels
        self.contract = info.manifest.contract
        self.role = pick_model_role(info, "onnxruntime", role)
        self.backend = create_backend(
            "onnxruntime", info.model(self.role), self.contract, intra_op_threads=int(threads), inter_op_threads=1
        )
        cap = self.backend.max_batch
        self.batch = max(1, min(int(batch_windows), cap if cap is not None else int(batch_windows)))
        self.min_confidence = float(min_confidence)

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
            extra["utc"] = _utc_iso(utc - window_ns // 2 if utc is not None else None)
            yield Window(0, audio, frames, c.audio.window_s), extra
            return
        windows = video_windows(path, c) if kind == "video" else audio_windows(path, c)
        photos = unit.get("photos") or []
        start_utc = unit.get("utc_ns")
        cache: dict[str, np.ndarray] = {}
        for w in windows:
            extra: dict[str, Any] = {"utc": "", "paired": "", "paired_offset_s": None}
            if start_utc is not None:
                w_start = start_utc + w.index * window_ns
                extra["utc"] = _utc_iso(w_start)
                if photos:
                    centre = w_start + window_ns // 2
                    best = min(photos, key=lambda p: (abs(p[0] - centre), p[1]))
                    if abs(best[0] - centre) <= unit["pair_within_ns"]:
                        if best[1] not in cache:
                            cache.clear()
                            cache[best[1]] = np.repeat(read_photo(Path(best[1]), c), c.image.n_frames, axis=0)
                        w.frames = cache[best[1]]
                        extra["paired"] = best[1]
                        extra["paired_offset_s"] = round((best[0] - w_start) / NS_PER_S, 3)
            yield w, extra

    def _infer(
        self, batch: list[tuple[Window, dict[str, Any]]]
    ) -> Iterable[tuple[Window, dict, dict[str, np.ndarray]]]:
        c = self.contract
        shapes = c.shapes(len(batch))
        audio = np.zeros(shapes["audio"], dtype=np.float32)  # (N, S)
        image = np.zeros(shapes["image"], dtype=np.uint8)  # (N, 3, H, W) or (N, T, 3, H, W)
        mask = np.zeros(shapes["mask"], dtype=np.float32)  # (N, 2)
        for i, (w, _) in enumerate(batch):
            if w.audio is not None:
                audio[i] = w.audio
                mask[i, 0] = 1.0
            if w.frames is not None:
                chw = w.frames.transpose(0, 3, 1, 2)  # (T, 3, H, W)
                image[i] = chw if c.image.n_frames > 1 else chw[0]
                mask[i, 1] = 1.0
        outs = self.backend.infer(audio, image, mask)  # each (N, C)
        probs = {k: _softmax(v) for k, v in outs.items()}
        for i, (w, extra) in enumerate(batch):
            yield w, extra, {k: v[i] for k, v in probs.items()} | {"mask": mask[i]}

    def _rows(self, unit: dict[str, Any]) -> tuple[list[dict[str, Any]], int, float]:
        rows: list[dict[str, Any]] = []
        n_windows = 0
        media_s = 0.0
        window_s = self.contract.audio.window_s
        pending: list[tuple[Window, dict[str, Any]]] = []

        def flush() -> None:
            for w, extra, p in self._infer(pending):
                has_a, has_i = bool(p["mask"][0] > 0.5), bool(p["mask"][1] > 0.5)
                modalities = "+".join(m for m, on in (("audio", has_a), ("image", has_i)) if on)
                for ci in np.flatnonzero(p["logits"] >= self.min_confidence):
                    rows.append(
                        {
                            "begin_s": round(w.index * window_s, 4),
                            "end_s": round((w.index + 1) * window_s, 4),
                            "label": self.labels[int(ci)],
                            "confidence": round(float(p["logits"][ci]), 6),
                            "audio_confidence": round(float(p["logits_audio"][ci]), 6) if has_a else None,
                            "image_confidence": round(float(p["logits_image"][ci]), 6) if has_i else None,
                            "modalities": modalities,
                            **extra,
                        }
                    )
            pending.clear()

        for w, extra in self._windows(unit):
            n_windows += 1
            media_s += w.valid_s
            if w.audio is None and w.frames is None:
                continue
            pending.append((w, extra))
            if len(pending) >= self.batch:
                flush()
        if pending:
            flush()
        return rows, n_windows, round(media_s, 4)

    def close(self) -> None:
        self.backend.close()


__all__ = ["Analyzer", "file_identity"]
