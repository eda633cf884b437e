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

TensorRT is imported inside the functions: this module imports where TensorRT is absent, and says so when asked to
build. Nothing here has been run where TensorRT is not installed; `tests/test_export_tensorrt.py` checks the key and
refusal logic with explicit versions/GPUs, and its real-build tests are marked `gpu`.

Rebuild command (what a refused engine's message names):

    python -m edgeav.export.tensorrt BUNDLE/model_int8.onnx --precision int8 [--device PROFILE] [--dla-core N]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeav.errors import DeviceError, EdgeAVError, ExportError
from edgeav.manifest import sha256_file
from edgeav.runtime.trt_runner import EngineCache, EngineKey, GpuInfo, current_gpu, make_key

log = logging.getLogger(__name__)

MIN_TRT_MAJOR = 10  # STRONGLY_TYPED networks and IProgressMonitor need TensorRT 10+


@dataclass
class BuiltEngine:
    path: Path
    key: EngineKey
    from_cache: bool


def _import_trt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as e:
        raise DeviceError(f"TensorRT is not installed here ({e}): build the engine on the device, where JetPack / "
                          "NVIDIA's wheels provide it") from None
    return trt


def trt_major(version: str) -> int:
    m = re.match(r"(\d+)", str(version))
    if not m:
        raise DeviceError(f"cannot read a TensorRT version from {version!r}")
    return int(m.group(1))


def check_dla_support(version: str) -> None:
    """DLA left TensorRT after 10.7 and came back for Jetson AGX Orin in 11.4.1 (JetPack 7.2.2+)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise DeviceError(f"cannot read a TensorRT version from {version!r}")
    v = tuple(int(x or 0) for x in m.groups())
    if (10, 8, 0) <= v < (11, 4, 1):
        raise DeviceError(f"TensorRT {version} cannot build for DLA (10.7 was the last 10.x with DLA; it returns in "
                          "11.4.1 on Jetson AGX Orin): build for the GPU (no --dla-core)")


def check_trt_version(version: str, profile: Any | None = None) -> None:
    """TensorRT must be 10+ (strongly typed networks); a profile naming another major version is refused."""
    major = trt_major(version)
    if major < MIN_TRT_MAJOR:
        raise DeviceError(f"TensorRT {version} is too old: engines are built from strongly typed Q/DQ networks, "
                          f"which need TensorRT {MIN_TRT_MAJOR}+ (this device's JetPack cannot: run the ONNX model "
                          "with the onnxruntime backend)")
    if profile is not None and profile.tensorrt_major is not None and profile.tensorrt_major != major:
        raise DeviceError(f"profile {profile.name!r} expects TensorRT {profile.tensorrt_version}, this machine has "
                          f"{version}: pick the profile of this device")


def require_tensorrt(profile: Any | None = None) -> str:
    """The installed TensorRT version, checked against `profile`; DeviceError where it is absent or unfit."""
    trt = _import_trt()
    version = str(trt.__version__)
    check_trt_version(version, profile)
    return version


def engine_key_for(onnx_path: str | Path, precision: str, trt_version: str, gpu: GpuInfo,
                   dla_core: int | None = None) -> EngineKey:
    return make_key(sha256_file(onnx_path), precision, trt_version, gpu, dla_core)


def _progress_monitor(trt: Any) -> Any:
    """An IProgressMonitor that logs phases and steps (thread-safe: TensorRT may call it from several threads)."""

    class LogProgress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = num_steps
            log.info("tensorrt: %s%s started (%d steps)", f"{parent_phase} / " if parent_phase else "", phase_name,
                     num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 0)
            log.debug("tensorrt: %s step %d/%d", phase_name, step + 1, total)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            log.info("tensorrt: %s finished", phase_name)

    return LogProgress()


def build_engine(onnx_path: str | Path, profile: Any, precision: str, *, dla_core: int | None = None,
                 cache: EngineCache | None = None, device_id: int = 0, force: bool = False) -> BuiltEngine:
    """Build (or reuse from the cache) the engine of `onnx_path` for this GPU; see the module docstring."""
    from edgeav.devices import check_dla, check_precision

    trt = _import_trt()
    version = str(trt.__version__)
    check_trt_version(version, profile)
    if precision != "fp32":
        check_precision(profile, precision)
    if dla_core is not None:
        check_dla(profile, dla_core)
        check_dla_support(version)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: ONNX model not found")
    gpu = current_gpu(device_id)
    key = engine_key_for(onnx_path, precision, version, gpu, dla_core)
    cache = cache or EngineCache()
    hit = None if force else cache.lookup(key)
    if hit is not None:
        log.info("tensorrt: engine for %s found in the cache: %s", onnx_path.name, hit)
        return BuiltEngine(hit, key, True)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10: strong typing is asked for; TensorRT 11: every network is strongly typed and the flag is deprecated
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is None and trt_major(version) < 11:
        raise DeviceError(f"TensorRT {version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if dla_core is not None and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ADJUST_FOR_DLA"):
        parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(errors[:3]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(profile.workspace_mib) << 20)
    monitor = _progress_monitor(trt)  # must outlive the build
    config.progress_monitor = monitor
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        log.warning("tensorrt: DLA core %d with GPU fallback: layers the DLA cannot run go to the GPU", dla_core)
    timing_path = cache.root / f"timing-trt{version}-{re.sub(r'[^A-Za-z0-9]+', '_', gpu.name)}-sm{gpu.compute_capability}.cache"
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing = config.create_timing_cache(blob)
    config.set_timing_cache(timing, ignore_mismatch=False)
    log.info("tensorrt %s: building %s engine from %s for %s (sm %s), workspace %d MiB%s", version, precision,
             onnx_path.name, gpu.name, gpu.compute_capability, profile.workspace_mib,
             f", DLA core {dla_core}" if dla_core is not None else "")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above)")
    from edgeav.runtime.trt_runner import _atomic_write

    _atomic_write(timing_path, bytes(memoryview(timing.serialize())))
    path = cache.store(key, bytes(memoryview(serialized)),
                       {"onnx": str(onnx_path), "profile": profile.name, "workspace_mib": profile.workspace_mib,
                        "strongly_typed": True, "timing_cache": timing_path.name})
    del monitor
    return BuiltEngine(path, key, False)


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


__all__ = ["BuiltEngine", "MIN_TRT_MAJOR", "build_engine", "check_dla_support", "check_trt_version", "engine_key_for", "require_tensorrt",
           "trt_major"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
