"""TensorRT engines from the exported ONNX, built on the device itself with the TensorRT Python API (10 / 11).

    built = build_engine("bundle/model_int8.onnx", load_profile("jetson-orin-nx"), precision="int8")
    built.path, built.key, built.from_cache

- The network is created STRONGLY_TYPED (`NetworkDefinitionCreationFlag.STRONGLY_TYPED` on TensorRT 10; on 11 every
  network is strongly typed and the flag is deprecated): the types come from the ONNX (Q/DQ scales for INT8, half
  weights for FP16); no precision builder flags are set (11 removed them), and no implicit calibrator is used.
- Workspace: `IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, profile.workspace_mib MiB)`; a DLA
  core (profile permitting) through `default_device_type = DeviceType.DLA` and `DLA_core`, with GPU fallback for
  the layers DLA cannot run (logged, loudly).
- A timing cache per TensorRT version and GPU beside the engines (`IBuilderConfig.create_timing_cache` /
  `set_timing_cache`, serialized back after the build).
- Progress through a `trt.IProgressMonitor` subclass that logs each phase and step.
- The engine is written atomically into `EngineCache` (edgeav.runtime.trt_runner) under a key of the ONNX sha256,
  the TensorRT version, the GPU name and compute capability, and the precision. A cached engine with the same key
  is reused.

The builder itself lives in `edgeav.runtime.trt_runner` (it needs only TensorRT and cuda-python, no torch), so the
daemon can build the engine at its first start without the export stage; this module is the export side's entry
(`edgeav export --engine`, and the command below). TensorRT is imported inside the functions: both modules import
where TensorRT is absent, and say so when asked to build. Nothing here has been run where TensorRT is not installed; `tests/test_export_tensorrt.py` checks the key and
refusal logic with explicit versions/GPUs, and its real-build tests are marked `gpu`.

Rebuild command (what a refused engine's message names):

    python -m edgeav.export.tensorrt BUNDLE/model_int8.onnx --precision int8 [--device PROFILE] [--dla-core N]
"""

from __future__ import annotations

import argparse
import logging
import sys

from edgeav.errors import EdgeAVError
from edgeav.runtime.trt_runner import (
    MIN_TRT_MAJOR,
    BuiltEngine,
    EngineCache,
    build_engine,
    check_dla_support,
    check_trt_version,
    engine_key_for,
    require_tensorrt,
    trt_major,
)

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """python -m edgeav.export.tensorrt ONNX --precision P [--device PROFILE] [--dla-core N] [--force]"""
    from edgeav.devices import load_profile
    from edgeav.log import setup_logging

    p = argparse.ArgumentParser(prog="python -m edgeav.export.tensorrt",
                                description="Build a TensorRT engine from an exported ONNX model, on this device.")
    p.add_argument("onnx")
    p.add_argument("--precision", choices=["int8", "fp16", "fp32"], required=True)
    p.add_argument("--device", default="x86-cuda", help="device profile (see `edgeav devices list`)")
    p.add_argument("--dla-core", type=int, default=None)
    p.add_argument("--cache", help="engine cache folder (default: $EDGEAV_ENGINE_CACHE or ~/.cache/edgeav/engines)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    args = p.parse_args(argv)
    setup_logging()
    try:
        built = build_engine(args.onnx, load_profile(args.device), args.precision, dla_core=args.dla_core,
                             cache=EngineCache(args.cache) if args.cache else None, force=args.force)
    except EdgeAVError as e:
        sys.stderr.write(f"edgeav tensorrt: error: {e}\n")
        return e.exit_code
    sys.stdout.write(f"{built.path}{' (from the cache)' if built.from_cache else ''}\n")
    return 0


__all__ = ["BuiltEngine", "MIN_TRT_MAJOR", "build_engine", "check_dla_support", "check_trt_version", "engine_key_for",
           "main", "require_tensorrt", "trt_major"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
