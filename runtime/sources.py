"""Sources chosen by URI and the ONE pure function that turns them into a GStreamer pipeline string.

jetson-utils style: `v4l2:///dev/video0`, `csi://0`, `rtsp://user:pass@host/path`, `file:///path`,
`alsa://hw:1,0`, `pulse://default`, `test://?pattern=ball&freq_hz=440&live=1`. Nothing here imports GStreamer:
`build_pipeline_description` is compared as a string by tests and shown (credentials masked) in the log.

Every branch ends in an appsink named `video_sink` (RGB, the contract's H x W, `fps` frames/s) or `audio_sink`
(F32LE mono at the contract's rate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import ConfigError
from edgeav.schema.runtime import SourceConfig
from edgeav.timebase import s_to_ns, samples_for_ns

Stream = Literal["video", "audio"]

VIDEO_SINK = "video_sink"
AUDIO_SINK = "audio_sink"

SCHEMES = ("v4l2", "csi", "rtsp", "rtsps", "file", "alsa", "pulse", "test")
LIVE_SCHEMES = ("v4l2", "csi", "rtsp", "rtsps", "alsa", "pulse")
_SCHEME_STREAMS: dict[str, tuple[Stream, ...]] = {
    "v4l2": ("video",),
    "csi": ("video",),
    "rtsp": ("video",),
    "rtsps": ("video",),
    "file": ("video", "audio"),
    "alsa": ("audio",),
    "pulse": ("audio",),
    "test": ("video", "audio"),
}
_TEST_PARAMS = {"pattern", "freq_hz", "live", "wave", "volume", "duration_s", "streams", "width", "height"}

_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s\"]*):(?P<pw>[^@/\s\"]*)@")
_SECRET_Q_RE = re.compile(r"(?P<key>(?:password|passwd|pwd|token|secret|key)=)(?P<val>[^&\s\"]+)", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """Replace passwords in `scheme://user:pass@host` and `password=`/`token=` query values with `***`.

    Works on a URI or on a whole pipeline description (every URI in it is masked).
    """
    out = _CRED_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    return _SECRET_Q_RE.sub(lambda m: f"{m.group('key')}***", out)


@dataclass(frozen=True)
class SourceURI:
    """A parsed source URI: scheme, location (device / path / host...), query parameters."""

    uri: str
    scheme: str
    location: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        if self.scheme == "test":
            return _truthy(self.params.get("live", "0"))
        return self.scheme in LIVE_SCHEMES

    @property
    def default_streams(self) -> tuple[Stream, ...]:
        if self.scheme == "test" and "streams" in self.params:
            return _parse_streams(self.params["streams"], self.uri)
        return _SCHEME_STREAMS[self.scheme]


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


def _parse_streams(text: str, uri: str) -> tuple[Stream, ...]:
    out: list[Stream] = []
    for s in text.replace("+", ",").split(","):
        s = s.strip()
        if s not in ("video", "audio"):
            raise ConfigError(f"{mask_credentials(uri)}: streams={text!r}; valid: video, audio, video,audio")
        out.append(s)  # type: ignore[arg-type]
    return tuple(out)


def parse_source_uri(uri: str) -> SourceURI:
    """Parse and validate a source URI; an unknown scheme raises ConfigError listing the valid ones."""
    if "://" not in uri:
        raise ConfigError(f"source {mask_credentials(uri)!r} is not a URI; valid schemes: {', '.join(SCHEMES)}")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown source scheme {scheme!r} in {mask_credentials(uri)!r}; valid: {', '.join(SCHEMES)}")
    rest = uri.split("://", 1)[1]
    if scheme in ("rtsp", "rtsps"):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ConfigError(f"{mask_credentials(uri)}: rtsp URI needs a host")
        return SourceURI(uri, scheme, uri)
    if scheme == "file":
        parts = urlsplit(uri)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ConfigError(f"{uri}: file URIs are absolute: file:///path/to/media")
        return SourceURI(uri, scheme, path)
    loc, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if scheme == "test":
        unknown = set(params) - _TEST_PARAMS
        if unknown:
            raise ConfigError(f"{uri}: unknown test:// parameter(s) {sorted(unknown)}; valid: {sorted(_TEST_PARAMS)}")
    elif params:
        raise ConfigError(f"{mask_credentials(uri)}: {scheme}:// takes no query parameters")
    if scheme == "v4l2" and not loc.startswith("/dev/"):
        raise ConfigError(f"{uri}: expected v4l2:///dev/videoN")
    if scheme == "csi":
        if not loc.isdigit():
            raise ConfigError(f"{uri}: expected csi://N (sensor id)")
    if scheme == "alsa" and not loc:
        loc = "default"
    if scheme == "pulse" and not loc:
        loc = "default"
    return SourceURI(uri, scheme, loc, params)


def gst_quote(value: str) -> str:
    """Quote a property value for gst_parse_launch (paths with spaces, URIs with & or =)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fps_fraction(fps: float) -> str:
    for ntsc in (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001)):
        if abs(fps - float(ntsc)) < 0.005:  # 23.976, 29.97, 59.94 mean the NTSC rates
            return f"{ntsc.numerator}/{ntsc.denominator}"
    fr = Fraction(fps).limit_denominator(1001)
    return f"{fr.numerator}/{fr.denominator}"


