"""Evidence encoders: WAV (stdlib `wave`), FLAC (soundfile), JPEG (GStreamer jpegenc), MP4 clips (GStreamer
openh264enc + mp4mux). Every file is written durably under a temporary name and renamed (edgeav.atomic): a name
is whole or absent, never a truncated file. Why these encoders: see edgeav.runtime.evidence.
"""

from __future__ import annotations

import threading
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeav.atomic import atomic_write, durable_replace, temp_path_for
from edgeav.errors import ConfigError, SensorError
from edgeav.runtime.sources import rgb_to_buffer_bytes

# -- encoders --------------------------------------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """Mono 16-bit PCM WAV of float samples in [-1, 1] (clipped); durable and atomic (temp name, fsync, rename)."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")

    def put(f) -> None:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate_hz))
            w.writeframes(pcm.tobytes())

    atomic_write(path, put)


def write_flac(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    import soundfile

    atomic_write(
        path,
        lambda f: soundfile.write(
            f, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(rate_hz), format="FLAC", subtype="PCM_16"
        ),
    )


def clip_pipeline_description(width_px: int, height_px: int, rate_hz: float, bitrate_kbps: int) -> str:
    """The GStreamer pipeline that writes one evidence clip (the file name is set on `sink` afterwards)."""
    fr = Fraction(rate_hz).limit_denominator(1001)
    return (
        f"appsrc name=src format=time is-live=false block=true caps=video/x-raw,format=RGB,width={width_px},"
        f"height={height_px},framerate={fr.numerator}/{fr.denominator} ! videoconvert ! "
        f"openh264enc bitrate={int(bitrate_kbps) * 1000} ! h264parse ! mp4mux ! filesink name=sink sync=false"
    )


class ClipEncoder:
    """Frames (T, H, W, 3) uint8 -> an MP4 file (H.264) at a fixed frame rate (GStreamer openh264enc + mp4mux)."""

    NEEDS = ("appsrc", "videoconvert", "openh264enc", "h264parse", "mp4mux", "filesink")

    def __init__(self, rate_hz: float, bitrate_kbps: int = 400, timeout_s: float = 10.0) -> None:
        from edgeav.runtime.capture import _gst

        self.Gst = _gst()
        lacking = [e for e in self.NEEDS if self.Gst.ElementFactory.find(e) is None]
        if lacking:
            raise ConfigError(
                f"evidence clips need GStreamer's {', '.join(lacking)} (gstreamer1.0-plugins-bad, "
                "gstreamer1.0-plugins-good); or set daemon.evidence.clip=false"
            )
        self.rate_hz = float(rate_hz)
        self.bitrate_kbps = int(bitrate_kbps)
        self.timeout_s = float(timeout_s)

    def write(self, path: Path, frames: np.ndarray) -> Path:
        """Write `frames` (T, H, W, 3) uint8 to `path`; SensorError when the encoder fails or stalls. filesink
        writes a temporary name; only a finished clip is fsynced and renamed to `path` (then the folder fsynced)."""
        Gst = self.Gst
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise SensorError(f"a clip takes (T, H, W, 3) uint8 frames, got {frames.dtype}{tuple(frames.shape)}")
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # H.264: even sizes
        t, h, w = frames.shape[:3]
        pipeline = Gst.parse_launch(clip_pipeline_description(w, h, self.rate_hz, self.bitrate_kbps))
        tmp = temp_path_for(path)
        pipeline.get_by_name("sink").set_property("location", str(tmp))
        done = False
        src = pipeline.get_by_name("src")
        period_ns = int(round(1e9 / self.rate_hz))
        try:
            if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                raise SensorError(f"clip encoder for {path.name} did not start")
            for k in range(t):
                buf = Gst.Buffer.new_wrapped(rgb_to_buffer_bytes(frames[k]))
                buf.pts, buf.duration = k * period_ns, period_ns
                if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    raise SensorError(f"clip encoder refused frame {k} of {path.name}")
            src.emit("end-of-stream")
            msg = pipeline.get_bus().timed_pop_filtered(
                int(self.timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
            )
            if msg is None:
                raise SensorError(f"clip encoder did not finish {path.name} within {self.timeout_s:g} s")
            if msg.type == Gst.MessageType.ERROR:
                err, _ = msg.parse_error()
                raise SensorError(f"clip encoder failed on {path.name}: {err.message}")
            done = True
        finally:
            pipeline.set_state(Gst.State.NULL)  # filesink closes the file
            if not done:
                tmp.unlink(missing_ok=True)
        try:
            return durable_replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class JpegEncoder:
    """RGB (H, W, 3) uint8 -> JPEG bytes with a reused GStreamer pipeline (appsrc ! jpegenc ! appsink)."""

    def __init__(self, quality: int = 85) -> None:
        from edgeav.runtime.capture import _gst

        self.Gst = _gst()
        if self.Gst.ElementFactory.find("jpegenc") is None:
            raise ConfigError(
                "evidence JPEGs need GStreamer's jpegenc (gstreamer1.0-plugins-good); "
                "or set daemon.evidence.image_format=none"
            )
        self.quality = int(quality)
        self._pipeline = None
        self._shape: tuple[int, int] | None = None
        self._n = 0
        self._lock = threading.Lock()

    def _build(self, h: int, w: int) -> None:
        self.close()
        Gst = self.Gst
        desc = (
            f"appsrc name=src format=time is-live=false caps=video/x-raw,format=RGB,width={w},height={h},"
            f"framerate=0/1 ! videoconvert ! jpegenc quality={self.quality} ! "
            "appsink name=sink sync=false max-buffers=4 drop=false"
        )
        self._pipeline = Gst.parse_launch(desc)
        self._src = self._pipeline.get_by_name("src")
        self._sink = self._pipeline.get_by_name("sink")
        self._pipeline.set_state(Gst.State.PLAYING)
        self._shape = (h, w)

    def encode(self, rgb: np.ndarray) -> bytes:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)  # (H, W, 3)
        h, w = rgb.shape[:2]
        with self._lock:
            if self._shape != (h, w):
                self._build(h, w)
            Gst = self.Gst
            buf = Gst.Buffer.new_wrapped(rgb_to_buffer_bytes(rgb))  # rows padded to 4 bytes
            buf.pts = self._n * 40_000_000
            buf.duration = 40_000_000
            self._n += 1
            if self._src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                raise SensorError("jpeg encoder refused a frame")
            sample = self._sink.emit("try-pull-sample", 2 * Gst.SECOND)
            if sample is None:
                raise SensorError("jpeg encoder produced nothing within 2 s")
            out = sample.get_buffer()
            ok, info = out.map(Gst.MapFlags.READ)
            try:
                return bytes(info.data)
            finally:
                out.unmap(info)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.set_state(self.Gst.State.NULL)
            self._pipeline = None
            self._shape = None


__all__ = ["write_wav", "write_flac", "ClipEncoder", "JpegEncoder", "clip_pipeline_description"]
