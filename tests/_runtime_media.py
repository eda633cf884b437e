"""Media files for GStreamer-backed runtime tests, written with GStreamer itself (appsrc -> encoders -> muxer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeav.timebase import NS_PER_S, ns_for_samples

# (video encoder chain, audio encoder chain, muxer) per container
CONTAINERS = {
    "mp4": ("videoconvert ! openh264enc ! h264parse", "audioconvert ! avenc_aac ! aacparse", "mp4mux"),
    "mkv": ("videoconvert ! jpegenc", "audioconvert ! flacenc", "matroskamux"),
}


def missing_elements(container: str) -> list[str]:
    """Encoder/muxer elements of `container` this GStreamer lacks (a test skips with their names)."""
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    v, a, m = CONTAINERS[container]
    names = [p.strip().split()[0] for chain in (v, a) for p in chain.split("!")] + [m]
    return [n for n in names if Gst.ElementFactory.find(n) is None]


def write_av(
    path: Path,
    duration_s: float = 4.0,
    fps: int = 10,
    rate_hz: int = 16000,
    size: tuple[int, int] = (64, 48),
    brightness: Callable[[float], int] = lambda t: 200 if t >= 2.0 else 20,
    tone: Callable[[float], float] = lambda t: 0.5 if t >= 2.0 else 0.0,
    freq_hz: float = 440.0,
    video: bool = True,
    audio: bool = True,
) -> Path:
    """A file with a flat frame of `brightness(t)` and a sine of amplitude `tone(t)` (per 10 ms), muxed by the
    container its suffix names (.mp4: H.264 + AAC like the real stream; .mkv: MJPEG + FLAC)."""
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    vchain, achain, mux = CONTAINERS[path.suffix.lstrip(".")]
    w, h = size
    parts = []
    if video:
        parts.append(
            f"appsrc name=vsrc format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 "
            f"! {vchain} ! queue ! mux."
        )
    if audio:
        parts.append(
            f"appsrc name=asrc format=time caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,"
            f"rate={rate_hz} ! {achain} ! queue ! mux."
        )
    parts.append(f'{mux} name=mux ! filesink location="{path}"')
    p = Gst.parse_launch("  ".join(parts))
    p.set_state(Gst.State.PLAYING)
    if video:
        src = p.get_by_name("vsrc")
        for k in range(int(round(duration_s * fps))):
            t_ns = k * NS_PER_S // fps
            img = np.full((h, w, 3), brightness(t_ns / NS_PER_S), np.uint8)
            b = Gst.Buffer.new_wrapped(img.tobytes())
            b.pts, b.duration = t_ns, NS_PER_S // fps
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
    if audio:
        src = p.get_by_name("asrc")
        n = int(round(duration_s * rate_hz))
        t = np.arange(n) / rate_hz
        amp = np.array([tone(float(x)) for x in np.floor(t * 100) / 100])
        x = (amp * np.sin(2 * np.pi * freq_hz * t) * 32767).astype(np.int16)
        chunk = rate_hz // 10
        for i in range(0, n, chunk):
            b = Gst.Buffer.new_wrapped(x[i : i + chunk].tobytes())
            b.pts, b.duration = ns_for_samples(i, rate_hz), ns_for_samples(min(chunk, n - i), rate_hz)
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
    msg = p.get_bus().timed_pop_filtered(30 * NS_PER_S, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"writing {path} failed: {msg.parse_error() if msg else 'timeout'}")
    return path
