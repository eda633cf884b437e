"""Config sections of the integrations field users expect: notifications with rules (`daemon.notify`), the privacy
filter (`daemon.privacy`) and class rules (`runtime.postprocess.classes`). Home Assistant discovery is a switch of
`daemon.mqtt` (`homeassistant`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeav.schema.base import Section


class NotifyRule(Section):
    """When a detection of a class sends a notification. All set conditions must hold; with `first_of_day` and
    `rare_below` both set, either one is enough (each says "this is news")."""

    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="Only detections at least this confident, 1.")
    cooldown_s: float = Field(
        0.0, ge=0.0, le=30 * 86_400.0, description="At most one notification of the class within this, s."
    )
    first_of_day: bool = Field(False, description="Only the class's first detection of the (local) day.")
    rare_below: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Only when the class was detected fewer than this many times in the last rare_days "
        "(None = no rarity condition), detections.",
    )
    rare_days: float = Field(7.0, gt=0.0, le=3650.0, description="Span the rarity count looks back, days.")


class NotifyConfig(Section):
    """Notifications through Apprise (extra `notify`): one URL per service (ntfy://, tgram://, mailto://, json://
    a webhook ...), sent from a queue by a thread of their own, retried, never on the main loop."""

    enabled: bool = Field(False, description="Send notifications.")
    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs, one per target (https://github.com/caronc/apprise/wiki); secrets belong in "
        "urls_file instead.",
    )
    urls_file: str | None = Field(
        None, description="File with more Apprise URLs, one a line (# comments), kept out of the YAML."
    )
    default: NotifyRule = Field(default_factory=NotifyRule, description="Rule for every class without its own.")
    classes: dict[str, NotifyRule] = Field(
        default_factory=dict, description="Rules by class label (replace `default` for that class)."
    )
    only_classes: list[str] = Field(
        default_factory=list, description="Notify only these classes (empty = every class)."
    )
    base_url: str | None = Field(
        None,
        description="Where the unit's web app is reached (e.g. http://unit.local:8080): the message links "
        "<base_url>/detections/<id>; None = no link.",
    )
    title: str = Field("edgeav {unit}: {label}", description="Title template ({unit}, {label}, {confidence}).")
    queue_max: int = Field(
        256, ge=1, le=100_000, description="Notifications waiting to be sent; beyond it new ones are dropped (counted)."
    )
    retries: int = Field(3, ge=0, le=100, description="Retries of a failed send per target, tries.")
    retry_backoff_s: float = Field(
        2.0, gt=0.0, le=3600.0, description="Wait before the first retry, doubled each retry, s."
    )
    timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="Connect and read timeout of one send (Apprise's cto/rto), s."
    )

    @model_validator(mode="after")
    def _check(self) -> NotifyConfig:
        if self.enabled and not self.urls and self.urls_file is None:
            raise ValueError("notify.enabled needs notify.urls or notify.urls_file")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"notify.base_url {self.base_url!r} must start with http:// or https://")
        return self


class PrivacyConfig(Section):
    """A voice activity detector (Silero VAD, its ONNX model from the `silero-vad` package) on the audio of every
    window before evidence or publication: speech is people, whose voices must not be recorded."""

    mode: Literal["off", "drop_audio", "drop_detection"] = Field(
        "off",
        description="off: no filter; drop_audio: a detection with speech in its span is logged without its audio "
        "(no WAV leaves the unit); drop_detection: such a detection is not logged, published or notified at all.",
    )
    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Speech probability of a 32 ms VAD frame that counts as speech, 1."
    )
    min_speech_s: float = Field(
        0.096,
        ge=0.032,
        le=10.0,
        description="Speech frames within a detection's span (and pad_s before it) needed to call it speech, s.",
    )
    pad_s: float = Field(
        0.5, ge=0.0, le=30.0, description="Also look this far before a detection's span (words trail off), s."
    )
    model_path: str | None = Field(
        None, description="The Silero VAD ONNX file; None = silero_vad.onnx from the installed silero-vad package."
    )


class ClassRule(Section):
    """Per-class rule of post-processing."""

    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Score threshold of the class (None = postprocess.threshold), probability."
    )
    min_interval_s: float = Field(
        0.0,
        ge=0.0,
        le=30 * 86_400.0,
        description="A detection of the class within this of its last reported one is dropped (counted), s.",
    )


class ClassRulesConfig(Section):
    """Which classes are reported at all and how often (edgeav.runtime.class_rules); drops counted in /metrics."""

    include: list[str] = Field(default_factory=list, description="Report only these classes (empty = every class).")
    exclude: list[str] = Field(default_factory=list, description="Never report these classes.")
    rules: dict[str, ClassRule] = Field(
        default_factory=dict, description="Per-class threshold and minimum interval, by label."
    )

    @model_validator(mode="after")
    def _check(self) -> ClassRulesConfig:
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise ValueError(f"classes.include and classes.exclude both name {both}")
        return self


__all__ = ["NotifyRule", "NotifyConfig", "PrivacyConfig", "ClassRule", "ClassRulesConfig"]
