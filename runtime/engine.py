"""The runner: source -> aligner -> backend -> post-processor, and segment scoring for replays.

`run_stream(...)` yields one `WindowResult(window, scores, detections)` per aligned window (unpacks as a
triple). A missing sensor sets its column of the model's `mask` to 0 and feeds zeros in its place; a window with no
sensor at all is yielded without inference (scores None).
"""

from __future__ import annotations

import collections
import csv
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import ConfigError, DataError, ModelError, SensorError
from edgeav.manifest import sha256_file
from edgeav.runtime.align import AlignedWindow, Aligner
from edgeav.runtime.backends import Backend, backend_from_config
from edgeav.runtime.capture import Capture, ReadStatus
from edgeav.runtime.postprocess import Detection, PostProcessor, WindowScores
from edgeav.runtime.sources import mask_credentials
from edgeav.schema.runtime import RuntimeConfig, SourceConfig
from edgeav.timebase import NS_PER_S, s_to_ns

log = logging.getLogger(__name__)


class WindowResult(NamedTuple):
    window: AlignedWindow
    scores: WindowScores | None  # None when neither sensor had data (no inference)
    detections: list[Detection]


def make_batch(window: AlignedWindow, contract: InputContract) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's inputs for one window: audio (1, S) f32, image (1, 3, H, W) u8 (T = 1) or (1, T, 3, H, W) u8
    (T = contract.image.n_frames > 1), mask (1, 2) f32.

    A missing modality is zeros with its mask column 0; a missing frame of a T-frame window is already a zero frame
    (the aligner's `frames_present` says which). Whole frames go in: the model crops its region of interest itself.
    """
    shapes = contract.shapes(batch=1)
    if window.audio is not None:
        audio = window.audio.reshape(shapes["audio"]).astype(np.float32, copy=False)  # (1, S)
    else:
        audio = np.zeros(shapes["audio"], dtype=np.float32)
    if window.frames is not None:
        n, h, w = contract.image.n_frames, contract.image.height_px, contract.image.width_px
        frames = window.frames  # (T, H, W, 3)
        if n == 1:
            frames = frames[len(frames) // 2][None]  # (1, H, W, 3): the frame nearest the centre
        if frames.shape != (n, h, w, 3):
            raise SensorError(f"window frames are {tuple(window.frames.shape)}, the contract takes ({n}, {h}, {w}, 3)")
        if frames.dtype != np.uint8:
            raise SensorError(f"window frames are {frames.dtype}, the contract takes uint8 RGB")
        chw = frames.transpose(0, 3, 1, 2)  # (T, 3, H, W)
        image = np.ascontiguousarray(chw if n > 1 else chw[0])[None]  # (1, T, 3, H, W) or (1, 3, H, W)
    else:
        image = np.zeros(shapes["image"], dtype=np.uint8)
    mask = window.mask().reshape(1, 2)  # (1, 2)
    return audio, image, mask


def source_for_contract(src_cfg: SourceConfig, contract: InputContract) -> SourceConfig:
    """The source config the model needs: with T > 1 frames per window, frames must arrive at the contract's
    `frame_rate_hz` (videorate), whatever `source.fps` says - at another rate the targets would find no frames."""
    rate = contract.image.frame_rate_hz
    if contract.image.n_frames == 1 or rate is None or abs(src_cfg.fps - rate) < 1e-6:
        return src_cfg
    (log.warning if "fps" in src_cfg.model_fields_set else log.info)(
        "source fps %g -> %g: the model takes %d frames per window at %g Hz",
        src_cfg.fps,
        rate,
        contract.image.n_frames,
        rate,
    )
    return src_cfg.model_copy(update={"fps": float(rate)})


def infer_windows(
    windows: Iterable[AlignedWindow],
    backend: Backend,
    contract: InputContract,
    post: PostProcessor,
    batch_windows: int = 1,
) -> Iterator[WindowResult]:
    """Inference and post-processing over already aligned windows (no GStreamer needed).

    `batch_windows` > 1 runs up to that many windows (capped by `backend.max_batch`) through the model in one call;
    the post-processor still sees them one by one, in time order. The results are the same, only faster.
    """
    cap = backend.max_batch
    n_batch = max(1, min(int(batch_windows), cap if cap is not None else int(batch_windows)))
    pending: list[AlignedWindow] = []

    def run(ws: list[AlignedWindow]) -> Iterator[WindowResult]:
        batches = [make_batch(w, contract) for w in ws]
        audio = np.concatenate([b[0] for b in batches]) if len(ws) > 1 else batches[0][0]  # (N, S)
        image = np.concatenate([b[1] for b in batches]) if len(ws) > 1 else batches[0][1]  # (N, [T,] 3, H, W)
        mask = np.concatenate([b[2] for b in batches]) if len(ws) > 1 else batches[0][2]  # (N, 2)
        outputs = backend.infer(audio, image, mask)  # each (N, C)
        for k, w in enumerate(ws):
            scores, dets = post.update(w.start_ns, w.end_ns, {n: v[k] for n, v in outputs.items()}, mask[k])
            yield WindowResult(w, scores, dets)

    for w in windows:
        if w.audio is None and w.frames is None:
            if pending:
                yield from run(pending)
                pending = []
            post.reset()
            yield WindowResult(w, None, [])
            continue
        pending.append(w)
        if len(pending) >= n_batch:
            yield from run(pending)
            pending = []
    if pending:
        yield from run(pending)


def _resolve_backend(
    bundle_or_backend: Backend | str | Path, contract: InputContract | None, cfg: RuntimeConfig
) -> tuple[Backend, InputContract, str | None, bool]:
    if isinstance(bundle_or_backend, Backend):
        b = bundle_or_backend
        path = getattr(b, "model_path", None)
        sha = sha256_file(path) if path is not None and Path(path).is_file() else None
        return b, contract or b.input_contract, sha, False
    path = Path(bundle_or_backend)
    if path.suffix.lower() not in (".onnx", ".engine", ".plan", ".pt"):
        raise ModelError(
            f"{path}: expected a .onnx, .engine or (development) .pt model, or a Backend (bundle loading is the CLI's job)"
        )
    if contract is None:
        raise ConfigError("a contract is needed with a bare model file (the bundle manifest carries it)")
    return backend_from_config(cfg.backend, path, contract), contract, sha256_file(path), True


def run_stream(
    source_uri: str | SourceConfig,
    bundle_or_backend: Backend | str | Path,
    contract: InputContract | None,
    labels: Sequence[str],
    cfg: RuntimeConfig | None = None,
    realtime: bool = False,
    model_sha256: str | None = None,
) -> Iterator[WindowResult]:
    """Capture from `source_uri`, align, infer, post-process; yield a WindowResult per window until EOS.

    `bundle_or_backend`: a ready `Backend`, or a model file opened with `cfg.backend`. `contract` None = the
    backend's own. `realtime` paces file replay on the clock (sync=true); else as fast as possible.
    Raises SensorError on a pipeline error or when no data comes for `cfg.source.stall_timeout_s`. Closing the
    iterator (break) stops the pipeline.
    """
    cfg = cfg or RuntimeConfig()
    src_cfg = source_uri if isinstance(source_uri, SourceConfig) else cfg.source.model_copy(update={"uri": source_uri})
    backend, contract, sha, owned = _resolve_backend(bundle_or_backend, contract, cfg)
    src_cfg = source_for_contract(src_cfg, contract)
    if backend.input_contract != contract:
        log.warning("the given contract differs from the backend's; using the given one")
    try:
        with Capture(src_cfg, contract, realtime=realtime) as cap:
            log.info("run: %s -> %s, streams %s", mask_credentials(src_cfg.uri), backend.name, "+".join(cap.streams))
            aligner = Aligner(contract, cfg.align, streams=cap.streams, live=cap.is_live)
            post = PostProcessor(labels, cfg.postprocess, model_sha256=model_sha256 or sha, utc_ns_for=cap.utc_ns_for)
            timeout_ns = s_to_ns(src_cfg.read_timeout_s)
            stall_s = src_cfg.stall_timeout_s
            last_data = time.monotonic()
            # Live: every window goes to the model as soon as it is complete (latency). Fast replay: windows wait
            # until a batch is full (throughput); realtime replay behaves as live.
            batch = 1 if (cap.is_live or realtime) else cfg.backend.replay_batch_windows
            pending: list[AlignedWindow] = []
            while True:
                status, item = cap.read(timeout_ns)
                if status is ReadStatus.OK:
                    last_data = time.monotonic()
                    aligner.push(item)
                    pending.extend(aligner.ready())
                    if len(pending) >= batch:
                        yield from infer_windows(pending, backend, contract, post, batch)
                        pending = []
                elif status is ReadStatus.TIMEOUT:
                    if pending:
                        yield from infer_windows(pending, backend, contract, post, batch)
                        pending = []
                    if time.monotonic() - last_data > stall_s:
                        raise SensorError(f"{mask_credentials(src_cfg.uri)}: no data for {stall_s:g} s")
                elif status is ReadStatus.EOS:
                    yield from infer_windows(pending + aligner.flush(), backend, contract, post, batch)
                    log.info("end of stream: %s; aligner %s", cap.stats(), aligner.counters)
                    return
                else:
                    raise SensorError(f"{mask_credentials(src_cfg.uri)}: {cap.error or 'capture failed'}")
    finally:
        if owned:
            backend.close()


# -- segment scoring for replays ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    start_ns: int
    end_ns: int
    label: str


@dataclass(frozen=True)
class WindowPrediction:
    centre_ns: int
    label: str
    scores: np.ndarray | None = None  # (C,) probabilities, for method="mean"


@dataclass
class SegmentResult:
    segment: Segment
    predicted: str | None  # None: no window centre fell in the segment
    n_windows: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.segment.label


@dataclass
class SegmentReport:
    method: str
    accuracy: float  # over all segments (a segment without windows counts as wrong)
    accuracy_scored: float  # over segments that had at least one window
    n_segments: int
    n_scored: int
    segments: list[SegmentResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "accuracy": self.accuracy,
            "accuracy_scored": self.accuracy_scored,
            "n_segments": self.n_segments,
            "n_scored": self.n_scored,
            "segments": [
                {
                    "start_s": r.segment.start_ns / NS_PER_S,
                    "end_s": r.segment.end_ns / NS_PER_S,
                    "label": r.segment.label,
                    "predicted": r.predicted,
                    "n_windows": r.n_windows,
                }
                for r in self.segments
            ],
        }


def read_segments_csv(path: str | Path) -> list[Segment]:
    """Ground truth: a CSV with columns start_s,end_s,label (others ignored), sorted by start."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: ground-truth CSV not found")
    out = []
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"start_s", "end_s", "label"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"{p}: needs columns {sorted(need)}, has {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            try:
                s, e = s_to_ns(float(row["start_s"])), s_to_ns(float(row["end_s"]))
            except ValueError:
                raise DataError(f"{p}:{i}: start_s/end_s are not numbers") from None
            if e <= s:
                raise DataError(f"{p}:{i}: end_s must be after start_s")
            out.append(Segment(s, e, row["label"]))
    return sorted(out, key=lambda g: g.start_ns)


