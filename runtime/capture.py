"""GStreamer capture: one pipeline, appsinks -> Python, reads with an explicit status (jetson-utils style).

`Capture.read(timeout_ns)` returns `(ReadStatus, item)`: OK with a `VideoFrame` / `AudioChunk`, TIMEOUT, EOS, or
ERROR (the bus error's text is raised as `SensorError` by `read_or_raise`, and kept in `Capture.error`).

Times: each item's `pts_ns` is the buffer's running time (its PTS mapped through its segment) - an integer ns on
the pipeline clock minus the pipeline's base time. The streams of one pipeline (camera and microphone combined,
`daemon.sensors: combined`) share that clock and base time, so their times compare.
With `clock_base_ns` (the daemon's live sources, split sensors above all) every pipeline runs on the one process-wide GstSystemClock
(CLOCK_MONOTONIC) with that base time, instead of the clock it would pick (a sound card's, for a microphone): the
running time of every pipeline is then monotonic time since `clock_base_ns`, the same timeline for camera and
microphone however long they run. A live microphone's buffer times are also re-based continuously against their
arrival (`edgeav.timebase.DriftCorrector`): a source that stamps by counting samples on its own crystal (an
audio source that does not slave its timestamps to the pipeline clock) cannot drift away from the camera either.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import SensorError
from edgeav.runtime.queues import BoundedQueue
from edgeav.runtime.sources import (
    AUDIO_SINK,
    VIDEO_SINK,
    Stream,
    build_pipeline_description,
    is_live_capture,
    mask_credentials,
    parse_source_uri,
    rgb_from_buffer_bytes,
)
from edgeav.schema.runtime import SourceConfig
from edgeav.timebase import NS_PER_S, DriftCorrector, ns_for_samples, s_to_ns

log = logging.getLogger(__name__)

BUS_POLL_NS = 20_000_000  # while buffers flow, the bus (errors, EOS) is checked at least this often


class ReadStatus(enum.Enum):
    OK = "ok"
    TIMEOUT = "timeout"
    EOS = "eos"
    ERROR = "error"


@dataclass(frozen=True)
class VideoFrame:
    pts_ns: int  # running time on the pipeline clock
    rgb: np.ndarray  # (H, W, 3) uint8
    duration_ns: int = 0  # how long the frame is on screen (buffer duration; 0 when unknown)

    @property
    def kind(self) -> str:
        return "video"


@dataclass(frozen=True)
class AudioChunk:
    pts_ns: int  # running time of the first sample
    samples: np.ndarray  # (N,) float32 mono
    rate_hz: int

    @property
    def kind(self) -> str:
        return "audio"

    @property
    def duration_ns(self) -> int:
        return ns_for_samples(len(self.samples), self.rate_hz)


@dataclass(frozen=True)
class StreamEnd:
    """One sensor's appsink reached end-of-stream; queued after its last buffer (so it keeps arrival order)."""

    stream: str  # "video" | "audio"

    @property
    def kind(self) -> str:
        return "end"


CaptureItem = VideoFrame | AudioChunk | StreamEnd


_GST = None


def _gst():
    """The initialised Gst module (imported once: gi.require_version is slow enough to matter per buffer)."""
    global _GST
    if _GST is not None:
        return _GST
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401
    except (ImportError, ValueError) as e:
        raise SensorError(f"GStreamer (PyGObject, Gst 1.0) is not available here: {e}") from None
    if not Gst.is_initialized():
        Gst.init(None)
    _GST = Gst
    return Gst


def warn_missing_modality(uri: str, streams: Sequence[str]) -> None:
    """The model takes both senses: when the source gives only one, say so once, loudly (not a quiet fallback)."""
    missing = [s for s in ("video", "audio") if s not in streams]
    if len(missing) == 1:
        log.warning(
            "%s has no %s stream: every window goes to the model with the %s marked missing (modality mask)",
            mask_credentials(uri),
            missing[0],
            "image" if missing[0] == "video" else "audio",
        )