def _appsink(name: str, cfg: SourceConfig, live: bool, sync: bool) -> str:
    # Files: drop=false, the appsink pushes back on the decoder (nothing lost). Live: the Python callback never
    # blocks and its BoundedQueue counts drops, so the appsink itself stays drop=false and small.
    return (
        f"appsink name={name} emit-signals=true max-buffers={cfg.appsink_max_buffers} drop=false "
        f"sync={'true' if sync else 'false'} async=false"
        if live
        else f"appsink name={name} emit-signals=true max-buffers={cfg.appsink_max_buffers} drop=false "
        f"sync={'true' if sync else 'false'}"
    )


def _video_tail(cfg: SourceConfig, contract: InputContract, live: bool, sync: bool) -> str:
    # Cheapest order: drop frames first (videorate), scale in the decoder's format (YUV: 1.5 bytes a pixel),
    # convert to RGB last, at the model's size. add-borders=false stretches to H x W as training resizes (no
    # letterbox bars); method=bilinear2 is the multi-tap (area-like) bilinear that matches Pillow's downscaling.
    h, w = contract.image.height_px, contract.image.width_px
    fps = _fps_fraction(cfg.fps)
    return (
        f"videorate ! video/x-raw,framerate={fps} ! videoscale method={cfg.video_scale_method} add-borders=false ! "
        f"video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! videoconvert ! "
        f"video/x-raw,format=RGB,width={w},height={h},pixel-aspect-ratio=1/1,framerate={fps} ! "
        + _appsink(VIDEO_SINK, cfg, live, sync)
    )


def _audio_tail(cfg: SourceConfig, contract: InputContract, live: bool, sync: bool) -> str:
    rate = contract.audio.sample_rate_hz
    return (
        "audioconvert ! audioresample ! "
        f"audio/x-raw,format=F32LE,layout=interleaved,channels=1,rate={rate} ! " + _appsink(AUDIO_SINK, cfg, live, sync)
    )


def _branch(head: str, stream: Stream, cfg: SourceConfig, contract: InputContract, live: bool, sync: bool) -> str:
    """One branch to a sink: the source's `head`, a leaky queue when live, then the stream's tail."""
    tail = _video_tail(cfg, contract, live, sync) if stream == "video" else _audio_tail(cfg, contract, live, sync)
    return f"{head} ! " + (f"{_queue(True, stream)} ! " if live else "") + tail


def _queue(live: bool, stream: Stream) -> str:
    # A live branch gets a small leaky queue (named, so the capture counts its overruns as drops): one stalled
    # branch cannot stall the sensor's thread.
    return (
        f"queue name={stream}_queue max-size-buffers=4 max-size-bytes=0 max-size-time=0 leaky=downstream"
        if live
        else "queue"
    )


