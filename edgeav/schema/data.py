"""`data:` section: where the data is, how it is cut into windows, how it is split and cached."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeav.schema.base import Section

# Columns of a CSV/JSONL that carry no role but are known to be informational (kept out of the "unknown column"
# warning). A column outside the role names, their aliases and this list is bad input.
DEFAULT_INFO_COLUMNS = ["transcript", "recordist", "country", "license", "licence", "species", "notes", "source"]


def _check_one_group_regex(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        rx = re.compile(value)
    except re.error as e:
        raise ValueError(f"{name} {value!r} is not a valid regular expression: {e}") from None
    if rx.groups != 1:
        raise ValueError(f"{name} {value!r} must have exactly one capture group, has {rx.groups}")
    return value


class DataConfig(Section):
    kind: Literal["auto", "paired", "video", "manifest", "images"] = Field(
        "auto",
        description=(
            "Data set layout: species-paired folders, videos with sound, a manifest, or photos only "
            "(images/<class>/); auto detects it."
        ),
    )
    path: str | None = Field(None, description="Root folder (or manifest file) of the data set; --data overrides it.")
    sample_rate_hz: int = Field(16_000, ge=4_000, le=192_000, description="Audio is resampled to this rate, Hz.")
    window_s: float = Field(5.0, gt=0.0, le=60.0, description="Audio window cut at load time, seconds.")
    hop_s: float = Field(2.5, gt=0.0, le=60.0, description="Hop between windows cut from one recording, seconds.")
    image_size_px: int = Field(
        224, ge=32, le=1024, description="Images and frames are resized to this square size, pixels."
    )
    frames_per_clip: int = Field(
        3,
        ge=1,
        le=64,
        description=(
            "Still frames sampled per video window when frames_per_window is 1 (training sees one of them "
            "per example, export calibrates on each)."
        ),
    )
    frames_per_window: int = Field(
        1,
        ge=1,
        le=256,
        description="Frames per window the model takes (T): 1 = a still; T > 1 = T consecutive frames (motion).",
    )
    frame_rate_hz: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description="Rate of a window's T frames, Hz (frame k at window start + k / rate); needed when frames_per_window > 1.",
    )
    val_fraction: float = Field(
        0.15, ge=0.0, lt=1.0, description="Share of train groups held out for validation (by group)."
    )
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of groups for test when the data has no split column."
    )
    test_image_names: list[str] = Field(
        default_factory=list,
        description="Image file names that form the test split in species-paired folders (e.g. ['4.jpg','5.jpg']).",
    )
    seed: int = Field(0, ge=0, description="Seed of the group split; the split is deterministic under it.")
    cache_dir: str | None = Field(None, description="Decoded-input cache folder; default ~/.cache/edgeav.")
    cache: bool = Field(
        True, description="Keep decoded audio/images/frames as .npy in cache_dir (keyed by content hash)."
    )
    strict: bool = Field(False, description="Make a bad media file an error instead of skipping it with a warning.")
    index_file: str | None = Field(
        None,
        description=(
            "CSV or JSONL (relative to the data root, or absolute) giving label/split/group per file; default: the "
            "first of manifest.csv, manifest.jsonl, recordings.csv found at the root."
        ),
    )
    label_regex: str | None = Field(
        None,
        description=(
            "Regex with one capture group applied to a file's stem to get its label, for flat folders "
            r"(CREMA-D: '^\d+_[A-Z]+_([A-Z]+)_'). Default: the label is the class folder name."
        ),
    )
    group_regex: str | None = Field(
        None,
        description=(
            r"Regex with one capture group applied to a file's stem to get its group (speaker, recording), e.g. "
            r"'^(\d+)_' for CREMA-D actors. Default: the group column, else each file is its own group."
        ),
    )
    info_columns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INFO_COLUMNS),
        description="Index-file columns that are informational and ignored; any other column without a role is bad input.",
    )

    @model_validator(mode="after")
    def _check_frames(self) -> DataConfig:
        if self.frames_per_window > 1:
            if self.frame_rate_hz is None:
                raise ValueError(f"frames_per_window={self.frames_per_window} needs frame_rate_hz")
            span_s = self.frames_per_window / self.frame_rate_hz
            if span_s > self.window_s + 1e-9:
                raise ValueError(
                    f"{self.frames_per_window} frames at {self.frame_rate_hz} Hz span {span_s:.3f} s, "
                    f"longer than window_s={self.window_s}"
                )
        return self

    @field_validator("label_regex")
    @classmethod
    def _label_regex(cls, v: str | None) -> str | None:
        return _check_one_group_regex(v, "label_regex")

    @field_validator("group_regex")
    @classmethod
    def _group_regex(cls, v: str | None) -> str | None:
        return _check_one_group_regex(v, "group_regex")
