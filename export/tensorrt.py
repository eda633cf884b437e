"""TensorRT engines from the exported ONNX, built on the device itself, then checked against ONNX Runtime.

    built, check = build_checked_engine("bundle/model_int8.onnx", load_profile("jetson-orin-nx"), "int8",
                                        feeds=parity_feeds, cfg=ExportConfig())

The build is edgeav.export.trt_builder's (precision is what the engine computes in: a strongly typed network from
the ONNX, or TensorRT 10's FP16 flag for fp16 from an fp32 model; anything else is refused with what can be built).
After every build - and on a cache hit too - `check_engine_outputs` runs the engine and ONNX Runtime (the same ONNX
file, Q/DQ simulated in float for int8: the values the Q/DQ model stands for) on the same windows and applies the
export's gates:

- fp32: the FP32 parity gate (`parity_max_abs_diff` + `parity_rel_diff` x |reference|, 100 % top-1 agreement);
- fp16: the FP16 gate (`fp16_max_abs_diff`, `fp16_min_agreement_pct`);
- int8: top-1 agreement >= `fp16_min_agreement_pct` with the ONNX Runtime Q/DQ model (the diffs are reported), and,
  where test windows and the FP32 figures are given (`edgeav export --engine`), the INT8 accuracy gate
  (`max_drop_points`, `max_class_drop_points`) on the engine's predictions.

An engine that fails is evicted from the cache and refused (ExportError): it is never reused by a later build.

`edgeav export --engine` passes its parity windows (the validation split) and test windows; this module's command
takes them from an .npz (`--parity-feeds`: arrays `audio`, `image`, `mask`, one row per window) or skips the check
only when told (`--no-parity`, logged as a warning). Nothing here has run on a GPU in this project:
tests/test_export_tensorrt.py runs it against a fake `tensorrt` module and a fake engine runner.

Rebuild command (what a refused engine's message names):

    python -m edgeav.export.tensorrt BUNDLE/model_int8.onnx --precision int8 [--device PROFILE] [--dla-core N]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeav.errors import EdgeAVError, ExportError
from edgeav.export.trt_builder import (
    MIN_TRT_MAJOR,
    BuiltEngine,
    build_engine,
    check_dla_support,
    check_trt_version,
    engine_key_for,
    require_tensorrt,
    trt_major,
)
from edgeav.providers import import_provider
from edgeav.trt_cache import EngineCache

if TYPE_CHECKING:
    from edgeav.contract import InputContract
    from edgeav.devices import DeviceProfile
    from edgeav.export.gate import ClassificationMetrics
    from edgeav.schema.export import ExportConfig

log = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]
EngineRunner = Callable[[Path, "InputContract", Sequence[Feeds]], list[dict[str, np.ndarray]]]


@dataclass
class EngineCheck:
    """The engine vs ONNX Runtime on the same windows: the output parity and, for int8 with test windows, the
    accuracy gate. `failures` empty = accepted."""

    precision: str
    parity: dict[str, Any]
    gate: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "parity": self.parity,
            "gate": self.gate,
            "passed": self.passed,
            "failures": list(self.failures),
            "reference": "onnxruntime (CPU) on the same ONNX file",
        }


def engine_gate(precision: str, cfg: ExportConfig) -> dict[str, float]:
    """The export's gate for an engine of `precision`: compare_outputs' keyword arguments."""
    if precision == "fp32":
        return {"max_abs_diff": cfg.parity_max_abs_diff, "min_agreement": 100.0, "rel_diff": cfg.parity_rel_diff}
    if precision == "fp16":
        return {"max_abs_diff": cfg.fp16_max_abs_diff, "min_agreement": cfg.fp16_min_agreement_pct, "rel_diff": 0.0}
    # int8: TensorRT's integer kernels round where ONNX Runtime's float simulation of Q/DQ does not: the diffs are
    # reported, the decision is the top-1 agreement (and the accuracy gate where test windows are given)
    return {"max_abs_diff": math.inf, "min_agreement": cfg.fp16_min_agreement_pct, "rel_diff": 0.0}


def run_engine_outputs(
    engine_path: Path, contract: InputContract, feeds: Sequence[Feeds]
) -> list[dict[str, np.ndarray]]:
    """The engine's three outputs on each feed, through the TensorRT runner (the runtime's, reached through the core's
    `edgeav.providers`: export and runtime never import each other)."""
    with import_provider("backend.tensorrt")(engine_path, contract) as backend:
        return [backend.infer(f["audio"], f["image"], f["mask"]) for f in feeds]


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


def check_engine_outputs(
    engine_path: Path,
    onnx_path: Path,
    precision: str,
    feeds: Sequence[Feeds],
    cfg: ExportConfig,
    *,
    contract: InputContract | None = None,
    test_samples: Iterable[tuple[Feeds, Any]] | None = None,
    labels: Sequence[str] | None = None,
    reference_metrics: ClassificationMetrics | None = None,
    run_engine: EngineRunner | None = None,
) -> EngineCheck:
    """Run the engine and ONNX Runtime on `feeds` and apply `engine_gate`; for int8 with `test_samples`, `labels`
    and the FP32 `reference_metrics`, also the INT8 accuracy gate on the engine's predictions."""
    from edgeav.export.gate import accuracy_gate, metrics_from_predictions
    from edgeav.export.onnx_export import compare_outputs, manifest_from_onnx, onnx_outputs

    if not feeds:
        raise ExportError("the engine check needs at least one window (parity feeds)")
    run = run_engine or run_engine_outputs
    if contract is None:
        from edgeav.contract import InputContract

        contract = InputContract.model_validate(manifest_from_onnx(onnx_path)["contract"])
    ref = onnx_outputs(onnx_path, feeds, disable_optimizations=precision == "int8")  # int8: Q/DQ in float
    rep = compare_outputs(
        ref,
        run(engine_path, contract, feeds),
        reference_name="onnxruntime " + onnx_path.name,
        **engine_gate(precision, cfg),
    )
    check = EngineCheck(precision, _finite(rep.to_dict()), failures=list(rep.failures))
    if precision == "int8" and test_samples is not None:
        if labels is None or reference_metrics is None:
            raise ExportError("the engine's accuracy gate needs the labels and the FP32 figures")
        pairs = list(test_samples)
        outs = run(engine_path, contract, [f for f, _ in pairs])
        y_pred = np.concatenate([np.argmax(o["logits"].reshape(-1, o["logits"].shape[-1]), axis=-1) for o in outs])
        y_true = np.concatenate([np.asarray(y, dtype=np.int64).reshape(-1) for _, y in pairs])
        g = accuracy_gate(
            reference_metrics,
            metrics_from_predictions(y_true, y_pred, labels),
            cfg.max_drop_points,
            cfg.max_class_drop_points,
        )
        check.gate = g.to_dict()
        check.failures += list(g.failures)
    return check


