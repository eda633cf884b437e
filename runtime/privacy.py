"""The privacy filter (`daemon.privacy`): Silero VAD over the stream's audio, asked about each detection's span.

Silero VAD is a small recurrent voice activity detector made for this job; its ONNX model ships inside the
`silero-vad` PyPI package (installed with --no-deps: its Python side imports torch, which a field unit does not
have). Only the .onnx file is used, found without importing the package, and run through edgeav.onnx_session.

The model takes 512 samples at 16 kHz (32 ms) with the 64 samples before them as context, its recurrent state
(2, 1, 128) and the rate, and gives the speech probability of the frame and the next state. `SileroVad` keeps that
state and context across calls: the daemon feeds each window's audio once (the part not fed before: windows
overlap), so the detector sees the stream as one signal; a gap in the audio resets it. The probabilities are kept
per frame with their times; `speech_s(start, end)` says how much speech lies in a span.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeav.errors import ConfigError
from edgeav.timebase import NS_PER_S

if TYPE_CHECKING:
    from edgeav.schema.integrations import PrivacyConfig

log = logging.getLogger(__name__)

VAD_RATE_HZ = 16_000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the model's frame
CONTEXT_SAMPLES = 64  # samples of the previous frame the model sees before each frame
FRAME_NS = FRAME_SAMPLES * NS_PER_S // VAD_RATE_HZ
STATE_SHAPE = (2, 1, 128)


def silero_model_path(model_path: str | None = None) -> Path:
    """The Silero VAD ONNX file: `model_path`, else silero_vad.onnx inside the installed silero-vad package (found by
    its spec: importing the package would import torch)."""
    if model_path is not None:
        p = Path(model_path)
        if not p.is_file():
            raise ConfigError(f"daemon.privacy.model_path {p}: not found")
        return p
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "daemon.privacy needs the Silero VAD model: pip install --no-deps silero-vad==6.2.3 "
            "(scripts/setup.sh does it; or set daemon.privacy.mode=off)"
        )
    p = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not p.is_file():
        raise ConfigError(f"the silero-vad package has no {p.name} at {p.parent}")
    return p


def to_vad_rate(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """(S,) float32 at `rate_hz` -> 16 kHz: every k-th sample for a multiple of 16 kHz (as Silero's own code does),
    linear interpolation otherwise."""
    a = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate_hz == VAD_RATE_HZ:
        return a
    if rate_hz % VAD_RATE_HZ == 0:
        return a[:: rate_hz // VAD_RATE_HZ]
    n = int(round(a.size * VAD_RATE_HZ / rate_hz))
    t = np.arange(n, dtype=np.float64) * (rate_hz / VAD_RATE_HZ)
    return np.interp(t, np.arange(a.size), a).astype(np.float32)


class SileroVad:
    """Streaming Silero VAD: `feed(audio, rate_hz, start_ns)` appends audio on a timeline; `speech_s(a, b)` is the
    speech time in [a, b) (frames with probability >= threshold). Frames are kept for `keep_s`."""

    def __init__(self, model_path: str | Path, threshold: float = 0.5, keep_s: float = 120.0) -> None:
        from edgeav.onnx_session import OnnxRunner

        # one thread, no spinning: a few 32 ms frames per window beside the main model
        self.runner = OnnxRunner.open(
            model_path, outputs=["output", "stateN"], intra_op_threads=1, allow_spinning=False
        )
        self.threshold = float(threshold)
        self.keep_ns = int(keep_s * NS_PER_S)
        self.frames: collections.deque[tuple[int, float]] = collections.deque()  # (start_ns of the frame, prob)
        self._sr = np.array(VAD_RATE_HZ, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state, the context and the unfed remainder (a gap in the audio)."""
        self._state = np.zeros(STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self._rest = np.zeros(0, np.float32)  # samples at 16 kHz waiting for a whole frame
        self._next_ns: int | None = None  # timeline time of the first sample of _rest

    def frame_prob(self, frame: np.ndarray) -> float:
        """One 512-sample frame (16 kHz) through the model, state carried."""
        x = np.concatenate([self._context, frame])[None, :]  # (1, 576)
        out = self.runner.run({"input": x, "state": self._state, "sr": self._sr})
        self._state = out["stateN"]
        self._context = frame[-CONTEXT_SAMPLES:]
        return float(out["output"].reshape(-1)[0])

    def feed(self, audio: np.ndarray, rate_hz: int, start_ns: int) -> int:
        """Audio from `start_ns` on; only what lies after what was fed already is used (overlapping windows). A gap
        of more than one frame resets the detector. Returns the number of frames run."""
        end_ns = start_ns + int(np.asarray(audio).size * NS_PER_S // rate_hz)
        fed_to = None if self._next_ns is None else self._next_ns + self._rest.size * NS_PER_S // VAD_RATE_HZ
        if fed_to is not None and start_ns > fed_to + FRAME_NS:
            self.reset()
            fed_to = None
        if fed_to is not None and end_ns <= fed_to:
            return 0
        a = to_vad_rate(audio, rate_hz)
        if fed_to is None:
            self._next_ns = start_ns
        else:
            skip = max(0, int(round((fed_to - start_ns) * VAD_RATE_HZ / NS_PER_S)))
            a = a[skip:]
        buf = np.concatenate([self._rest, a]) if self._rest.size else a
        n = buf.size // FRAME_SAMPLES
        for i in range(n):
            p = self.frame_prob(buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            self.frames.append((self._next_ns, p))
            self._next_ns += FRAME_NS
        self._rest = buf[n * FRAME_SAMPLES :].copy()
        while self.frames and self.frames[0][0] < self._next_ns - self.keep_ns:
            self.frames.popleft()
        return n

    def speech_s(self, start_ns: int, end_ns: int) -> float:
        """Seconds of speech frames overlapping [start_ns, end_ns). The frames are in time order and a detection's
        span is recent: walked from the newest back to `start_ns` only, not the whole `keep_s` (a 3.5 s span with 60 s
        kept: ~5 us instead of ~50 us per detection)."""
        n = 0
        for t, p in reversed(self.frames):
            if t + FRAME_NS <= start_ns:
                break
            n += t < end_ns and p >= self.threshold
        return n * FRAME_NS / NS_PER_S


class PrivacyFilter:
    """`daemon.privacy` around a SileroVad: `window(w)` feeds a window's audio; `verdict(det)` says what to do with a
    detection: "clear", "drop_audio" or "drop_detection"."""

    def __init__(self, cfg: PrivacyConfig, keep_s: float = 120.0) -> None:
        self.cfg = cfg
        self.vad = SileroVad(silero_model_path(cfg.model_path), cfg.threshold, keep_s=keep_s)
        self.pad_ns = int(cfg.pad_s * NS_PER_S)
        self.counts: collections.Counter[str] = collections.Counter()
        log.info(
            "privacy filter: %s when >= %.3f s of speech (Silero VAD p >= %.2f) in a detection's span",
            cfg.mode,
            cfg.min_speech_s,
            cfg.threshold,
        )

    def window(self, audio: np.ndarray | None, rate_hz: int, start_ns: int) -> None:
        if audio is not None:
            self.vad.feed(audio, rate_hz, start_ns)

    def is_speech(self, start_ns: int, end_ns: int) -> bool:
        # half a frame of slack: min_speech_s counts whole 32 ms frames
        return self.vad.speech_s(start_ns - self.pad_ns, end_ns) + 1e-9 >= self.cfg.min_speech_s - FRAME_NS / 2e9

    def verdict(self, start_ns: int, end_ns: int) -> str:
        v = self.cfg.mode if self.is_speech(start_ns, end_ns) else "clear"
        self.counts[v] += 1
        if v != "clear":
            log.info("privacy: speech in %.2f-%.2f s: %s", start_ns / NS_PER_S, end_ns / NS_PER_S, v)
        return v


__all__ = ["SileroVad", "PrivacyFilter", "silero_model_path", "to_vad_rate", "VAD_RATE_HZ", "FRAME_SAMPLES"]
