"""Reading archive media for `edgeav analyze`, streamed: audio files, videos with sound, photos.

Audio is decoded and resampled to the contract's rate block by block (PyAV), so a 10-hour recording is never in
memory: `audio_windows` yields one window of `window_samples` at a time; the last, partial window is zero-padded
when it holds at least half a window (as BirdNET pads its last chunk), else dropped. Video frames are taken for each
window where the contract wants them (the centre for a still model, T frames at the frame rate from the start for a
clip model), the nearest decoded frame to each, scaled to the contract's size by stretching (as the runtime's
videoscale does); they are kept only until their window is complete.

Times of deployments: `audiomoth_time_utc_ns` reads a recorder's file name (20240501_053000.WAV), `photo_time_ns`
a photo's EXIF DateTimeOriginal (or DateTime).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import MediaError
from edgeav.timebase import NS_PER_S

AUDIO_EXTS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma"})
VIDEO_EXTS = frozenset({".mp4", ".mkv", ".avi", ".mpg", ".mpeg", ".mov", ".flv", ".webm", ".m4v", ".ts"})
PHOTO_EXTS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
BLOCK_SAMPLES = 1 << 16  # resampled samples handed on at a time
_AUDIOMOTH = re.compile(r"(?<!\d)(\d{8})_(\d{6})(?!\d)")


def media_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in VIDEO_EXTS:
        return "video"
    if ext in PHOTO_EXTS:
        return "photo"
    return None


@dataclass
class Window:
    """One model window of a file: `index` k covers [k * window_s, (k + 1) * window_s) of the file."""

    index: int
    audio: np.ndarray | None  # (S,) float32, None = masked
    frames: np.ndarray | None  # (T, H, W, 3) uint8, None = masked
    valid_s: float  # seconds of real (not padded) audio or video in the window


def _open(path: Path):  # noqa: ANN202 - av is imported here only
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot open: {e}") from None


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator:
    """The open container; any decoder error inside becomes a MediaError naming the file; closed on leaving."""
    container = _open(path)
    try:
        yield container
    except MediaError:
        raise
    except Exception as e:  # av raises its own error types for corrupt data
        raise MediaError(f"{path}: cannot decode: {type(e).__name__}: {e}") from None
    finally:
        container.close()


def _resampler(stream, rate_hz: int):  # noqa: ANN001, ANN202 - av is imported here only
    """PyAV's resampler to mono float32 at `rate_hz` (deterministic per file), the stream decoded on one thread."""
    import av

    stream.thread_count = 1
    return av.AudioResampler(format="flt", layout="mono", rate=rate_hz)


def _resample(resampler, frame) -> Iterator[np.ndarray]:  # noqa: ANN001
    """The mono blocks one decoded frame gives (frame None: what the resampler still holds)."""
    for out in resampler.resample(frame):
        yield out.to_ndarray().reshape(-1)


