"""Reading media files: headers (cheap), audio, video frames and photos, all through PyAV and Pillow.

Every failure is a `MediaError` with one line naming the file and the reason; the callers decide whether that
skips the file (default) or stops the run (`strict`). Conventions:

- audio is resampled by FFmpeg (swresample) to the asked rate, down-mixed to mono (swresample's matrix; not clipped), float32;
- images and frames are resized (bilinear, no crop: the aspect ratio is not kept, exactly what a fixed-caps
  `videoscale` does in the runtime) to a square `size_px`, uint8 RGB, laid out (3, H, W);
- times are integer nanoseconds; a frame "at" time t is the last frame whose PTS is <= t.

The dataset calls `decode_audio`, `decode_frames` and `read_image` through this module (tests count the calls).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeav.errors import MediaError
from edgeav.timebase import NS_PER_S, samples_for_ns

log = logging.getLogger(__name__)

AUDIO_EXTS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_EXTS = frozenset({".mp4", ".mpg", ".mpeg", ".flv", ".mkv", ".webm", ".avi", ".mov"})

# A decode that yields less than this share of the duration the header promises is a truncated file.
_TRUNCATED_SHARE = 0.9


def media_type(path: str | Path) -> str | None:
    """'audio', 'image', 'video' by file extension, or None for anything else."""
    ext = Path(path).suffix.lower()
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


@dataclass(frozen=True)
class MediaInfo:
    """What the container header says (no decoding). `duration_ns` is 0 when the header does not know."""

    duration_ns: int
    audio_rate_hz: int | None
    audio_channels: int | None
    audio_codec: str | None
    has_video: bool
    video_codec: str | None
    width_px: int | None
    height_px: int | None


def _ts_to_ns(ts: int, time_base: Fraction) -> int:
    return int(ts) * time_base.numerator * NS_PER_S // time_base.denominator


def _open(path: str | Path):  # -> av.container.InputContainer
    import av

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")
    try:
        return av.open(str(p))
    except Exception as e:  # av.error.* (InvalidDataError, ...) all mean: not a readable container
        raise MediaError(f"{p}: cannot open: {_why(e)}") from None


def _why(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def probe(path: str | Path) -> MediaInfo:
    """Read the header only. Raises MediaError when the file cannot be opened."""
    with _open(path) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        v = c.streams.video[0] if c.streams.video else None
        dur_ns = 0
        if a is not None and a.duration is not None and a.time_base is not None:
            dur_ns = _ts_to_ns(a.duration, a.time_base)
        elif c.duration is not None:  # in AV_TIME_BASE units (microseconds)
            dur_ns = int(c.duration) * 1000
        return MediaInfo(
            duration_ns=max(0, dur_ns),
            audio_rate_hz=int(a.rate) if a is not None and a.rate else None,
            audio_channels=int(a.channels) if a is not None and a.channels else None,
            audio_codec=a.codec_context.name if a is not None and a.codec_context is not None else None,
            has_video=v is not None,
            video_codec=v.codec_context.name if v is not None and v.codec_context is not None else None,
            width_px=int(v.width) if v is not None and v.width else None,
            height_px=int(v.height) if v is not None and v.height else None,
        )


def decode_audio(path: str | Path, rate_hz: int, max_duration_ns: int | None = None) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `rate_hz`: shape (T,).

    `max_duration_ns` stops early (for previews). Raises MediaError for a file without an audio stream, one that
    yields no samples, or one that decodes to much less than its header promises (truncated).
    """
    import av

    p = Path(path)
    limit = samples_for_ns(max_duration_ns, rate_hz) if max_duration_ns is not None else None
    chunks: list[np.ndarray] = []
    n = 0
    with _open(p) as c:
        if not c.streams.audio:
            raise MediaError(f"{p}: no audio track")
        stream = c.streams.audio[0]
        header_ns = _ts_to_ns(stream.duration, stream.time_base) if stream.duration and stream.time_base else 0
        if not header_ns and c.duration:
            header_ns = int(c.duration) * 1000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=int(rate_hz))
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)  # (T,) packed flt mono
                    chunks.append(arr)
                    n += arr.shape[0]
                if limit is not None and n >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    n += arr.shape[0]
        except av.FFmpegError as e:
            raise MediaError(f"{p}: audio decode failed after {n / rate_hz:.2f} s: {_why(e)}") from None
    if n == 0:
        raise MediaError(f"{p}: no audio samples (zero-length audio)")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if limit is not None:
        return audio[:limit]
    expected = samples_for_ns(header_ns, rate_hz)
    if expected and n < _TRUNCATED_SHARE * expected:
        raise MediaError(f"{p}: truncated: header says {header_ns / NS_PER_S:.2f} s, decoded {n / rate_hz:.2f} s")
    return audio


def _resize_rgb(img, size_px: int) -> np.ndarray:
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size_px, size_px):
        img = img.resize((size_px, size_px), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))  # (3, H, W)


def read_image(path: str | Path, size_px: int) -> np.ndarray:
    """Read a photo as uint8 RGB (3, size_px, size_px). Raises MediaError for a missing/corrupt/truncated file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: file not found")
    try:
        with Image.open(p) as im:
            im.load()  # a truncated JPEG fails here, not at open
            return _resize_rgb(im, size_px)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{p}: cannot read image: {_why(e)}") from None


def decode_frames(path: str | Path, times_ns: list[int] | tuple[int, ...], size_px: int) -> np.ndarray:
    """Frames of the first video stream at `times_ns` (each: the last frame with PTS <= t, or the first frame),
    uint8 RGB, shape (N, 3, size_px, size_px). Decodes from the start and stops after the last asked time."""
    import av

    p = Path(path)
    if not times_ns:
        raise ValueError("decode_frames needs at least one time")
    order = sorted(range(len(times_ns)), key=lambda i: times_ns[i])
    out: list[np.ndarray | None] = [None] * len(times_ns)
    k = 0  # next index into `order`
    prev = None  # last decoded av.VideoFrame with pts <= current target
    first = None
    with _open(p) as c:
        if not c.streams.video:
            raise MediaError(f"{p}: no video track")
        stream = c.streams.video[0]
        tb = stream.time_base
        start_ns = _ts_to_ns(stream.start_time, tb) if stream.start_time is not None else 0
        try:
            for frame in c.decode(stream):
                t_ns = (_ts_to_ns(frame.pts, tb) - start_ns) if frame.pts is not None else 0
                if first is None:
                    first = frame
                while k < len(order) and t_ns > times_ns[order[k]]:
                    out[order[k]] = _resize_rgb((prev if prev is not None else first).to_image(), size_px)
                    k += 1
                prev = frame
                if k >= len(order):
                    break
        except av.FFmpegError as e:
            raise MediaError(f"{p}: video decode failed: {_why(e)}") from None
    if first is None:
        raise MediaError(f"{p}: no video frames")
    while k < len(order):  # times past the last frame: the last frame is on screen
        out[order[k]] = _resize_rgb(prev.to_image(), size_px)
        k += 1
    return np.stack(out)  # (N, 3, H, W)
