"""The one comparator: outputs of two runs over the same feeds, and the parity check built on it.

    report = compare_outputs(reference_runs, other_runs, max_abs_diff=1e-4, rel_diff=1e-5)
    report.max_abs_diff["logits"], report.rel_rms_error["logits"], report.top1_agreement
    report.raise_if_failed("FP16 ONNX")

Every check that compares a model with another calls `compare_outputs`: the FP32 and FP16 parity against PyTorch,
the TensorRT engine against ONNX Runtime (edgeav.export.tensorrt), the INT8 sensitivity trials (its
`rel_rms_error`, `edgeav.export.quantize.logits_error`). The INT8 gate scores each model against the labels with the
same top-1 rule (`top1`). Runs come from runners behind one interface (`run(feeds) -> {output: array}`,
edgeav.onnx_session.Runner): `onnx_outputs` (ONNX Runtime, through the one session factory) and `torch_outputs`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.backend import OUTPUT_NAMES
from edgeav.errors import ExportError
from edgeav.onnx_session import OnnxRunner, run_all

log = logging.getLogger(__name__)

PARITY_MAX_ABS_DIFF = 1e-4
PARITY_REL_DIFF = 1e-5
Feeds = Mapping[str, np.ndarray]


@dataclass
class ParityReport:
    """PyTorch vs ONNX Runtime on the same feeds. Diffs are absolute, per output; agreement in percent."""

    n: int
    max_abs_diff: dict[str, float]
    top1_agreement: float
    max_abs_diff_limit: float
    min_agreement: float = 100.0
    reference: str = "pytorch fp32"
    failures: list[str] = field(default_factory=list)
    rel_diff_limit: float = 0.0
    rel_rms_error: dict[str, float] = field(default_factory=dict)  # RMS(diff) / RMS(reference), per output

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "max_abs_diff": dict(self.max_abs_diff),
            "top1_agreement": self.top1_agreement,
            "max_abs_diff_limit": self.max_abs_diff_limit,
            "rel_diff_limit": self.rel_diff_limit,
            "min_agreement": self.min_agreement,
            "reference": self.reference,
            "passed": self.passed,
            "failures": list(self.failures),
        }

    def raise_if_failed(self, what: str = "ONNX") -> None:
        if self.failures:
            raise ExportError(f"{what} parity check failed on {self.n} samples: " + "; ".join(self.failures))


def top1(logits: np.ndarray) -> np.ndarray:
    """The predicted class of each row of `logits` (..., C), flattened: the one top-1 rule of parity and gate."""
    return np.argmax(logits.reshape(-1, logits.shape[-1]), axis=-1)


class TorchRunner:
    """A PyTorch model behind the runner interface: feeds {audio, image, mask} -> its three outputs (eval mode,
    no grad)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            o = self.model(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in ("audio", "image", "mask")))
        return {k: v.numpy().astype(np.float32) for k, v in zip(OUTPUT_NAMES, o)}


def torch_outputs(model: Any, feeds: Iterable[Feeds]) -> list[dict[str, np.ndarray]]:
    """The model's three outputs on each feed (eval mode, no grad)."""
    return run_all(TorchRunner(model), feeds)


def onnx_runner(
    path: str | Path, outputs: Sequence[str] = OUTPUT_NAMES, *, simulate_qdq: bool = False, **settings: Any
) -> OnnxRunner:
    """ONNX Runtime on the model at `path` (CPU unless `settings` say otherwise). `simulate_qdq` turns graph
    optimizations off, so each Q/DQ pair runs as float ops: the values the Q/DQ model stands for, without the CPU's
    fused int8 kernels (which saturate on x86 without VNNI); the form for a model whose int8 runs in TensorRT."""
    return OnnxRunner.open(path, outputs, optimization="disable" if simulate_qdq else "all", **settings)