def build_pipeline_description(
    source_cfg: SourceConfig | str,
    contract: InputContract,
    streams: tuple[Stream, ...] | list[Stream] | None = None,
    realtime: bool = False,
) -> str:
    """The gst-launch description for `source_cfg` (a SourceConfig or a bare URI). Pure: no GStreamer import.

    `streams` says which branches to build; None = `source_cfg.streams`, else what the URI scheme gives
    (a file is assumed to have both; `edgeav.runtime.capture.probe_streams` tells for sure).
    `realtime` only matters for file:// replay: sync=true paces buffers on the clock; false = as fast as possible.
    """
    cfg = SourceConfig(uri=source_cfg) if isinstance(source_cfg, str) else source_cfg
    src = parse_source_uri(cfg.uri)
    extra_audio = parse_source_uri(cfg.audio_uri) if cfg.audio_uri else None
    if extra_audio is not None and extra_audio.scheme not in ("alsa", "pulse", "test"):
        raise ConfigError(f"audio_uri {mask_credentials(cfg.audio_uri or '')!r} must be alsa://, pulse:// or test://")
    want: tuple[Stream, ...] = tuple(streams) if streams is not None else tuple(cfg.streams or src.default_streams)
    if extra_audio is not None and streams is None and cfg.streams is None:
        want = tuple(s for s in want if s == "video") + ("audio",)
    if not want:
        raise ConfigError(f"{mask_credentials(cfg.uri)}: no stream to capture")
    for s in want:
        can = set(src.default_streams) | ({"audio"} if extra_audio is not None else set())
        if src.scheme == "test":
            can = {"video", "audio"}
        if s not in can:
            raise ConfigError(f"{mask_credentials(cfg.uri)}: a {src.scheme}:// source has no {s} stream")
    live = src.is_live
    sync = bool(realtime) if src.scheme == "file" else (src.scheme == "test" and not live and bool(realtime))
    parts: list[str] = []
    audio_from_extra = extra_audio is not None and "audio" in want and "audio" not in src.default_streams
    if src.scheme == "test":
        parts.extend(_test_branches(src, cfg, contract, want, sync))
    elif src.scheme == "file":
        parts.append(f"uridecodebin uri={gst_quote(_file_uri(src.location))} name=src")
        parts.extend(
            _branch(f"src. ! {s}/x-raw ! queue", s, cfg, contract, False, sync) for s in ("video", "audio") if s in want
        )
    else:
        if "video" in want:
            parts.append(_branch(_live_video_head(src, cfg), "video", cfg, contract, True, False))
        if "audio" in want and not audio_from_extra:
            parts.append(_branch(_live_audio_head(src, cfg, contract), "audio", cfg, contract, True, False))
    if audio_from_extra and extra_audio is not None:
        if extra_audio.scheme == "test":
            parts.extend(_test_branches(extra_audio, cfg, contract, ("audio",), False))
        else:
            parts.append(_branch(_live_audio_head(extra_audio, cfg, contract), "audio", cfg, contract, True, False))
    return "  ".join(parts)


def _file_uri(path: str) -> str:
    from urllib.parse import quote

    return urlunsplit(("file", "", quote(path), "", ""))


def _live_video_head(src: SourceURI, cfg: SourceConfig) -> str:
    if src.scheme == "v4l2":
        return f"v4l2src device={gst_quote(src.location)} do-timestamp=true"
    if src.scheme == "csi":
        return (
            f"nvarguscamerasrc sensor-id={int(src.location)} ! "
            "video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx"
        )
    if src.scheme in ("rtsp", "rtsps"):
        proto = " protocols=tcp" if cfg.rtsp_tcp else ""
        return f"rtspsrc location={gst_quote(src.location)} latency={cfg.rtsp_latency_ms}{proto} ! decodebin"
    raise ConfigError(f"{src.scheme}:// has no video")  # pragma: no cover - guarded by the caller


def _live_audio_head(src: SourceURI, cfg: SourceConfig, contract: InputContract) -> str:
    buffer_us = int(round(cfg.audio_chunk_s * 1_000_000))
    if src.scheme == "alsa":
        return f"alsasrc device={gst_quote(src.location)} buffer-time={buffer_us * 4} latency-time={buffer_us}"
    if src.scheme == "pulse":
        dev = "" if src.location == "default" else f" device={gst_quote(src.location)}"
        return f"pulsesrc{dev} buffer-time={buffer_us * 4} latency-time={buffer_us}"
    raise ConfigError(f"{src.scheme}:// has no audio")  # pragma: no cover


