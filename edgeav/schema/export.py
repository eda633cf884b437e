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
        300,
        ge=1,
        le=100_000,
        description="INT8 calibration: windows drawn from the training split, stratified (count).",
    )
    parity_windows: int = Field(
        64, ge=1, le=100_000, description="Parity check: validation windows compared with PyTorch, stratified (count)."
    )
    parity_max_abs_diff: float = Field(
        1e-4,
        gt=0.0,
        le=1.0,
        description="Parity check: largest allowed |logit difference| ONNX vs PyTorch (logit units).",
    )
    parity_rel_diff: float = Field(
        1e-5,
        ge=0.0,
        le=1e-2,
        description="Parity check: relative term of the bound, |diff| <= parity_max_abs_diff + "
        "parity_rel_diff x |PyTorch logit| element by element (numpy allclose's rule; float32 rounding grows with the "
        "logits' size), ratio.",
    )
    fp16_max_abs_diff: float = Field(
        5e-2,
        gt=0.0,
        le=10.0,
        description="FP16 parity: largest allowed |logit difference| vs PyTorch FP32 (logit units).",
    )
    fp16_min_agreement_pct: float = Field(
        99.0, ge=0.0, le=100.0, description="FP16 parity: least top-1 agreement with PyTorch FP32 (percent)."
    )
    sensitivity_retry: bool = Field(
        True,
        description="When the INT8 gate fails, run the per-op-type sensitivity check once, keep the fragile op "
        "types in float, quantize again and gate again (logged; the manifest lists the nodes kept in float).",
    )
