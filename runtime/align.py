"""Alignment core in plain numpy: pair audio windows with frames by PTS, and say when a modality is missing.

No GStreamer here. Feed it `push_audio(pts_ns, samples, rate_hz)` / `push_frame(pts_ns, rgb)` (or `push(item)`
with capture items) in any interleaving; `ready()` returns every window that can be decided now, `flush()` the
rest at end of stream.

Windows end on a grid of `hop` (anchored at PTS 0): a window ending at `end_ns` holds the `window_samples` audio
samples in [end_ns - D, end_ns) (D = their duration) and the frame nearest to each of the contract's frame targets
(`ImageContract.frame_offsets_ns`: one frame = the window's centre; T frames = k / frame_rate_hz from its start).
Each audio chunk is placed by its own PTS, so discontinuities become gaps, never drift. Each sensor's latency
offset (ns) is subtracted from its PTS on arrival.

Missing frames (T > 1): a target with no frame within the tolerance (`frame_tolerance_ms`, and never more than
half a frame period, so one frame never stands for two targets) is a zero frame with `frames_present[k]` False -
never a copy of a neighbour. Fewer present frames than `min_frames_present_fraction` of T: no image for the window.

Live or replay: on a live source a window waits at most `max_wait_s` past its end for a lagging sensor (a dead
camera must not stop the microphone). On a replay (`live=False`: a file decoded as fast as it goes, where one
decoder may run seconds ahead of the other) a window waits for every sensor until that sensor's data passes it or
`end_stream(kind)` says the sensor has ended; nothing is decided on one sensor's say-so.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import SensorError
from edgeav.schema.runtime import AlignConfig
from edgeav.timebase import NS_PER_MS, NS_PER_S, ns_for_samples, s_to_ns, samples_for_ns

if TYPE_CHECKING:
    from edgeav.runtime.capture import CaptureItem

log = logging.getLogger(__name__)

AUDIO = "audio"
IMAGE = "image"


@dataclass(frozen=True)
class AlignedWindow:
    """One model input's worth of sensor data, or the reason a modality is missing."""

    start_ns: int
    end_ns: int
    audio: np.ndarray | None  # (window_samples,) float32, or None when missing
    frames: np.ndarray | None  # (n_frames, H, W, 3) uint8 (zeros where a frame is missing), or None when missing
    frame_pts_ns: tuple[int, ...] = ()  # (n_frames,) PTS of each frame; the target time where it is missing
    missing: dict[str, str] = field(default_factory=dict)  # modality -> why it is missing
    audio_filled_ns: int = 0  # zero-filled audio inside the window (small gaps within max_gap_ms)
    frames_present: tuple[bool, ...] = ()  # (n_frames,) False = no frame within tolerance (a zero frame)

    @property
    def centre_ns(self) -> int:
        return (self.start_ns + self.end_ns) // 2

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_image(self) -> bool:
        return self.frames is not None

    @property
    def n_missing_frames(self) -> int:
        """Frames of an image-bearing window that are zeros for want of a frame within tolerance."""
        return sum(not p for p in self.frames_present)

    def mask(self) -> np.ndarray:
        """(2,) float32 [audio_present, image_present], the model's `mask` row."""
        return np.array([float(self.has_audio), float(self.has_image)], dtype=np.float32)


