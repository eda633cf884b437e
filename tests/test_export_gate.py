"""The INT8 accuracy gate: overall and per-class drops, with the figures that failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeav.errors import ExportError
from edgeav.export.gate import accuracy_gate, evaluate_onnx, metrics_from_predictions

LABELS = ["crow", "finch", "owl"]


def _m(acc: float, **recall: float) -> dict:
    return {"accuracy": acc, "per_class_recall": recall}


def test_gate_passes_within_limits() -> None:
    r = accuracy_gate(_m(90.0, crow=90, finch=88, owl=92), _m(89.5, crow=86, finch=88, owl=92))
    assert r.passed and r.failures == [] and r.accuracy_drop_points == pytest.approx(0.5)
    assert r.class_drop_points["crow"] == pytest.approx(4.0)
    r.raise_if_failed()


def test_gate_fails_on_overall_drop() -> None:
    r = accuracy_gate(_m(90.0, crow=90), _m(88.0, crow=90), max_drop_points=1.0)
    assert not r.passed and len(r.failures) == 1
    assert "accuracy fell 2.00 points (90.00 -> 88.00 %)" in r.failures[0]


def test_one_class_dropping_six_points_fails_even_when_overall_is_fine() -> None:
    r = accuracy_gate(_m(90.0, crow=90, finch=90, owl=90), _m(89.8, crow=84, finch=92, owl=93))
    assert not r.passed and r.accuracy_drop_points < 1.0
    assert len(r.failures) == 1 and "'crow' recall fell 6.00 points (90.00 -> 84.00 %)" in r.failures[0]
    with pytest.raises(ExportError, match="crow"):
        r.raise_if_failed()
    assert r.to_dict()["passed"] is False


def test_metrics_from_predictions() -> None:
    m = metrics_from_predictions([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], LABELS)
    assert m.accuracy == pytest.approx(60.0)
    assert m.per_class_recall == {"crow": 50.0, "finch": 100.0, "owl": 0.0}
    assert m.support == {"crow": 2, "finch": 2, "owl": 1}


def test_evaluate_onnx_on_an_iterable(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    # logits = mask @ W (a 2 -> 3 linear map): the label is readable from the mask alone
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 3], [1, 0, 0, 0, 1, 0])
    g = helper.make_graph(
        [helper.make_node("MatMul", ["mask", "W"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    samples = ((({"mask": np.array([[1, 0], [0, 1]], np.float32)}), np.array([0, 1])) for _ in range(3))
    m = evaluate_onnx(path, samples, LABELS)
    assert m.accuracy == 100.0 and m.n == 6 and "owl" not in m.per_class_recall
    wrong = [({"mask": np.array([[1, 0]], np.float32)}, 1)]
    assert evaluate_onnx(path, wrong, LABELS, simulate_qdq=True).accuracy == 0.0
    with pytest.raises(ExportError, match="no evaluation samples"):
        evaluate_onnx(path, [], LABELS)


def _outputs(logits: np.ndarray) -> dict[str, np.ndarray]:
    from edgeav.export.onnx_export import OUTPUT_NAMES

    return {name: logits.astype(np.float32) for name in OUTPUT_NAMES}


def test_parity_bound_scales_with_the_logits_size() -> None:
    """BirdNET-sized logits (tens of units) differ by float32 rounding more than 1e-4 and must pass; the same
    difference on unit-sized logits is a real error and must fail; NaN never passes."""
    from edgeav.export.onnx_export import compare_outputs

    big = np.array([[-31.0, 24.0, -12.5]])
    rep = compare_outputs([_outputs(big)], [_outputs(big + 1.4e-4)], max_abs_diff=1e-4, rel_diff=1e-5)
    assert rep.passed and rep.max_abs_diff["logits"] == pytest.approx(1.4e-4, rel=1e-2)
    assert rep.to_dict()["rel_diff_limit"] == 1e-5
    assert not compare_outputs([_outputs(big)], [_outputs(big + 1.4e-4)], max_abs_diff=1e-4).passed  # absolute only
    small = np.array([[0.3, -0.9, 0.1]])
    rep = compare_outputs([_outputs(small)], [_outputs(small + 1.4e-4)], max_abs_diff=1e-4, rel_diff=1e-5)
    assert not rep.passed and "1e-05 x |reference|" in rep.failures[0]
    nan = small.copy()
    nan[0, 0] = np.nan
    assert not compare_outputs([_outputs(small)], [_outputs(nan)], max_abs_diff=1e-4, rel_diff=1e-5).passed
