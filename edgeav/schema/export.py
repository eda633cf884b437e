"""`export:` section: what `edgeav export` does by default (owned by the export layer; CLI flags override it)."""

from __future__ import annotations

from pydantic import Field

from edgeav.schema.base import Section


class ExportConfig(Section):
    opset: int = Field(17, ge=17, le=21, description="ONNX opset version (integer, 17..21).")
    max_drop_points: float = Field(
        1.0, ge=0.0, le=100.0, description="INT8 gate: largest allowed drop in overall accuracy (percentage points)."
    )
    max_class_drop_points: float = Field(
        5.0, ge=0.0, le=100.0, description="INT8 gate: largest allowed drop in any class's recall (percentage points)."
    )
    calib_windows: int = Field(
        300, ge=1, le=100_000, description="INT8 calibration: windows drawn from the training split, stratified (count)."
    )
