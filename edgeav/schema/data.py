"""`data:` section: where the data is, how it is cut into windows, how it is split and cached."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeav.schema.base import Section


class DataConfig(Section):
    kind: Literal["auto", "paired", "video", "manifest"] = Field(
        "auto", description="Data set layout: species-paired folders, videos with sound, or a manifest; auto detects it."
    )
    path: str | None = Field(None, description="Root folder (or manifest file) of the data set; --data overrides it.")
    sample_rate_hz: int = Field(16_000, ge=4_000, le=192_000, description="Audio is resampled to this rate, Hz.")
    window_s: float = Field(5.0, gt=0.0, le=60.0, description="Audio window cut at load time, seconds.")
    hop_s: float = Field(2.5, gt=0.0, le=60.0, description="Hop between windows cut from one recording, seconds.")
    image_size_px: int = Field(224, ge=32, le=1024, description="Images and frames are resized to this square size, pixels.")
    frames_per_clip: int = Field(3, ge=1, le=64, description="Frames sampled per video clip (videos with sound).")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Share of train groups held out for validation (by group).")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of groups for test when the data has no split column.")
    test_image_names: list[str] = Field(
        default_factory=list,
        description="Image file names that form the test split in species-paired folders (e.g. ['4.jpg','5.jpg']).",
    )
    seed: int = Field(0, ge=0, description="Seed of the group split; the split is deterministic under it.")
    cache_dir: str | None = Field(None, description="Decoded-input cache folder; default ~/.cache/edgeav.")
    strict: bool = Field(False, description="Make a bad media file an error instead of skipping it with a warning.")
