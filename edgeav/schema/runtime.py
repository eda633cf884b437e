"""`runtime:` section: capture source, alignment, inference backend, post-processing.

Durations a person types are seconds or milliseconds (floats, converted once to integer ns with
`edgeav.timebase.s_to_ns`); sensor latency offsets are integer nanoseconds because they are measured, not typed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgeav.schema.base import Section
from edgeav.schema.integrations import ClassRulesConfig


class SourceConfig(Section):
    """Where frames and audio come from. One GStreamer pipeline, so both sensors share one clock."""

    uri: str = Field(
        "test://",
        description="Primary source URI: v4l2:///dev/videoN, csi://N, rtsp://..., file:///path, alsa://hw:1,0, "
        "pulse://default, test://?pattern=ball&freq_hz=440&live=1&duration_s=10.",
    )
    audio_uri: str | None = Field(
        None, description="Extra audio-only source (alsa://, pulse://, test://) joined to a video-only primary URI."
    )
    streams: list[Literal["video", "audio"]] | None = Field(
        None,
        description="Streams to capture; None = what the source has (a file is probed; rtsp = video; test = both).",
    )
    fps: float = Field(5.0, gt=0.0, le=240.0, description="Frame rate delivered to the runtime (videorate), frames/s.")
    video_scale_method: Literal["nearest-neighbour", "bilinear", "bilinear2", "4-tap", "lanczos"] = Field(
        "bilinear2",
        description="videoscale method to the model's H x W; bilinear2 (multi-tap) matches Pillow's bilinear resize "
        "used in training.",
    )
    decoder_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="Threads per software video decoder (libav max-threads) inside uridecodebin/decodebin; 1 keeps "
        "decoding on one core so inference has the others; 0 = the decoder's default (one per core), threads.",
    )
    appsink_max_buffers: int = Field(
        8, ge=1, le=1024, description="Buffers an appsink holds before it pushes back, buffers."
    )
    queue_max_items: int = Field(
        64,
        ge=4,
        le=100_000,
        description="Python-side capture queue bound (frames + audio buffers; about 4 s of a 5 fps camera and "
        "100 ms audio buffers), items; a live source drops the oldest (counted), a replay waits.",
    )
    audio_chunk_s: float = Field(
        0.1, gt=0.0, le=5.0, description="Audio buffer length requested from test/alsa/pulse sources, s."
    )
    rtsp_latency_ms: int = Field(200, ge=0, le=10_000, description="rtspsrc jitter buffer, ms.")
    rtsp_tcp: bool = Field(True, description="Force RTSP over TCP (interleaved), robust on lossy links.")
    read_timeout_s: float = Field(0.5, gt=0.0, le=60.0, description="One capture read waits at most this long, s.")
    stall_timeout_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="No item at all for this long is a SensorError, s."
    )
    start_timeout_s: float = Field(10.0, gt=0.0, le=300.0, description="Pipeline must reach PLAYING within this, s.")


class AlignConfig(Section):
    """Pairing audio windows with frames by PTS (edgeav.runtime.align)."""

    hop_s: float = Field(0.5, gt=0.0, le=60.0, description="A window is assembled every hop, s.")
    audio_offset_ns: int = Field(
        0, ge=-10_000_000_000, le=10_000_000_000, description="Audio latency offset subtracted from audio PTS, ns."
    )
    video_offset_ns: int = Field(
        0, ge=-10_000_000_000, le=10_000_000_000, description="Video latency offset subtracted from frame PTS, ns."
    )
    frame_tolerance_ms: float = Field(
        500.0, gt=0.0, le=60_000.0, description="Nearest frame farther than this from its target time = no image, ms."
    )
    min_frames_present_fraction: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="With T frames per window: a frame target with no frame within the tolerance is a missing frame "
        "(fed as zeros, flagged in frames_present); fewer present frames than this share of T = no image, fraction.",
    )
    max_gap_ms: float = Field(
        50.0, ge=0.0, le=60_000.0, description="Audio holes up to this total are zero-filled; more = no audio, ms."
    )
    max_wait_s: float = Field(
        2.0, ge=0.0, le=600.0, description="A window waits this long past its end for a lagging sensor, s."
    )
    retain_s: float = Field(
        5.0, ge=0.0, le=600.0, description="Data kept beyond one window + wait for late pairing (bounds memory), s."
    )
    max_backlog_windows: int = Field(
        120,
        ge=1,
        le=100_000,
        description="After a long stall, windows beyond this many are skipped (counted), windows.",
    )


class BackendConfig(Section):
    """Inference backend (edgeav.runtime.backends)."""

    name: Literal["onnxruntime", "tensorrt", "pytorch"] = Field(
        "onnxruntime", description="Backend registry name (pytorch: development only, runs a .pt checkpoint)."
    )
    providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=lambda: ["cpu"],
        description="ONNX Runtime execution providers in priority order; one not available is an error, never skipped.",
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="ORT intra-op threads: 1 runs the model on the calling thread and leaves the other cores to the "
        "GStreamer decoders (fastest on a shared 2-core unit, no spinning threads); 0 = ORT default (one per "
        "physical core), threads.",
    )
    inter_op_threads: int = Field(0, ge=0, le=256, description="ORT inter-op threads; 0 = ORT default, threads.")
    device_id: int = Field(0, ge=0, le=64, description="GPU index for CUDA/TensorRT providers.")
    replay_batch_windows: int = Field(
        8,
        ge=1,
        le=256,
        description="Windows inferred in one call when replaying a file as fast as possible (a live source always "
        "infers each window as soon as it is complete), windows; capped by the model's batch axis.",
    )


class PostprocessConfig(Section):
    """Smoothing, thresholds, confirmation, de-duplication (edgeav.runtime.postprocess)."""

    smoothing: Literal["none", "ema", "mean"] = Field("mean", description="Score smoothing over overlapping windows.")
    ema_alpha: float = Field(0.5, gt=0.0, le=1.0, description="EMA weight of the newest window (smoothing=ema), 1.")
    mean_windows: int = Field(3, ge=1, le=1000, description="Windows averaged (smoothing=mean), windows.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Default per-class score threshold, probability.")
    confirm_hits: int = Field(1, ge=1, le=1000, description="Hits needed within confirm_window_s to report, windows.")
    confirm_window_s: float = Field(2.0, gt=0.0, le=3600.0, description="Confirmation span, s.")
    min_gap_s: float = Field(
        3.0, ge=0.0, le=86_400.0, description="Minimum gap between two detections of one class, s."
    )
    classes: ClassRulesConfig = Field(
        default_factory=ClassRulesConfig,
        description="Include/exclude lists, per-class threshold and interval (the older keys `class_thresholds: "
        "{label: p}` and `ignore_labels: [label]` are read into classes.rules[label].threshold and classes.exclude).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_older_keys(cls, data: Any) -> Any:
        """`class_thresholds` and `ignore_labels` (before `classes` existed) become class rules: one mechanism."""
        if not isinstance(data, dict) or not ({"class_thresholds", "ignore_labels"} & set(data)):
            return data
        data = dict(data)
        thresholds = data.pop("class_thresholds", None) or {}
        ignored = data.pop("ignore_labels", None) or []
        classes = data.get("classes") or {}
        classes = classes.model_dump() if isinstance(classes, ClassRulesConfig) else dict(classes)
        rules = {k: dict(v) if isinstance(v, dict) else v.model_dump() for k, v in (classes.get("rules") or {}).items()}
        twice = sorted(k for k in thresholds if rules.get(k, {}).get("threshold") is not None)
        if twice:
            raise ValueError(f"class_thresholds and classes.rules both set a threshold for {twice}")
        for k, v in thresholds.items():
            rules.setdefault(k, {})["threshold"] = v
        classes["rules"] = rules
        excluded = list(classes.get("exclude") or [])
        classes["exclude"] = [*excluded, *(lb for lb in ignored if lb not in excluded)]
        data["classes"] = classes
        return data


class RuntimeConfig(Section):
    """The field unit: capture -> align -> infer -> post-process."""

    source: SourceConfig = Field(default_factory=SourceConfig, description="Capture source.")
    align: AlignConfig = Field(default_factory=AlignConfig, description="Audio/frame alignment.")
    backend: BackendConfig = Field(default_factory=BackendConfig, description="Inference backend.")
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig, description="Detection logic.")


__all__ = ["RuntimeConfig", "SourceConfig", "AlignConfig", "BackendConfig", "PostprocessConfig"]