def is_live_capture(src: SourceURI, audio_src: SourceURI | None = None) -> bool:
    """A capture is live (buffers come when the sensor delivers them; bounded queues drop the oldest) when its
    source or its separate audio source is."""
    return src.is_live or (audio_src is not None and audio_src.is_live)


def _element_word(src: SourceURI, key: str, default: str) -> str:
    """A `test://` parameter that goes into the pipeline string as an element property (a GStreamer enum nick)."""
    value = src.params.get(key, default)
    if not re.fullmatch(r"[a-z0-9-]+", value):
        raise ConfigError(f"{src.uri}: bad {key} {value!r}")
    return value


def _test_branches(
    src: SourceURI, cfg: SourceConfig, contract: InputContract, want: tuple[Stream, ...], sync: bool
) -> list[str]:
    p = src.params
    live = src.is_live
    live_s = "true" if live else "false"
    out: list[str] = []
    duration_s = float(p["duration_s"]) if "duration_s" in p else None
    if "video" in want:
        pattern = _element_word(src, "pattern", "smpte")
        w = int(p.get("width", contract.image.width_px))
        h = int(p.get("height", contract.image.height_px))
        nb = f" num-buffers={max(1, int(round(duration_s * cfg.fps)))}" if duration_s is not None else ""
        out.append(
            _branch(
                f"videotestsrc pattern={pattern} is-live={live_s}{nb} ! "
                f"video/x-raw,width={w},height={h},framerate={_fps_fraction(cfg.fps)}",
                "video",
                cfg,
                contract,
                live,
                sync,
            )
        )
    if "audio" in want:
        freq = float(p.get("freq_hz", "440"))
        wave = _element_word(src, "wave", "sine")
        vol = float(p.get("volume", "0.5"))
        rate = contract.audio.sample_rate_hz
        spb = max(1, samples_for_ns(s_to_ns(cfg.audio_chunk_s), rate))
        nb = (
            f" num-buffers={max(1, -(-samples_for_ns(s_to_ns(duration_s), rate) // spb))}"
            if duration_s is not None
            else ""
        )
        out.append(
            _branch(
                f"audiotestsrc wave={wave} freq={freq:g} volume={vol:g} samplesperbuffer={spb} "
                f"is-live={live_s}{nb} ! audio/x-raw,rate={rate},channels=1",
                "audio",
                cfg,
                contract,
                live,
                sync,
            )
        )
    return out


# -- GStreamer's RGB buffer layout: each row padded to a multiple of 4 bytes --------------------------------------


def rgb_row_stride(width_px: int) -> int:
    """Bytes per row of a `format=RGB` buffer `width_px` wide."""
    return (width_px * 3 + 3) // 4 * 4


def rgb_to_buffer_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as the bytes of an RGB buffer (rows padded)."""
    h, w = rgb.shape[:2]
    stride = rgb_row_stride(w)
    if stride == w * 3:
        return np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    padded = np.zeros((h, stride), np.uint8)
    padded[:, : w * 3] = np.asarray(rgb, dtype=np.uint8).reshape(h, w * 3)
    return padded.tobytes()


def rgb_from_buffer_bytes(data: bytes, width_px: int, height_px: int) -> np.ndarray | None:
    """The (H, W, 3) uint8 picture of an RGB buffer: a read-only view where rows are not padded, else an unpadded
    copy; None where the buffer is too short for that size."""
    w, h = width_px, height_px
    stride = rgb_row_stride(w)
    arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size < stride * h:
        return None
    if stride == w * 3:
        return arr[: stride * h].reshape(h, w, 3)
    return arr[: stride * h].reshape(h, stride)[:, : w * 3].reshape(h, w, 3).copy()


__all__ = [
    "is_live_capture",
    "rgb_row_stride",
    "rgb_to_buffer_bytes",
    "rgb_from_buffer_bytes",
    "SourceURI",
    "parse_source_uri",
    "mask_credentials",
    "build_pipeline_description",
    "gst_quote",
    "VIDEO_SINK",
    "AUDIO_SINK",
    "SCHEMES",
]