class _Windower:
    """Cuts blocks of samples into windows of `window` samples: `push` yields (window, window) for each one filled,
    `finish` the last partial window zero-padded, with its real sample count, if it is at least half full."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.buf = np.zeros(window, dtype=np.float32)
        self.fill = 0

    def push(self, block: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        pos = 0
        while pos < len(block):
            take = min(self.window - self.fill, len(block) - pos)
            self.buf[self.fill : self.fill + take] = block[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.window:
                yield self.buf.copy(), self.window
                self.fill = 0

    def finish(self) -> Iterator[tuple[np.ndarray, int]]:
        if self.fill * 2 >= self.window:
            self.buf[self.fill :] = 0.0
            yield self.buf.copy(), self.fill


def audio_windows(path: Path, contract: InputContract) -> Iterator[Window]:
    """The windows of an audio file (or of a video's sound), image masked."""
    with _decoding(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = contract.audio.sample_rate_hz
        resampler = _resampler(stream, rate)
        windower = _Windower(contract.audio.window_samples)

        def windows() -> Iterator[tuple[np.ndarray, int]]:
            for frame in container.decode(stream):
                for block in _resample(resampler, frame):
                    yield from windower.push(block)
            for block in _resample(resampler, None):
                yield from windower.push(block)
            yield from windower.finish()

        for k, (samples, n) in enumerate(windows()):
            yield Window(k, samples, None, n / rate)


def _rgb(frame, contract: InputContract) -> np.ndarray:  # noqa: ANN001
    img = frame.reformat(width=contract.image.width_px, height=contract.image.height_px, format="rgb24")
    return img.to_ndarray()  # (H, W, 3) uint8


class _FramePicker:
    """The nearest decoded frame to each target time, decided as frames arrive in time order."""

    def __init__(self, contract: InputContract) -> None:
        self.contract = contract
        window_ns = contract.audio.window_ns
        self.offsets_ns = contract.image.frame_offsets_ns(window_ns)
        self.window_ns = window_ns
        self.frames: dict[int, list[np.ndarray | None]] = {}  # window -> its T frames
        self.next_target = 0  # flat index: window * T + j
        self.prev: tuple[int, object] | None = None

    def _target_ns(self, flat: int) -> int:
        k, j = divmod(flat, len(self.offsets_ns))
        return k * self.window_ns + self.offsets_ns[j]

    def _assign(self, flat: int, frame: object) -> None:
        k, j = divmod(flat, len(self.offsets_ns))
        self.frames.setdefault(k, [None] * len(self.offsets_ns))[j] = _rgb(frame, self.contract)

    def push(self, t_ns: int, frame: object) -> None:
        while self._target_ns(self.next_target) <= t_ns:
            target = self._target_ns(self.next_target)
            nearer_prev = self.prev is not None and target - self.prev[0] <= t_ns - target
            self._assign(self.next_target, self.prev[1] if nearer_prev else frame)  # type: ignore[index]
            self.next_target += 1
        self.prev = (t_ns, frame)

    def finish(self, end_ns: int) -> None:
        """End of the video: targets up to `end_ns` take the last frame."""
        while self.prev is not None and self._target_ns(self.next_target) < end_ns:
            self._assign(self.next_target, self.prev[1])
            self.next_target += 1

    def complete_through(self) -> int:
        """Windows below this index have all their frames decided."""
        return self.next_target // len(self.offsets_ns)

    def pop(self, k: int) -> np.ndarray | None:
        got = self.frames.pop(k, None)
        if got is None or any(f is None for f in got):
            return None
        return np.stack(got)  # (T, H, W, 3)


def video_windows(path: Path, contract: InputContract) -> Iterator[Window]:
    """The windows of a video: its sound (masked if it has none) and its frames at the contract's times."""
    with _decoding(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        vstream = container.streams.video[0]
        vstream.thread_count = 1
        astream = container.streams.audio[0] if container.streams.audio else None
        rate = contract.audio.sample_rate_hz
        origin_s = (container.start_time or 0) / 1e6
        picker = _FramePicker(contract)
        resampler = _resampler(astream, rate) if astream is not None else None
        windower = _Windower(contract.audio.window_samples)
        audio_windows_done: list[tuple[np.ndarray, int]] = []
        emitted = 0
        last_video_ns = 0

        def ready() -> Iterator[Window]:
            nonlocal emitted
            limit = picker.complete_through()
            while emitted < limit and (astream is None or emitted < len(audio_windows_done)):
                audio, n = audio_windows_done[emitted] if astream is not None else (None, 0)
                yield Window(
                    emitted, audio, picker.pop(emitted), n / rate if audio is not None else contract.audio.window_s
                )
                if astream is not None:
                    audio_windows_done[emitted] = (np.zeros(0, np.float32), n)  # free it
                emitted += 1

        streams = [vstream] + ([astream] if astream is not None else [])
        for packet in container.demux(*streams):
            for frame in packet.decode():
                if packet.stream is vstream:
                    t_ns = int(round(((frame.time or 0.0) - origin_s) * NS_PER_S))
                    last_video_ns = max(last_video_ns, t_ns)
                    picker.push(t_ns, frame)
                else:
                    for block in _resample(resampler, frame):
                        audio_windows_done.extend(windower.push(block))
            yield from ready()
        if resampler is not None:
            for block in _resample(resampler, None):
                audio_windows_done.extend(windower.push(block))
            audio_windows_done.extend(windower.finish())
        frame_ns = int(NS_PER_S / float(vstream.average_rate or 25))
        n_windows = len(audio_windows_done) if astream is not None else None
        end_ns = last_video_ns + frame_ns
        if n_windows is None:  # no sound: windows of the video's length, the last one at least half full
            n_windows = int((end_ns + contract.audio.window_ns // 2) // contract.audio.window_ns)
        picker.finish(max(end_ns, n_windows * contract.audio.window_ns))
        for w in ready():
            if w.index < n_windows:
                yield w


def read_photo(path: Path, contract: InputContract) -> np.ndarray:
    """A photo as (1, H, W, 3) uint8 RGB at the contract's size (stretched, bilinear)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((contract.image.width_px, contract.image.height_px), Image.BILINEAR)
            arr = np.asarray(rgb, dtype=np.uint8)
    except Exception as e:
        raise MediaError(f"{path}: cannot read photo: {type(e).__name__}: {e}") from None
    return arr[None]


def read_audio_segment(path: Path, offset_s: float, contract: InputContract) -> np.ndarray | None:
    """One window of audio from `offset_s` in `path` (decoded from a seek before it); None if the file ends first."""
    with _decoding(path) as container:
        stream = container.streams.audio[0]
        rate, window = contract.audio.sample_rate_hz, contract.audio.window_samples
        start = int(round(offset_s * rate))
        if offset_s > 1.0 and stream.time_base:
            container.seek(int((offset_s - 1.0) / stream.time_base), stream=stream)
        got: list[np.ndarray] = []
        have = 0
        resampler = _resampler(stream, rate)
        pos = None
        for frame in container.decode(stream):
            if pos is None:
                pos = int(round((frame.time or 0.0) * rate))
            for block in _resample(resampler, frame):
                lo = max(0, start - pos)
                if lo < len(block):
                    got.append(block[lo:])
                    have += len(block) - lo
                pos += len(block)
            if have >= window:
                break
        if have < window:
            return None
        return np.concatenate(got)[:window]


def media_duration_s(path: Path) -> float:
    """Duration from the container's header (no decoding)."""
    container = _open(path)
    try:
        if container.duration is not None:
            return container.duration / 1e6
        stream = (container.streams.audio or container.streams.video)[0]
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        raise MediaError(f"{path}: no duration in its header")
    finally:
        container.close()


def audiomoth_time_utc_ns(path: Path) -> int | None:
    """The start time in a recorder's file name (AudioMoth: YYYYMMDD_HHMMSS, UTC), or None."""
    m = _AUDIOMOTH.search(path.stem)
    if not m:
        return None
    try:
        t = dt.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * NS_PER_S


def photo_time_ns(path: Path) -> int | None:
    """A photo's EXIF DateTimeOriginal (else DateTime) read as UTC, or None when it has neither."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            raw = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # Exif IFD DateTimeOriginal, IFD0 DateTime
    except Exception as e:
        raise MediaError(f"{path}: cannot read photo: {type(e).__name__}: {e}") from None
    if not raw:
        return None
    try:
        t = dt.datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * NS_PER_S