def probe_streams(uri: str, timeout_s: float = 10.0) -> tuple[Stream, ...]:
    """Which of video/audio a file:// (or other uridecodebin-able) URI holds; SensorError (one line) if none.

    A uridecodebin into fakesinks is prerolled (PAUSED) while the bus is watched: ERROR (no moov, unknown format)
    is a SensorError at once, ASYNC_DONE means every stream has a decoded pad. (GstPbutils.Discoverer was used
    before; on some truncated files it sat out its whole timeout instead of reporting the demuxer's error.)
    """
    Gst = _gst()
    src = parse_source_uri(uri)
    target = uri
    if src.scheme == "file":
        from pathlib import Path

        if not Path(src.location).is_file():
            raise SensorError(f"{uri}: file not found")
        target = Path(src.location).as_uri()
    pipeline = Gst.Pipeline.new("probe")
    dec = Gst.ElementFactory.make("uridecodebin", "probe_dec")
    if dec is None:
        raise SensorError("GStreamer has no uridecodebin (gstreamer1.0-plugins-base is missing)")
    dec.set_property("uri", target)
    pipeline.add(dec)
    found: list[Stream] = []
    lock = threading.Lock()

    def on_pad(_dec, pad) -> None:  # streaming thread: note the kind, terminate the pad in a fakesink
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name() if caps is not None and caps.get_size() else ""
        kind = "video" if name.startswith("video/") else "audio" if name.startswith("audio/") else None
        sink = Gst.ElementFactory.make("fakesink", None)
        sink.set_property("sync", False)
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        if kind is not None:
            with lock:
                if kind not in found:
                    found.append(kind)

    dec.connect("pad-added", on_pad)
    bus = pipeline.get_bus()
    try:
        if pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            why = msg.parse_error()[0].message if msg is not None else "cannot be opened"
            raise SensorError(f"{mask_credentials(uri)}: cannot be probed: {why}")
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                # decodebin sometimes swallows a demuxer's error on a truncated file (the error is posted while
                # the demuxer is still being autoplugged): then the timeout is the only signal there is.
                raise SensorError(
                    f"{mask_credentials(uri)}: cannot be probed: nothing decodable within {timeout_s:g} s "
                    "(truncated, corrupt or not a media file?)"
                )
            msg = bus.timed_pop_filtered(
                int(min(left, 0.1) * NS_PER_S), Gst.MessageType.ERROR | Gst.MessageType.ASYNC_DONE | Gst.MessageType.EOS
            )
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ERROR:
                err, _ = msg.parse_error()
                raise SensorError(f"{mask_credentials(uri)}: cannot be probed: {err.message}")
            break  # prerolled (or an empty stream ended): every pad has been added
    finally:
        pipeline.set_state(Gst.State.NULL)
    with lock:
        out = tuple(s for s in ("video", "audio") if s in found)
    if not out:
        raise SensorError(f"{mask_credentials(uri)}: has neither a video nor an audio stream")
    return out  # type: ignore[return-value]


def shared_clock():
    """The process-wide GstSystemClock on CLOCK_MONOTONIC (Python's time.monotonic_ns): every pipeline of the daemon
    runs on it."""
    Gst = _gst()
    clock = Gst.SystemClock.obtain()
    if clock.get_property("clock-type") != Gst.ClockType.MONOTONIC:
        raise SensorError(
            f"GStreamer's system clock is {clock.get_property('clock-type')}, not MONOTONIC: "
            "sensor times would not compare with the daemon's"
        )
    return clock