class Aligner:
    """Ring buffers per sensor and a window clock. Memory is bounded by window + max_wait + retain."""

    def __init__(
        self,
        contract: InputContract,
        cfg: AlignConfig | None = None,
        streams: Iterable[str] = ("video", "audio"),
        live: bool = True,
    ) -> None:
        self.contract = contract
        self.live = bool(live)
        self._ended: set[str] = set()  # sensors that said end-of-stream (replay)
        self.cfg = cfg or AlignConfig()
        self.streams = frozenset(streams)
        self.rate_hz = contract.audio.sample_rate_hz
        self.window_samples = contract.audio.window_samples
        self.window_ns = ns_for_samples(self.window_samples, self.rate_hz)
        self.hop_ns = s_to_ns(self.cfg.hop_s)
        if self.hop_ns <= 0:
            raise ValueError("hop must be positive")
        self.n_frames = contract.image.n_frames
        self.frame_offsets_ns = contract.image.frame_offsets_ns(self.window_ns)  # (n_frames,) from the window start
        self.tolerance_ns = int(round(self.cfg.frame_tolerance_ms * NS_PER_MS))
        if self.n_frames > 1:  # half a frame period at most: one frame never stands for two targets
            assert contract.image.frame_rate_hz is not None  # the contract insists on it for T > 1
            self.tolerance_ns = min(self.tolerance_ns, int(NS_PER_S / contract.image.frame_rate_hz) // 2)
        # at least one frame, and this share of T, must be present for the window to have an image
        self.min_frames_present = max(1, math.ceil(self.cfg.min_frames_present_fraction * self.n_frames - 1e-9))
        self.max_gap_ns = int(round(self.cfg.max_gap_ms * NS_PER_MS))
        self.max_wait_ns = s_to_ns(self.cfg.max_wait_s)
        self.retain_ns = s_to_ns(self.cfg.retain_s)
        # (pts_ns, end_ns, samples (N,)): the end is computed once, on arrival
        self._audio: collections.deque[tuple[int, int, np.ndarray]] = collections.deque()
        self._frames: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (pts_ns, rgb (H,W,3))
        self._audio_wm: int | None = None  # end time of the latest audio sample seen
        self._audio_unordered = False  # an audio chunk arrived before one it precedes
        self._video_wm: int | None = None  # latest frame PTS seen
        self._video_end: int | None = None  # latest frame PTS + its duration (stream time of the video)
        self._next_end: int | None = None
        self.counters = {
            "windows": 0,
            "skipped_windows": 0,
            "late_audio_chunks": 0,
            "late_frames": 0,
            "pruned_audio_chunks": 0,
            "pruned_frames": 0,
            "missing_frames": 0,
        }

    # -- input -----------------------------------------------------------------------------------------------
    def push(self, item: CaptureItem) -> None:
        """Accept a capture item (`AudioChunk` / `VideoFrame` / `StreamEnd`, by their `kind`)."""
        if item.kind == "end":
            self.end_stream(item.stream)
        elif item.kind == "audio":
            self.push_audio(item.pts_ns, item.samples, item.rate_hz)
        else:
            self.push_frame(item.pts_ns, item.rgb, getattr(item, "duration_ns", 0))

    def push_audio(self, pts_ns: int, samples: np.ndarray, rate_hz: int) -> None:
        if int(rate_hz) != self.rate_hz:
            raise SensorError(f"audio at {rate_hz} Hz, the model takes {self.rate_hz} Hz (resample in the pipeline)")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)  # (N,)
        if samples.size == 0:
            return
        pts = int(pts_ns) - self.cfg.audio_offset_ns
        end = pts + ns_for_samples(samples.size, self.rate_hz)
        self._start_clock(pts)
        if self._next_end is not None and end <= self._next_end - self.window_ns:
            self.counters["late_audio_chunks"] += 1  # entirely before every window still to come
            return
        if self._audio and pts < self._audio[-1][1]:
            self._audio_unordered = True  # came out of order (or overlaps): pruning must scan the buffer once
        self._audio.append((pts, end, samples))
        self._audio_wm = end if self._audio_wm is None else max(self._audio_wm, end)

    def push_frame(self, pts_ns: int, rgb: np.ndarray, duration_ns: int = 0) -> None:
        """A frame at `pts_ns`, on screen for `duration_ns` (0 = unknown): the stream time reaches its end."""
        pts = int(pts_ns) - self.cfg.video_offset_ns
        self._start_clock(pts)
        if self._next_end is not None and pts < self._next_end - self.window_ns - self.tolerance_ns:
            self.counters["late_frames"] += 1
            return
        self._frames.append((pts, rgb))
        self._video_wm = pts if self._video_wm is None else max(self._video_wm, pts)
        end = pts + max(0, int(duration_ns))
        self._video_end = end if self._video_end is None else max(self._video_end, end)

    def end_stream(self, kind: str) -> None:
        """A sensor ended ("audio" / "video"): windows stop waiting for it (its later windows report it missing)."""
        if kind not in ("audio", "video"):
            raise ValueError(f"unknown stream {kind!r}; valid: audio, video")
        self._ended.add(kind)

    def _start_clock(self, pts: int) -> None:
        if self._next_end is None:
            first_end = pts + self.window_ns
            self._next_end = -(-first_end // self.hop_ns) * self.hop_ns  # first grid point with a full window

    # -- output ----------------------------------------------------------------------------------------------
    @property
    def now_ns(self) -> int | None:
        """Stream time: the latest data time seen from any sensor (after offsets)."""
        wms = [w for w in (self._audio_wm, self._video_end) if w is not None]
        return max(wms) if wms else None

    def _targets(self, start_ns: int) -> list[int]:
        """(n_frames,) times the frames of the window starting at `start_ns` should have; the last one is what the
        video must reach before the window can be decided."""
        return [start_ns + off for off in self.frame_offsets_ns]

    def _is_ready(self, end_ns: int, now: int) -> bool:
        if end_ns > now:
            return False
        if self.live and now >= end_ns + self.max_wait_ns:
            return True
        waiting = self.streams - self._ended
        if "audio" in waiting and (self._audio_wm is None or self._audio_wm < end_ns):
            return False
        if "video" in waiting:
            last_target = self._targets(end_ns - self.window_ns)[-1]
            if self._video_wm is None or self._video_wm < last_target:
                return False
        return True

    def ready(self) -> list[AlignedWindow]:
        """Every window that can be decided now, oldest first."""
        now = self.now_ns
        if now is None or self._next_end is None:
            return []
        backlog = (now - self._next_end) // self.hop_ns
        if self.live and backlog > self.cfg.max_backlog_windows:  # a replay never skips: nothing is late
            skip = backlog - self.cfg.max_backlog_windows
            self.counters["skipped_windows"] += skip
            log.warning(
                "aligner: %d windows skipped after a stall (backlog over %d)", skip, self.cfg.max_backlog_windows
            )
            self._next_end += skip * self.hop_ns
        out = []
        while self._is_ready(self._next_end, now):
            out.append(self._assemble(self._next_end))
            self._next_end += self.hop_ns
            self._prune()
        self._cap_memory(now)
        return out

    def flush(self) -> list[AlignedWindow]:
        """At end of stream: every remaining window that ends at or before the last data time."""
        now = self.now_ns
        out = self.ready()
        if now is None or self._next_end is None:
            return out
        while self._next_end <= now:
            out.append(self._assemble(self._next_end))
            self._next_end += self.hop_ns
        self._prune()
        return out

    # -- assembly ------------------------------------------------------------------------------------------------
    def _assemble(self, end_ns: int) -> AlignedWindow:
        start_ns = end_ns - self.window_ns
        missing: dict[str, str] = {}
        audio, filled_ns = self._assemble_audio(start_ns, missing)
        frames, frame_pts, present = self._assemble_frames(start_ns, missing)
        self.counters["windows"] += 1
        return AlignedWindow(start_ns, end_ns, audio, frames, frame_pts, missing, filled_ns, present)

    def _assemble_audio(self, start_ns: int, missing: dict[str, str]) -> tuple[np.ndarray | None, int]:
        if "audio" not in self.streams:
            missing[AUDIO] = "source has no audio stream"
            return None, 0
        n = self.window_samples
        out = np.zeros(n, dtype=np.float32)  # (T,)
        covered = np.zeros(n, dtype=bool)
        end_ns = start_ns + self.window_ns
        for pts, chunk_end, samples in self._audio:
            if pts >= end_ns or chunk_end <= start_ns:
                continue
            a = samples_for_ns(pts - start_ns, self.rate_hz)  # window index of the chunk's first sample
            lo, hi = max(a, 0), min(a + samples.size, n)
            if hi <= lo:
                continue
            out[lo:hi] = samples[lo - a : hi - a]
            covered[lo:hi] = True
        n_cov = int(covered.sum())
        if n_cov == 0:
            missing[AUDIO] = "no audio received yet" if self._audio_wm is None else "no audio data covering window"
            return None, 0
        n_missing = n - n_cov
        gap_ns = ns_for_samples(n_missing, self.rate_hz)
        if n_missing and gap_ns > self.max_gap_ns:
            longest = _longest_false_run(covered)
            missing[AUDIO] = (
                f"gap of {gap_ns / NS_PER_MS:.1f} ms in audio window "
                f"(longest {ns_for_samples(longest, self.rate_hz) / NS_PER_MS:.1f} ms, "
                f"tolerance {self.max_gap_ns / NS_PER_MS:.1f} ms)"
            )
            return None, 0
        return out, gap_ns

    def _assemble_frames(
        self, start_ns: int, missing: dict[str, str]
    ) -> tuple[np.ndarray | None, tuple[int, ...], tuple[bool, ...]]:
        if "video" not in self.streams:
            missing[IMAGE] = "source has no video stream"
            return None, (), ()
        if self._video_wm is None:
            missing[IMAGE] = "no frame received yet"
            return None, (), ()
        targets = self._targets(start_ns)
        tol_ms = self.tolerance_ns / NS_PER_MS
        if not self._frames:  # all pruned: the latest frame seen is the nearest one
            self.counters["missing_frames"] += len(targets)
            dist = min(abs(self._video_wm - t) for t in targets)
            missing[IMAGE] = f"nearest frame {dist / NS_PER_MS:.1f} ms away > tolerance {tol_ms:.1f} ms"
            return None, (), ()
        pts_arr = np.fromiter((p for p, _ in self._frames), dtype=np.int64, count=len(self._frames))
        picked: list[int | None] = []  # (n_frames,) buffer index, None = missing frame
        worst_ns = 0  # distance of the nearest frame of the worst missing target
        for target in targets:
            i = int(np.argmin(np.abs(pts_arr - target)))
            dist = abs(int(pts_arr[i]) - target)
            if dist > self.tolerance_ns or (picked and picked[-1] == i):  # too far, or the previous target's frame
                picked.append(None)
                worst_ns = max(worst_ns, dist)
            else:
                picked.append(i)
        present = tuple(i is not None for i in picked)
        n_present = sum(present)
        self.counters["missing_frames"] += len(targets) - n_present
        if n_present < self.min_frames_present:
            if self.n_frames == 1:
                missing[IMAGE] = f"nearest frame {worst_ns / NS_PER_MS:.1f} ms away > tolerance {tol_ms:.1f} ms"
            else:
                missing[IMAGE] = (
                    f"{n_present} of {self.n_frames} frames within tolerance {tol_ms:.1f} ms of their targets "
                    f"(need {self.min_frames_present}: min_frames_present_fraction "
                    f"{self.cfg.min_frames_present_fraction:g})"
                )
            return None, (), ()
        like = self._frames[next(i for i in picked if i is not None)][1]  # (H, W, 3)
        zero = np.zeros_like(like)
        frames = np.stack([self._frames[i][1] if i is not None else zero for i in picked])  # (n_frames, H, W, 3)
        pts = tuple(int(pts_arr[i]) if i is not None else t for i, t in zip(picked, targets))
        return frames, pts, present

    # -- memory ----------------------------------------------------------------------------------------------
    def _prune(self) -> None:
        """Drop what no future window can use."""
        if self._next_end is None:
            return
        first_start = self._next_end - self.window_ns
        keep_after = first_start
        if self._audio:
            while self._audio and self._audio[0][1] <= keep_after:  # in-order arrival: the common case
                self._audio.popleft()
                self.counters["pruned_audio_chunks"] += 1
            if self._audio_unordered:  # a chunk that came out of order may hide behind newer ones
                kept = collections.deque(c for c in self._audio if c[1] > keep_after)
                self.counters["pruned_audio_chunks"] += len(self._audio) - len(kept)
                self._audio = kept
                self._audio_unordered = any(a[1] > b[0] for a, b in zip(kept, list(kept)[1:]))
        # Keep one frame before the next window (it may still be the nearest).
        while len(self._frames) > 1 and self._frames[1][0] <= first_start - self.tolerance_ns:
            self._frames.popleft()
            self.counters["pruned_frames"] += 1
        if len(self._frames) == 1 and self._frames[0][0] < first_start - self.tolerance_ns:
            self._frames.popleft()
            self.counters["pruned_frames"] += 1

    def _cap_memory(self, now: int) -> None:
        """Hard bound: nothing older than window + max_wait + retain before the stream time is kept.

        On a replay the stream time is the slowest sensor's (still running) watermark: data a pending window
        needs is never dropped because another decoder ran ahead."""
        if not self.live:
            wms = [
                wm
                for k, wm in (("audio", self._audio_wm), ("video", self._video_wm))
                if k in self.streams and k not in self._ended and wm is not None
            ]
            now = min(wms) if wms else now
        horizon = now - (self.window_ns + self.max_wait_ns + self.retain_ns)
        while self._audio and self._audio[0][1] < horizon:
            self._audio.popleft()
            self.counters["pruned_audio_chunks"] += 1
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()
            self.counters["pruned_frames"] += 1

    def buffered(self) -> dict[str, int]:
        return {
            "audio_chunks": len(self._audio),
            "audio_samples": int(sum(s.size for _, _, s in self._audio)),
            "frames": len(self._frames),
        }


def _longest_false_run(covered: np.ndarray) -> int:
    x = np.concatenate(([1], covered.astype(np.int8), [1]))
    d = np.diff(x)
    starts = np.flatnonzero(d == -1)
    ends = np.flatnonzero(d == 1)
    return int((ends - starts).max()) if starts.size else 0


__all__ = ["Aligner", "AlignedWindow", "AUDIO", "IMAGE"]
