"""The INT8 accuracy gate: an INT8 model that loses more than the allowed points (overall, or for any class) is
refused, with the figures that failed.

`evaluate_onnx` scores an ONNX model in ONNX Runtime on any iterable of (feeds, label) pairs; `accuracy_gate`
compares two such scores. Accuracy and recall are in percent (0..100), drops in percentage points.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.errors import ExportError
from edgeav.export.parity import onnx_runner, top1

log = logging.getLogger(__name__)


@dataclass
class ClassificationMetrics:
    """Accuracy and per-class recall, percent; `support` counts the samples of each class."""

    accuracy: float
    per_class_recall: dict[str, float]
    support: dict[str, int]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_class_recall": dict(self.per_class_recall),
            "support": dict(self.support),
            "n": self.n,
        }


def metrics_from_predictions(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> ClassificationMetrics:
    t, p = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ExportError(f"cannot score: {t.size} labels for {p.size} predictions")
    if t.min() < 0 or t.max() >= len(labels):
        raise ExportError(f"label index out of range 0..{len(labels) - 1}: {int(t.min())}..{int(t.max())}")
    recall, support = {}, {}
    for k, name in enumerate(labels):
        sel = t == k
        support[name] = int(sel.sum())
        if sel.any():
            recall[name] = float(100.0 * (p[sel] == k).mean())
    return ClassificationMetrics(float(100.0 * (t == p).mean()), recall, support, int(t.size))


def evaluate_onnx(
    model_path: str | Path,
    samples: Iterable[tuple[Mapping[str, np.ndarray], Any]],
    labels: Sequence[str],
    *,
    output: str = "logits",
    simulate_qdq: bool = False,
    providers: Sequence[str] = ("cpu",),
) -> ClassificationMetrics:
    """Accuracy and per-class recall of the ONNX model at `model_path` on `samples`.

    `samples` yields (feeds, label): feeds {audio, image, mask} with a batch axis, label an int or an array of
    ints (one per batch row). `simulate_qdq=True` runs Q/DQ nodes as float ops (graph optimizations off): use it
    for the trt_symmetric form, whose integer kernels run in TensorRT, not in ONNX Runtime on this CPU.
    Predictions are `edgeav.export.parity.top1` of `output`, the comparator's top-1 rule.
    """
    runner = onnx_runner(model_path, [output], simulate_qdq=simulate_qdq, providers=tuple(providers))
    inputs = runner.input_names
    y_true: list[np.ndarray] = []
    y_pred: list[np.ndarray] = []
    for feeds, label in samples:
        missing = [n for n in inputs if n not in feeds]
        if missing:
            raise ExportError(f"evaluation feeds lack input(s) {missing}")
        logits = runner.run(feeds)[output]  # (B, C)
        if logits.shape[-1] != len(labels):
            raise ExportError(f"{Path(model_path).name} gives {logits.shape[-1]} classes; {len(labels)} labels given")
        y_pred.append(top1(logits))
        y_true.append(np.asarray(label, dtype=np.int64).reshape(-1))
    if not y_true:
        raise ExportError(f"no evaluation samples for {Path(model_path).name}")
    m = metrics_from_predictions(np.concatenate(y_true), np.concatenate(y_pred), labels)
    log.info("%s: accuracy %.2f %% on %d samples", Path(model_path).name, m.accuracy, m.n)
    return m


@dataclass
class GateResult:
    passed: bool
    accuracy_drop_points: float
    class_drop_points: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    max_drop_points: float = 1.0
    max_class_drop_points: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "accuracy_drop_points": self.accuracy_drop_points,
            "class_drop_points": dict(self.class_drop_points),
            "failures": list(self.failures),
            "max_drop_points": self.max_drop_points,
            "max_class_drop_points": self.max_class_drop_points,
        }

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ExportError(
                "INT8 model refused by the accuracy gate: "
                + "; ".join(self.failures)
                + " (keep fragile nodes in float, calibrate on more data, or raise --max-drop / "
                "--max-class-drop)"
            )


def _as_metrics(m: ClassificationMetrics | Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    if isinstance(m, ClassificationMetrics):
        return m.accuracy, m.per_class_recall
    try:
        return float(m["accuracy"]), {str(k): float(v) for k, v in m.get("per_class_recall", {}).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"metrics need 'accuracy' and 'per_class_recall' (percent): {e}") from None


def accuracy_gate(
    fp32_metrics: ClassificationMetrics | Mapping[str, Any],
    int8_metrics: ClassificationMetrics | Mapping[str, Any],
    max_drop_points: float = 1.0,
    max_class_drop_points: float = 5.0,
) -> GateResult:
    """Compare INT8 with FP32: the overall accuracy may drop at most `max_drop_points`, the recall of any class at
    most `max_class_drop_points` (percentage points). The result lists each failure with its figures."""
    acc32, rec32 = _as_metrics(fp32_metrics)
    acc8, rec8 = _as_metrics(int8_metrics)
    failures: list[str] = []
    drop = round(acc32 - acc8, 6)
    if drop > max_drop_points:
        failures.append(f"accuracy fell {drop:.2f} points ({acc32:.2f} -> {acc8:.2f} %), more than {max_drop_points:g}")
    class_drops: dict[str, float] = {}
    for name, r32 in rec32.items():
        if name not in rec8:
            failures.append(f"class {name!r} has FP32 recall {r32:.2f} % but no INT8 recall")
            continue
        class_drops[name] = d = round(r32 - rec8[name], 6)
        if d > max_class_drop_points:
            failures.append(
                f"class {name!r} recall fell {d:.2f} points ({r32:.2f} -> {rec8[name]:.2f} %), "
                f"more than {max_class_drop_points:g}"
            )
    res = GateResult(not failures, drop, class_drops, failures, max_drop_points, max_class_drop_points)
    if res.passed:
        worst = max(class_drops.items(), key=lambda kv: kv[1], default=("-", 0.0))
        log.info("INT8 gate passed: accuracy drop %.2f points, worst class %s %.2f points", drop, *worst)
    else:
        log.warning("INT8 gate failed: %s", "; ".join(failures))
    return res


__all__ = ["ClassificationMetrics", "GateResult", "accuracy_gate", "evaluate_onnx", "metrics_from_predictions"]