class Capture:
    """A running capture pipeline. Use as a context manager, or `start()` / `close()`.

    File replay (not live) pushes back instead of dropping: nothing is lost. Live sources never block: the queue
    drops its oldest item and counts it (`stats()["dropped"]`).
    """

    def __init__(
        self,
        source: SourceConfig | str,
        contract: InputContract,
        realtime: bool = False,
        streams: tuple[Stream, ...] | None = None,
        clock_base_ns: int | None = None,
    ) -> None:
        self.cfg = SourceConfig(uri=source) if isinstance(source, str) else source
        self.contract = contract
        self.realtime = realtime
        self._src = parse_source_uri(self.cfg.uri)
        if streams is None and self._src.scheme == "file":
            present = probe_streams(self.cfg.uri, timeout_s=self.cfg.start_timeout_s)
            if self.cfg.streams is None:
                streams = present  # what the file has; a missing one becomes missing-modality windows
                warn_missing_modality(self.cfg.uri, present)
            else:
                absent = [s for s in self.cfg.streams if s not in present]
                if absent:
                    raise SensorError(
                        f"{mask_credentials(self.cfg.uri)}: has no {' and no '.join(absent)} stream (it has "
                        f"{'+'.join(present)}); the config asks for streams {'+'.join(self.cfg.streams)} - leave "
                        "source.streams unset to run with the missing modality masked"
                    )
        self.description = build_pipeline_description(self.cfg, contract, streams=streams, realtime=realtime)
        self.streams: tuple[Stream, ...] = tuple(
            s for s in ("video", "audio") if (VIDEO_SINK if s == "video" else AUDIO_SINK) in self.description
        )
        self.is_live = is_live_capture(
            self._src, parse_source_uri(self.cfg.audio_uri) if self.cfg.audio_uri is not None else None
        )
        policy = "drop_oldest" if self.is_live else "block"
        self._queue: BoundedQueue[CaptureItem] = BoundedQueue(self.cfg.queue_max_items, policy, name="capture")
        self._pipeline = None
        self._bus = None
        self._stopping = threading.Event()
        self._eos = False
        self.error: str | None = None
        self._queue_overruns: dict[str, int] = {}
        self._counts = {"video": 0, "audio": 0}
        self._wall_anchor: tuple[int, int] | None = None  # (running_time_ns, utc_ns) at start
        self._next_bus_poll_ns = 0
        self.decoder_threads: dict[str, int] = {}  # decoder element -> max-threads set on it
        if clock_base_ns is not None and not self.is_live:
            raise ValueError("clock_base_ns is for live sources: a file's PTS start at 0 on every start")
        self.clock_base_ns = clock_base_ns  # None: the pipeline picks its clock and base time
        live_audio = clock_base_ns is not None and self.is_live and "audio" in self.streams
        self.audio_drift = DriftCorrector() if live_audio else None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Capture:
        Gst = _gst()
        log.info("capture pipeline: %s", mask_credentials(self.description))
        try:
            pipeline = Gst.parse_launch(self.description)
        except Exception as e:  # GLib.Error: missing element, bad syntax
            raise SensorError(
                f"cannot build capture pipeline for {mask_credentials(self.cfg.uri)}: {getattr(e, 'message', e)}"
            ) from None
        self._pipeline = pipeline
        self._bus = pipeline.get_bus()
        for s in self.streams:
            sink = pipeline.get_by_name(VIDEO_SINK if s == "video" else AUDIO_SINK)
            sink.connect("new-sample", self._on_sample, s)
            sink.connect("eos", self._on_sink_eos, s)
        if self.cfg.decoder_threads:
            pipeline.connect("deep-element-added", self._on_element_added)
        for s in ("video", "audio"):
            q = pipeline.get_by_name(f"{s}_queue")
            if q is not None:
                self._queue_overruns[s] = 0
                q.connect("overrun", self._on_overrun, s)
        if self.clock_base_ns is not None:
            pipeline.use_clock(shared_clock())  # not the sound card's: one clock for every sensor
            pipeline.set_start_time(Gst.CLOCK_TIME_NONE)  # keep this base time across PAUSED -> PLAYING
            pipeline.set_base_time(int(self.clock_base_ns))
        ret = pipeline.set_state(Gst.State.PLAYING)
        if ret == Gst.StateChangeReturn.FAILURE:
            err = self._pop_bus_error(0) or "state change to PLAYING failed"
            self.close()
            raise SensorError(f"{mask_credentials(self.cfg.uri)}: {err}")
        # Wait for PLAYING, watching the bus so a missing device or file fails fast, never hangs.
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline:
            err = self._pop_bus_error(50 * 1_000_000)
            if err is not None:
                self.close()
                raise SensorError(f"{mask_credentials(self.cfg.uri)}: {err}")
            _, state, _ = pipeline.get_state(0)
            if state == Gst.State.PLAYING or self._eos or len(self._queue) > 0:
                break
        else:
            self.close()
            raise SensorError(f"{mask_credentials(self.cfg.uri)}: did not start within {self.cfg.start_timeout_s} s")
        clock = pipeline.get_clock()
        if clock is not None:
            running = clock.get_time() - pipeline.get_base_time()
            self._wall_anchor = (int(running), time.time_ns())
        return self

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        self._queue.close()
        if self._pipeline is not None:
            Gst = _gst()
            self._pipeline.set_state(Gst.State.NULL)
            self._pipeline = None
            self._bus = None

    # -- streaming-thread callbacks ------------------------------------------------------------------------------
    def _on_overrun(self, _queue, stream: str) -> None:
        self._queue_overruns[stream] = self._queue_overruns.get(stream, 0) + 1

    def _on_element_added(self, _bin, _sub_bin, element) -> None:
        # decodebin picks the decoder at run time: its thread count can only be set as it is added
        factory = element.get_factory()
        if factory is not None and factory.get_name().startswith("avdec_") and element.find_property("max-threads"):
            element.set_property("max-threads", int(self.cfg.decoder_threads))
            self.decoder_threads[element.get_name()] = int(self.cfg.decoder_threads)

    def _on_sink_eos(self, _sink, stream: str) -> None:
        self._put(StreamEnd(stream))

    def _put(self, item: CaptureItem) -> bool:
        """Queue an item: live never blocks (drop-oldest, counted); replay waits for room unless closing."""
        if self.is_live:
            self._queue.put(item)
            return True
        while not self._stopping.is_set():
            if self._queue.put(item, timeout_s=0.2):
                return True
            self._queue.dropped -= 1  # a timed-out put is a retry here, not a drop
        return False

    def _on_sample(self, sink, stream: str):
        Gst = _gst()
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        try:
            item = self._convert(sample, stream)
        except Exception as e:  # never raise into a streaming thread
            log.error("cannot convert %s buffer: %s", stream, e)
            return Gst.FlowReturn.ERROR
        if item is None:
            return Gst.FlowReturn.OK
        self._counts[stream] += 1
        # Backpressure for file replay: wait for room, but give up when the capture is closing.
        return Gst.FlowReturn.OK if self._put(item) else Gst.FlowReturn.FLUSHING

    def _convert(self, sample, stream: str) -> CaptureItem | None:
        Gst = _gst()
        buf = sample.get_buffer()
        if buf.pts == Gst.CLOCK_TIME_NONE:
            log.warning("%s buffer without PTS dropped", stream)
            return None
        seg = sample.get_segment()
        running = seg.to_running_time(Gst.Format.TIME, buf.pts) if seg is not None else buf.pts
        if running == Gst.CLOCK_TIME_NONE or running < 0:
            return None
        pts_ns = int(running)
        data = buf.extract_dup(0, buf.get_size())  # one copy out of the GstBuffer into an immutable bytes
        if stream == "audio":
            samples = np.frombuffer(data, dtype="<f4")  # (N,) read-only view, no second copy
            rate = self.contract.audio.sample_rate_hz
            if self.audio_drift is not None:  # arrival on the shared clock's timeline
                arrival = time.monotonic_ns() - int(self.clock_base_ns)
                pts_ns = self.audio_drift.map(pts_ns, ns_for_samples(samples.size, rate), arrival)
            return AudioChunk(pts_ns, samples, rate)
        s = sample.get_caps().get_structure(0)
        w, h = s.get_value("width"), s.get_value("height")
        rgb = rgb_from_buffer_bytes(data, w, h)  # (H, W, 3): a read-only view unless GStreamer padded the rows
        if rgb is None:
            raise SensorError(f"video buffer of {len(data)} bytes is short for {w}x{h} RGB")
        dur = buf.duration
        return VideoFrame(pts_ns, rgb, int(dur) if dur != Gst.CLOCK_TIME_NONE else 0)

    # -- reading -------------------------------------------------------------------------------------------------
    def _pop_bus_error(self, timeout_ns: int) -> str | None:
        """Drain bus messages (ERROR/EOS/WARNING); return the error text if one came."""
        if self._bus is None:
            return None
        Gst = _gst()
        types = Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.WARNING
        msg = self._bus.timed_pop_filtered(int(timeout_ns), types)
        while msg is not None:
            if msg.type == Gst.MessageType.ERROR:
                err, dbg = msg.parse_error()
                src = msg.src.get_name() if msg.src is not None else "?"
                # masked: element errors (rtspsrc's above all) may quote the URI with its password
                self.error = mask_credentials(f"{src}: {err.message}" + (f" ({dbg.splitlines()[0]})" if dbg else ""))
                return self.error
            if msg.type == Gst.MessageType.EOS:
                self._eos = True
            elif msg.type == Gst.MessageType.WARNING:
                w, _ = msg.parse_warning()
                log.warning(
                    "capture warning from %s: %s", msg.src.get_name() if msg.src else "?", mask_credentials(w.message)
                )
            msg = self._bus.pop_filtered(types)
        return None

    def read(self, timeout_ns: int = 500_000_000) -> tuple[ReadStatus, CaptureItem | None]:
        """Next frame or audio chunk, in arrival order. Never blocks longer than `timeout_ns` (plus a bus poll)."""
        if self._pipeline is None and len(self._queue) == 0:
            return (ReadStatus.ERROR, None) if self.error else (ReadStatus.EOS, None)
        deadline = time.monotonic_ns() + int(timeout_ns)
        while True:
            now = time.monotonic_ns()
            # The bus is polled every BUS_POLL_NS while data flows (an error surfaces within that), always when idle.
            if self.error is None and (now >= self._next_bus_poll_ns or len(self._queue) == 0):
                self._next_bus_poll_ns = now + BUS_POLL_NS
                if self._pop_bus_error(0) is not None:
                    return ReadStatus.ERROR, None
            if self.error is not None:
                return ReadStatus.ERROR, None
            ok, item = self._queue.get(timeout_s=0.0)
            if ok:
                return ReadStatus.OK, item
            if self._eos:
                return ReadStatus.EOS, None
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                return ReadStatus.TIMEOUT, None
            ok, item = self._queue.get(timeout_s=min(remaining, 20_000_000) / NS_PER_S)
            if ok:
                return ReadStatus.OK, item

    def read_or_raise(self, timeout_ns: int = 500_000_000) -> tuple[ReadStatus, CaptureItem | None]:
        """As `read`, but ERROR raises SensorError with the bus's error text."""
        status, item = self.read(timeout_ns)
        if status is ReadStatus.ERROR:
            raise SensorError(f"{mask_credentials(self.cfg.uri)}: {self.error or 'capture failed'}")
        return status, item

    # -- time and stats ------------------------------------------------------------------------------------------
    def utc_ns_for(self, pts_ns: int) -> int | None:
        """Wall-clock UTC (ns since epoch) of a running time, anchored when the pipeline started."""
        if self._wall_anchor is None:
            return None
        running0, utc0 = self._wall_anchor
        return utc0 + (int(pts_ns) - running0)

    def stats(self) -> dict[str, object]:
        q = self._queue.stats()
        return {
            "video_items": self._counts["video"],
            "audio_items": self._counts["audio"],
            "dropped": q["dropped"] + sum(self._queue_overruns.values()),
            "queue": q,
            "gst_queue_overruns": dict(self._queue_overruns),
        }


__all__ = [
    "Capture",
    "ReadStatus",
    "VideoFrame",
    "AudioChunk",
    "StreamEnd",
    "CaptureItem",
    "probe_streams",
    "warn_missing_modality",
    "s_to_ns",
]