def build_checked_engine(
    onnx_path: str | Path,
    profile: DeviceProfile,
    precision: str,
    *,
    feeds: Sequence[Feeds] | None,
    cfg: ExportConfig | None = None,
    dla_core: int | None = None,
    cache: EngineCache | None = None,
    force: bool = False,
    **check: Any,
) -> tuple[BuiltEngine, EngineCheck | None]:
    """`build_engine`, then `check_engine_outputs` on `feeds` (None: no check, said in the log). A refused engine
    is evicted from the cache and raises ExportError with the figures."""
    from edgeav.schema.export import ExportConfig

    cfg = cfg or ExportConfig()
    cache = cache or EngineCache()
    built = build_engine(onnx_path, profile, precision, dla_core=dla_core, cache=cache, force=force)
    if feeds is None:
        log.warning("tensorrt: %s NOT compared with ONNX Runtime (no parity windows given)", built.path.name)
        return built, None
    result = check_engine_outputs(built.path, Path(onnx_path), precision, feeds, cfg, **check)
    if not result.passed:
        cache.evict(built.key)
        raise ExportError(
            f"TensorRT {precision} engine of {Path(onnx_path).name} refused: its outputs differ from "
            f"ONNX Runtime's on {len(feeds)} windows: "
            + "; ".join(result.failures)
            + " (the engine was removed from the cache)"
        )
    log.info(
        "tensorrt: %s matches ONNX Runtime on %d windows (max |logits diff| %.3g, top-1 agreement %.2f %%)",
        built.path.name,
        len(feeds),
        result.parity["max_abs_diff"]["logits"],
        result.parity["top1_agreement"],
    )
    return built, result


def load_feeds(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Windows from an .npz holding `audio`, `image` and `mask`, one row per window: batch-1 feeds."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("audio", "image", "mask")}
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{path}: not an .npz with arrays audio, image, mask ({e})") from None
    n = {len(a) for a in arrays.values()}
    if len(n) != 1 or 0 in n:
        raise ExportError(
            f"{path}: audio, image and mask need the same number of rows (> 0), got "
            f"{ {k: len(a) for k, a in arrays.items()} }"
        )
    return [{k: a[i : i + 1] for k, a in arrays.items()} for i in range(n.pop())]


def main(argv: list[str] | None = None) -> int:
    """python -m edgeav.export.tensorrt ONNX --precision P [--device PROFILE] [--dla-core N] [--force]"""
    from edgeav.devices import load_profile
    from edgeav.log import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m edgeav.export.tensorrt",
        description="Build a TensorRT engine from an exported ONNX model, on this device.",
    )
    p.add_argument("onnx")
    p.add_argument("--precision", choices=["int8", "fp16", "fp32"], required=True)
    p.add_argument("--device", default="x86-cuda", help="device profile (see `edgeav devices list`)")
    p.add_argument("--dla-core", type=int, default=None)
    p.add_argument("--cache", help="engine cache folder (default: $EDGEAV_ENGINE_CACHE or ~/.cache/edgeav/engines)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    p.add_argument(
        "--parity-feeds",
        help=".npz of windows (audio, image, mask; one row each) the engine is compared with ONNX Runtime on",
    )
    p.add_argument("--no-parity", action="store_true", help="build without comparing the engine with ONNX Runtime")
    args = p.parse_args(argv)
    setup_logging()
    try:
        if (args.parity_feeds is None) == (not args.no_parity):
            raise ExportError(
                "give --parity-feeds NPZ (windows the engine is compared with ONNX Runtime on) or "
                "--no-parity, not both or neither"
            )
        feeds = load_feeds(args.parity_feeds) if args.parity_feeds else None
        built, _ = build_checked_engine(
            args.onnx,
            load_profile(args.device),
            args.precision,
            feeds=feeds,
            dla_core=args.dla_core,
            cache=EngineCache(args.cache) if args.cache else None,
            force=args.force,
        )
    except EdgeAVError as e:
        sys.stderr.write(f"edgeav tensorrt: error: {e}\n")
        return e.exit_code
    sys.stdout.write(f"{built.path}{' (from the cache)' if built.from_cache else ''}\n")
    return 0


__all__ = [
    "BuiltEngine",
    "EngineCheck",
    "MIN_TRT_MAJOR",
    "build_checked_engine",
    "build_engine",
    "check_engine_outputs",
    "engine_gate",
    "load_feeds",
    "run_engine_outputs",
    "check_dla_support",
    "check_trt_version",
    "engine_key_for",
    "main",
    "require_tensorrt",
    "trt_major",
]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