def onnx_outputs(
    path: str | Path, feeds: Iterable[Feeds], *, disable_optimizations: bool = False
) -> list[dict[str, np.ndarray]]:
    """The ONNX model's three outputs on each feed (`onnx_runner`; `disable_optimizations`: Q/DQ simulated)."""
    return run_all(onnx_runner(path, simulate_qdq=disable_optimizations), feeds)


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    other: Sequence[Mapping[str, np.ndarray]],
    *,
    max_abs_diff: float,
    min_agreement: float = 100.0,
    reference_name: str = "pytorch fp32",
    rel_diff: float = 0.0,
    agreement_output: str = "logits",
) -> ParityReport:
    """Max |diff| and relative RMS error of each output of the reference runs, and top-1 agreement of
    `agreement_output`, between two runs over the same feeds.

    An element passes when |diff| <= max_abs_diff + rel_diff * |reference| (numpy's allclose rule): float32 rounding
    grows with the size of the values, so a model whose logits are large (BirdNET's, tens of units) needs the
    relative term. rel_diff 0 is a pure absolute bound."""
    if len(reference) != len(other) or not reference:
        raise ExportError(f"parity: {len(reference)} reference runs vs {len(other)} runs")
    names = list(reference[0])
    lacking = sorted({k for o in other for k in names if k not in o})
    if lacking or agreement_output not in names:
        raise ExportError(f"parity: the runs lack output(s) {lacking or [agreement_output]}")
    diffs: dict[str, float] = {}
    rms: dict[str, float] = {}
    over: dict[str, bool] = {}
    for name in names:
        pairs = [(r[name].astype(np.float64), o[name].astype(np.float64)) for r, o in zip(reference, other)]
        diffs[name] = float(max(np.max(np.abs(a - b)) for a, b in pairs))
        # NaN (an overflow) fails, never passes: `not <=` is True for NaN
        over[name] = any(not np.all(np.abs(a - b) <= max_abs_diff + rel_diff * np.abs(a)) for a, b in pairs)
        ref_all = np.concatenate([a.ravel() for a, _ in pairs])
        diff_all = np.concatenate([(a - b).ravel() for a, b in pairs])
        rms[name] = float(np.sqrt(np.mean(diff_all**2)) / (np.sqrt(np.mean(ref_all**2)) + 1e-12))
    ref_top = np.concatenate([top1(r[agreement_output]) for r in reference])
    oth_top = np.concatenate([top1(o[agreement_output]) for o in other])
    agreement = float(100.0 * np.mean(ref_top == oth_top))
    bound = f"{max_abs_diff:g}" + (f" + {rel_diff:g} x |reference|" if rel_diff else "")
    failures = [f"max |{k} diff| {diffs[k]:.3g} > {bound}" for k in names if over[k]]
    if agreement < min_agreement:
        failures.append(
            f"top-1 agreement {agreement:.2f} % < {min_agreement:g} % "
            f"({int(np.sum(ref_top != oth_top))} of {ref_top.size} differ)"
        )
    rep = ParityReport(
        int(ref_top.size), diffs, agreement, max_abs_diff, min_agreement, reference_name, failures, rel_diff, rms
    )
    log.info(
        "parity vs %s on %d samples: max |%s diff| %.3g, top-1 agreement %.2f %%%s",
        reference_name,
        rep.n,
        agreement_output,
        diffs[agreement_output],
        agreement,
        "" if rep.passed else " -> FAILED: " + "; ".join(failures),
    )
    return rep


def parity_check(
    model: Any,
    onnx_path: str | Path,
    feeds: Sequence[Feeds],
    *,
    max_abs_diff: float = PARITY_MAX_ABS_DIFF,
    min_agreement: float = 100.0,
    rel_diff: float = PARITY_REL_DIFF,
) -> ParityReport:
    """PyTorch FP32 vs the ONNX model in ONNX Runtime (default optimizations, what the runtime runs)."""
    if not feeds:
        raise ExportError("parity check needs at least one real sample")
    return compare_outputs(
        torch_outputs(model, feeds),
        onnx_outputs(onnx_path, feeds),
        max_abs_diff=max_abs_diff,
        min_agreement=min_agreement,
        rel_diff=rel_diff,
    )


__all__ = [
    "OUTPUT_NAMES",
    "PARITY_MAX_ABS_DIFF",
    "PARITY_REL_DIFF",
    "ParityReport",
    "TorchRunner",
    "compare_outputs",
    "onnx_outputs",
    "onnx_runner",
    "parity_check",
    "top1",
    "torch_outputs",
]
