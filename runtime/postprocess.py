"""From logits to detections: softmax, smoothing over overlapping windows, per-class thresholds, confirmation
(N hits within T seconds) and a minimum gap between two detections of one class.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeav.errors import ConfigError
from edgeav.schema.runtime import PostprocessConfig
from edgeav.timebase import NS_PER_S, s_to_ns

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def utc_iso(utc_ns: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a Z, e.g. 2026-05-01T04:12:33.250Z."""
    if utc_ns is None:
        return None
    sec, ns = divmod(int(utc_ns), NS_PER_S)
    t = _dt.datetime.fromtimestamp(sec, tz=_dt.UTC) + _dt.timedelta(microseconds=ns // 1000)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Detection:
    """One confirmed detection of one class."""

    label: str
    class_index: int
    start_ns: int  # PTS (pipeline running time) of the first confirming window's start
    end_ns: int  # PTS of the confirming window's end
    start_utc: str | None
    end_utc: str | None
    confidence: float  # fused, smoothed probability
    audio_confidence: float | None  # audio-only head's probability (None when audio was missing)
    image_confidence: float | None  # image-only head's probability (None when the image was missing)
    modalities: tuple[str, ...]  # modalities present in the confirming window ("audio", "image")
    model_sha256: str | None
    hits: int  # windows over threshold that confirmed it

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


@dataclass(frozen=True)
class WindowScores:
    """Scores of one window: (C,) probabilities of each head and the smoothed fused ones."""

    start_ns: int
    end_ns: int
    fused: np.ndarray  # (C,) softmax(logits)
    smoothed: np.ndarray  # (C,)
    audio: np.ndarray | None  # (C,) softmax(logits_audio), None when audio missing
    image: np.ndarray | None  # (C,) softmax(logits_image), None when image missing
    labels: Sequence[str] = field(repr=False, default=())

    @property
    def top_index(self) -> int:
        return int(np.argmax(self.smoothed))

    @property
    def top_label(self) -> str:
        return self.labels[self.top_index]

    @property
    def top_score(self) -> float:
        return float(self.smoothed[self.top_index])


class PostProcessor:
    """Stateful, one per stream. `update(...)` per window, in time order."""

    def __init__(
        self,
        labels: Sequence[str],
        cfg: PostprocessConfig | None = None,
        model_sha256: str | None = None,
        utc_ns_for: Callable[[int], int | None] | None = None,
    ) -> None:
        self.labels = list(labels)
        self.cfg = cfg or PostprocessConfig()
        from edgeav.runtime.class_rules import ClassRules

        self.class_rules = ClassRules(self.labels, self.cfg.classes)  # include/exclude, per-class interval
        own = self.class_rules.thresholds
        self.thresholds = np.array([own.get(lb, self.cfg.threshold) for lb in self.labels], dtype=np.float32)
        self.model_sha256 = model_sha256
        self.utc_ns_for = utc_ns_for
        self.confirm_window_ns = s_to_ns(self.cfg.confirm_window_s)
        self.min_gap_ns = s_to_ns(self.cfg.min_gap_s)
        self._history: collections.deque[np.ndarray] = collections.deque(maxlen=self.cfg.mean_windows)
        self._ema: np.ndarray | None = None
        self._hits: dict[int, collections.deque[tuple[int, int]]] = {}  # class -> (start_ns, end_ns) of hits
        self._last_end: dict[int, int] = {}  # class -> end_ns of its last detection
        self.n_detections = 0

    def reset(self) -> None:
        """Forget the smoothing state (e.g. after a window with no sensor at all)."""
        self._history.clear()
        self._ema = None

    def _smooth(self, p: np.ndarray) -> np.ndarray:
        mode = self.cfg.smoothing
        if mode == "none":
            return p
        if mode == "ema":
            a = self.cfg.ema_alpha
            self._ema = p.copy() if self._ema is None else (a * p + (1.0 - a) * self._ema).astype(np.float32)
            return self._ema
        self._history.append(p)
        return np.mean(np.stack(self._history), axis=0).astype(np.float32)

    def update(
        self, start_ns: int, end_ns: int, outputs: Mapping[str, np.ndarray], mask: np.ndarray
    ) -> tuple[WindowScores, list[Detection]]:
        """`outputs`: the backend's logits for ONE window, each (C,) or (1, C); `mask`: (2,) [audio, image]."""
        logits = {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in outputs.items()}
        fused = softmax(logits["logits"])
        if fused.shape[0] != len(self.labels):
            raise ConfigError(f"model gives {fused.shape[0]} classes, {len(self.labels)} labels were given")
        has_audio, has_image = bool(mask[0] > 0.5), bool(mask[1] > 0.5)
        audio = softmax(logits["logits_audio"]) if has_audio and "logits_audio" in logits else None
        image = softmax(logits["logits_image"]) if has_image and "logits_image" in logits else None
        smoothed = self._smooth(fused)
        scores = WindowScores(start_ns, end_ns, fused, smoothed, audio, image, self.labels)
        modalities = tuple(m for m, on in (("audio", has_audio), ("image", has_image)) if on)
        detections: list[Detection] = []
        for c in np.flatnonzero(smoothed >= self.thresholds):
            c = int(c)
            hits = self._hits.setdefault(c, collections.deque())
            hits.append((start_ns, end_ns))
            while hits and hits[0][1] <= end_ns - self.confirm_window_ns:
                hits.popleft()
            if len(hits) < self.cfg.confirm_hits:
                continue
            last = self._last_end.get(c)
            if last is not None and end_ns - last < self.min_gap_ns:
                continue
            first_start = hits[0][0]
            n_hits = len(hits)
            hits.clear()
            self._last_end[c] = end_ns
            to_utc = self.utc_ns_for or (lambda _pts: None)
            det = Detection(
                label=self.labels[c],
                class_index=c,
                start_ns=first_start,
                end_ns=end_ns,
                start_utc=utc_iso(to_utc(first_start)),
                end_utc=utc_iso(to_utc(end_ns)),
                confidence=float(smoothed[c]),
                audio_confidence=None if audio is None else float(audio[c]),
                image_confidence=None if image is None else float(image[c]),
                modalities=modalities,
                model_sha256=self.model_sha256,
                hits=n_hits,
            )
            if not self.class_rules.keep(det):
                continue
            self.n_detections += 1
            log.info(
                "detection %s %.3f [%s] %.2f-%.2f s",
                det.label,
                det.confidence,
                "+".join(modalities) or "-",
                first_start / NS_PER_S,
                end_ns / NS_PER_S,
            )
            detections.append(det)
        return scores, detections


__all__ = ["softmax", "utc_iso", "Detection", "WindowScores", "PostProcessor"]
