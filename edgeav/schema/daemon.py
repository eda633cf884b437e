"""`daemon:` section: the field daemon around the runtime (detection log, evidence, supervision, metrics, MQTT).

The capture source, alignment, backend and detection logic stay in `runtime:`; this section says how the
long-running service keeps them alive and what it does with what they find.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeav.schema.base import Section
from edgeav.schema.integrations import NotifyConfig, PrivacyConfig
from edgeav.schema.web import WebConfig


class StoreConfig(Section):
    """The SQLite detection log (edgeav.runtime.store)."""

    db_path: str = Field(
        "edgeav.db", description="SQLite file of the detection log (WAL mode); relative = to the working directory."
    )
    synchronous: Literal["NORMAL", "FULL", "EXTRA"] = Field(
        "FULL", description="SQLite synchronous level: FULL survives power loss; NORMAL only a killed process."
    )
    batch_max_detections: int = Field(
        64, ge=1, le=100_000, description="Commit when this many detections are queued, detections."
    )
    batch_interval_s: float = Field(
        1.0, ge=0.0, le=3600.0, description="Commit queued detections at least this often, s."
    )
    max_pending_detections: int = Field(
        10_000,
        ge=2,
        le=10_000_000,
        description="Detections held in memory while commits fail (disk full, I/O error): "
        "past half of it the oldest waiting detection's evidence files are deleted, past all of it the oldest "
        "waiting detection is dropped (each logged and counted), detections.",
    )
    max_unhealthy_s: float = Field(
        900.0,
        gt=0.0,
        le=604_800.0,
        description="Stop sending WATCHDOG=1 (systemd restarts the daemon) when nothing "
        "could be committed for this long; /health is unhealthy from the first failed commit, s.",
    )
    outbox_keep_days: float = Field(
        1.0,
        ge=0.0,
        le=3650.0,
        description="MQTT outbox rows the broker acknowledged are deleted this long after, days.",
    )
    keep_days: float | None = Field(
        None,
        gt=0.0,
        le=36_500.0,
        description="Detections older than this (and without evidence files) are appended to "
        "<db_path>.archive/detections-<day>.jsonl.gz, then deleted; None = keep every detection in the log, days.",
    )

    @model_validator(mode="after")
    def _check(self) -> StoreConfig:
        if self.max_pending_detections < 2 * self.batch_max_detections:
            raise ValueError(
                "store.max_pending_detections must be at least twice store.batch_max_detections "
                "(a full batch waits in memory before its commit)"
            )
        return self


class EvidenceConfig(Section):
    """Per confirmed detection: its aligned audio, one frame and (`clip`) the window's frames as MP4, named by the
    detection id (edgeav.runtime.evidence)."""

    enabled: bool = Field(True, description="Write evidence clips at all.")
    dir: str = Field("evidence", description="Folder of the evidence files (one sub-folder per UTC day).")
    audio_format: Literal["wav", "flac", "none"] = Field(
        "wav",
        description="wav: 16-bit PCM with the stdlib (no dependency); flac: needs the soundfile package; none: no audio.",
    )
    image_format: Literal["jpeg", "none"] = Field(
        "jpeg", description="jpeg: GStreamer jpegenc (already a runtime dependency); none: no frame."
    )
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality, 1..100.")
    clip: bool = Field(
        False,
        description="Also write the confirming window's T frames as a short MP4 (H.264 with GStreamer openh264enc "
        "+ mp4mux, at the model's frame rate; gstreamer1.0-plugins-bad); only for models with more than one frame per window.",
    )
    clip_bitrate_kbps: int = Field(400, ge=16, le=50_000, description="H.264 bit rate of the evidence clip, kbit/s.")
    min_free_percent: float = Field(
        20.0,
        ge=0.0,
        le=95.0,
        description="Keep at least this share of the evidence file system free: oldest evidence goes first, %.",
    )
    keep_per_class: int = Field(
        5,
        ge=0,
        le=1_000_000,
        description="Disk-usage retention never deletes the newest this many evidence sets of a class, sets.",
    )
    max_age_days: float | None = Field(
        90.0, gt=0.0, le=36_500.0, description="Evidence older than this is deleted (None = keep by age forever), days."
    )
    retention_interval_s: float = Field(60.0, gt=0.0, le=86_400.0, description="Retention runs at most this often, s.")
    context_windows: int = Field(
        8, ge=1, le=1000, description="Recent windows kept in memory to cut a detection's audio from, windows."
    )
    queue_max_sets: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Evidence sets waiting for the evidence thread (encoding is off the main loop); "
        "a set beyond this is skipped (counted, noted in its row), sets.",
    )


class QueuesConfig(Section):
    """One bounded queue per sensor between its capture thread and the main loop, so a stalled main loop cannot let
    one sensor push the other's data out. A live source drops the oldest item of its own queue (counted per
    sensor); a replay waits. Combined sensors (one pipeline) get the sum of the two."""

    camera_max_items: int = Field(
        32, ge=4, le=100_000, description="Camera queue bound (about 6 s of a 5 fps camera), frames."
    )
    microphone_max_items: int = Field(
        128, ge=4, le=100_000, description="Microphone queue bound (about 13 s of 100 ms audio buffers), buffers."
    )


class SupervisorConfig(Section):
    """Restarting a failed or silent sensor (edgeav.runtime.supervisor). Silence = runtime.source.stall_timeout_s."""

    backoff_initial_s: float = Field(1.0, gt=0.0, le=3600.0, description="First restart delay, s.")
    backoff_max_s: float = Field(60.0, gt=0.0, le=86_400.0, description="Longest restart delay, s.")
    backoff_factor: float = Field(2.0, ge=1.0, le=10.0, description="Delay multiplier per consecutive failure, 1.")
    backoff_jitter: float = Field(0.2, ge=0.0, le=1.0, description="Random +/- share added to each delay, fraction.")
    restart_budget: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Restarts of one sensor allowed within restart_window_s before the daemon exits non-zero, restarts.",
    )
    restart_window_s: float = Field(600.0, gt=0.0, le=604_800.0, description="Window of the restart budget, s.")
    healthy_after_s: float = Field(
        30.0, gt=0.0, le=86_400.0, description="Data flowing this long resets the backoff, s."
    )


class MetricsConfig(Section):
    """Prometheus endpoint /metrics and /health (edgeav.runtime.metrics)."""

    enabled: bool = Field(True, description="Serve /metrics and /health.")
    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps it on the unit (0.0.0.0 exposes it).")
    port: int = Field(9108, ge=0, le=65_535, description="TCP port; 0 = any free port (logged), port.")
    health_max_age_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="/health fails when no window was processed for this long, s."
    )


class MqttConfig(Section):
    """Publishing detections and heartbeats (extra `mqtt`: paho-mqtt), through a durable outbox in the log."""

    enabled: bool = Field(False, description="Publish to an MQTT broker.")
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65_535, description="Broker port (8883 is the usual TLS port), port.")
    client_id: str | None = Field(None, description="MQTT client id; None = edgeav-<hostname>.")
    topic_prefix: str = Field("edgeav", description="Topics: <prefix>/<unit>/detection and <prefix>/<unit>/heartbeat.")
    unit_name: str | None = Field(None, description="Unit name in the topics; None = the host name.")
    qos: Literal[0, 1, 2] = Field(
        2,
        description="QoS of detection messages: 2 = exactly once to the broker (a message in flight when the link "
        "drops is not delivered twice), 1 = at least once (it may be), 0 = at most once.",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT protocol version. 5: a fresh session at each daemon start, resumed across reconnects "
        "(what makes QoS 2 exactly-once through a broker outage); 3.1.1 for brokers without v5 (clean session at "
        "every connect: a message in flight at a drop may then arrive twice).",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        le=86_400 * 7,
        description="MQTT 5: how long the broker keeps the daemon's session (in-flight "
        "QoS 2 state) while the link is down, s.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive, s.")
    heartbeat_interval_s: float = Field(30.0, gt=0.0, le=86_400.0, description="Heartbeat period, s.")
    username: str | None = Field(None, description="User name; None = anonymous.")
    password_file: str | None = Field(None, description="File holding the password (never put it in the YAML).")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str | None = Field(None, description="CA certificate(s) to verify the broker; None = the system store.")
    cert_file: str | None = Field(None, description="Client certificate for mutual TLS.")
    key_file: str | None = Field(None, description="Client key for mutual TLS.")
    tls_insecure: bool = Field(False, description="Skip the broker host name check (testing only; logged loudly).")
    reconnect_min_s: float = Field(1.0, gt=0.0, le=600.0, description="Reconnect delay after a lost connection, s.")
    reconnect_max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Longest reconnect delay, s.")
    inflight_max: int = Field(20, ge=1, le=10_000, description="Unacknowledged detection messages at a time, messages.")
    homeassistant: bool = Field(
        False,
        description="Home Assistant MQTT discovery: retained configs of one device per unit with its sensors "
        "(edgeav.runtime.homeassistant); false removes configs a previous run left.",
    )
    homeassistant_prefix: str = Field("homeassistant", description="Home Assistant's discovery topic prefix.")

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together")
        if self.password_file is not None and self.username is None:
            raise ValueError("mqtt.password_file needs mqtt.username")
        return self


class DaemonConfig(Section):
    """`edgeav run --config daemon.yaml`: the long-running service."""

    bundle: str | None = Field(None, description="Bundle folder (verified at start); `--bundle` overrides it.")
    model_role: str | None = Field(
        None,
        description="Bundle file role to run (model_int8, model_fp32, ...); None = int8, else fp32 (engine for tensorrt).",
    )
    sensors: Literal["split", "combined"] = Field(
        "split",
        description="split: camera and microphone in separate pipelines, so one keeps working while the other restarts; "
        "combined: one pipeline for both (one clock, both restart together).",
    )
    realtime: bool = Field(True, description="Pace file replay on the clock (a live source is always real time).")
    loop: bool = Field(False, description="Replay a file source again from its start at end of stream (soak tests).")
    exit_on_eos: bool = Field(True, description="End the daemon (exit 0) when a non-looping file source ends.")
    shutdown_timeout_s: float = Field(
        4.0, gt=0.0, le=60.0, description="SIGTERM: everything is flushed and stopped within this, s."
    )
    watchdog_interval_s: float | None = Field(
        None, gt=0.0, le=3600.0, description="sd_notify WATCHDOG=1 period; None = half of systemd's WatchdogSec, s."
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="Detection log.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence clips and retention.")
    queues: QueuesConfig = Field(default_factory=QueuesConfig, description="Per-sensor queues to the main loop.")
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig, description="Sensor restarts.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics and /health.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing.")
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="Notifications with rules (Apprise).")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Speech filter (Silero VAD).")
    web: WebConfig = Field(default_factory=WebConfig, description="The web view (edgeav serve's app in the daemon).")

    @model_validator(mode="after")
    def _check(self) -> DaemonConfig:
        if self.supervisor.backoff_max_s < self.supervisor.backoff_initial_s:
            raise ValueError("supervisor.backoff_max_s must be >= supervisor.backoff_initial_s")
        return self


__all__ = [
    "DaemonConfig",
    "StoreConfig",
    "EvidenceConfig",
    "QueuesConfig",
    "SupervisorConfig",
    "MetricsConfig",
    "MqttConfig",
]