def predictions_from_results(results: Iterable[WindowResult], smoothed: bool = False) -> list[WindowPrediction]:
    """Per-window top labels (of the fused probabilities unless `smoothed`) with their centre times."""
    out = []
    for r in results:
        if r.scores is None:
            continue
        p = r.scores.smoothed if smoothed else r.scores.fused
        out.append(WindowPrediction(r.window.centre_ns, r.scores.labels[int(np.argmax(p))], p))
    return out


def score_segments(
    predictions: Iterable[WindowPrediction | tuple],
    segments: Sequence[Segment] | str | Path,
    method: str = "majority",
    labels: Sequence[str] | None = None,
) -> SegmentReport:
    """Segment accuracy: each segment's label is the majority of its windows' top labels (ties: higher summed
    score, then name), or with method="mean" the argmax of the mean of their score vectors (needs `labels`).
    A window belongs to the segment its centre lies in ([start, end)). Tuples are (centre_ns, label[, scores]).
    """
    if method not in ("majority", "mean"):
        raise ConfigError(f"unknown segment scoring method {method!r}; valid: majority, mean")
    segs = read_segments_csv(segments) if isinstance(segments, (str, Path)) else list(segments)
    preds = [p if isinstance(p, WindowPrediction) else WindowPrediction(*p) for p in predictions]
    if method == "mean" and labels is None:
        raise ConfigError("method='mean' needs the labels (the order of the score vectors)")
    starts = np.array([g.start_ns for g in segs], dtype=np.int64)
    buckets: list[list[WindowPrediction]] = [[] for _ in segs]
    for p in preds:
        i = int(np.searchsorted(starts, p.centre_ns, side="right")) - 1
        if 0 <= i < len(segs) and p.centre_ns < segs[i].end_ns:
            buckets[i].append(p)
    results = []
    for g, ws in zip(segs, buckets):
        if not ws:
            results.append(SegmentResult(g, None, 0))
            continue
        if method == "mean":
            if any(w.scores is None for w in ws):
                raise ConfigError("method='mean' needs scores with every window prediction")
            mean = np.mean(np.stack([w.scores for w in ws]), axis=0)
            pred = list(labels)[int(np.argmax(mean))]  # type: ignore[arg-type]
        else:
            votes = collections.Counter(w.label for w in ws)
            mass: dict[str, float] = collections.defaultdict(float)
            for w in ws:
                mass[w.label] += float(np.max(w.scores)) if w.scores is not None else 0.0
            pred = sorted(votes, key=lambda lb: (-votes[lb], -mass[lb], lb))[0]
        results.append(SegmentResult(g, pred, len(ws)))
    scored = [r for r in results if r.predicted is not None]
    n_ok = sum(r.correct for r in results)
    return SegmentReport(
        method=method,
        accuracy=n_ok / len(results) if results else 0.0,
        accuracy_scored=(sum(r.correct for r in scored) / len(scored)) if scored else 0.0,
        n_segments=len(results),
        n_scored=len(scored),
        segments=results,
    )


__all__ = [
    "WindowResult",
    "make_batch",
    "source_for_contract",
    "infer_windows",
    "run_stream",
    "Segment",
    "WindowPrediction",
    "SegmentResult",
    "SegmentReport",
    "read_segments_csv",
    "predictions_from_results",
    "score_segments",
]
