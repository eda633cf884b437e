"""The TensorRT engine builder (TensorRT 10 / 11 Python API), run on the device itself.

    built = build_engine("bundle/model_int8.onnx", load_profile("jetson-orin-nx"), precision="int8")
    built.path, built.key, built.from_cache

- Precision is what the engine computes in, never a label. The parsed network says what the ONNX is (`network_
  precision`: Q/DQ layers -> int8, half tensors -> fp16, else fp32); `build_mode` then builds it STRONGLY_TYPED when
  the request matches (types from the ONNX; `NetworkDefinitionCreationFlag.STRONGLY_TYPED` on TensorRT 10, implicit
  on 11), builds fp16 from an fp32 ONNX on a weakly typed network with `BuilderFlag.FP16` on TensorRT 10 (11 removed
  the flag), and refuses every other pair with one line that says what can be built. An fp32 engine clears
  `BuilderFlag.TF32` (on by default), so that it computes in fp32.
- Workspace: `IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, profile.workspace_mib MiB)`; a DLA core
  (profile permitting) through `default_device_type = DeviceType.DLA` and `DLA_core`, with GPU fallback (logged).
- A timing cache per TensorRT version and GPU beside the engines, serialized back after the build.
- Progress through a `trt.IProgressMonitor` subclass that logs each phase and step.
- The engine goes into `EngineCache` (edgeav.trt_cache, in the core); a complete entry with the same key is reused.

The builder needs only TensorRT and cuda-python (no torch, no onnxruntime). The output check against ONNX Runtime
after a build is the export side's (edgeav.export.tensorrt). Nothing here has run on a GPU in this project: its logic
runs in tests/test_export_tensorrt.py against a fake `tensorrt` module.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.atomic import atomic_write_bytes
from edgeav.errors import DeviceError, ExportError
from edgeav.manifest import sha256_file
from edgeav.trt_cache import EngineCache, EngineKey, GpuInfo, current_gpu, import_tensorrt, make_key

if TYPE_CHECKING:
    from edgeav.devices import DeviceProfile

log = logging.getLogger(__name__)

MIN_TRT_MAJOR = 10  # STRONGLY_TYPED networks and IProgressMonitor need TensorRT 10+


@dataclass
class BuiltEngine:
    path: Path
    key: EngineKey
    from_cache: bool


def _import_trt() -> Any:
    return import_tensorrt("build the engine on the device, where JetPack / NVIDIA's wheels provide it")


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
        raise DeviceError(
            f"TensorRT {version} cannot build for DLA (10.7 was the last 10.x with DLA; it returns in "
            "11.4.1 on Jetson AGX Orin): build for the GPU (no --dla-core)"
        )


def check_trt_version(version: str, profile: DeviceProfile | None = None) -> None:
    """TensorRT must be 10+ (strongly typed networks); a profile naming another major version is refused."""
    major = trt_major(version)
    if major < MIN_TRT_MAJOR:
        raise DeviceError(
            f"TensorRT {version} is too old: engines are built from strongly typed Q/DQ networks, "
            f"which need TensorRT {MIN_TRT_MAJOR}+ (this device's JetPack cannot: run the ONNX model "
            "with the onnxruntime backend)"
        )
    if profile is not None and profile.tensorrt_major is not None and profile.tensorrt_major != major:
        raise DeviceError(
            f"profile {profile.name!r} expects TensorRT {profile.tensorrt_version}, this machine has "
            f"{version}: pick the profile of this device"
        )


def require_tensorrt(profile: DeviceProfile | None = None) -> str:
    """The installed TensorRT version, checked against `profile`; DeviceError where it is absent or unfit."""
    trt = _import_trt()
    version = str(trt.__version__)
    check_trt_version(version, profile)
    return version


def engine_key_for(
    onnx_path: str | Path, precision: str, trt_version: str, gpu: GpuInfo, dla_core: int | None = None
) -> EngineKey:
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
            log.info(
                "tensorrt: %s%s started (%d steps)", f"{parent_phase} / " if parent_phase else "", phase_name, num_steps
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 0)
            log.debug("tensorrt: %s step %d/%d", phase_name, step + 1, total)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            log.info("tensorrt: %s finished", phase_name)

    return LogProgress()


def check_static_inputs(shapes: dict[str, tuple[int, ...]], onnx_name: str) -> None:
    """ExportError when a network input parsed from `onnx_name` has a dynamic axis (-1): engines here are built
    without optimization profiles, from the static shapes of the export (image (1, 3, H, W) or (1, T, 3, H, W))."""
    dynamic = {n: tuple(int(d) for d in dims) for n, dims in shapes.items() if any(int(d) < 0 for d in dims)}
    if dynamic:
        name = sorted(dynamic)[0]
        raise ExportError(
            f"{onnx_name}: input {name!r} has a dynamic shape {dynamic[name]}; TensorRT engines are "
            "built from a static-shape export (edgeav export without --dynamic-batch)"
        )


def network_precision(trt: Any, network: Any) -> str:
    """What a parsed network computes in: "int8" when it has Q/DQ layers, "fp16" when a layer outputs half tensors
    (an `edgeav export --fp16` model), else "fp32"."""
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in qdq:
            return "int8"
        half = half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return "fp16" if half else "fp32"


def build_mode(requested: str, onnx_precision: str, version: str, onnx_name: str = "the ONNX model") -> str:
    """How to build `requested` from an ONNX model that computes in `onnx_precision`: "strongly_typed" (the types
    of the ONNX) or "fp16_flag" (a weakly typed network with BuilderFlag.FP16, TensorRT 10 only). ExportError with
    what can be built otherwise: a precision is never just a label on another engine."""
    if requested == onnx_precision:
        return "strongly_typed"
    weak_fp16 = trt_major(version) < 11
    if requested == "fp16" and onnx_precision == "fp32" and weak_fp16:
        return "fp16_flag"
    can = [onnx_precision] + (
        ["fp16 (TensorRT 10's FP16 builder flag)"] if onnx_precision == "fp32" and weak_fp16 else []
    )
    how = {
        "int8": "int8 needs the Q/DQ model_int8.onnx of `edgeav export --int8`",
        "fp16": "fp16 needs model_fp16.onnx of `edgeav export --fp16`"
        + ("" if weak_fp16 else f" (TensorRT {version} has no FP16 flag)"),
        "fp32": "fp32 needs model_fp32.onnx",
    }[requested]
    raise ExportError(
        f"{onnx_name} computes in {onnx_precision}: --precision {requested} cannot be built from it; "
        f"from this file: --precision {' or '.join(can)}; {how}"
    )


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool, dla: bool) -> Any:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # TensorRT 11: always, flag deprecated
    network = builder.create_network(1 << int(flag) if strongly_typed and flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if dla and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ADJUST_FOR_DLA"):
        parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(errors[:3]))
    return network, parser  # the parser owns the weights the network refers to: keep it until the build is done


def build_engine(
    onnx_path: str | Path,
    profile: DeviceProfile,
    precision: str,
    *,
    dla_core: int | None = None,
    cache: EngineCache | None = None,
    device_id: int = 0,
    force: bool = False,
) -> BuiltEngine:
    """Build (or reuse from the cache) the `precision` engine of `onnx_path` for this GPU; see the module
    docstring. ExportError when the ONNX model cannot give that precision."""
    from edgeav.devices import check_dla, check_precision  # a leaf of the core: no stage, no torch

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
    strong_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strong_flag is None and trt_major(version) < 11:
        raise DeviceError(f"TensorRT {version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    gpu = current_gpu(device_id)
    key = engine_key_for(onnx_path, precision, version, gpu, dla_core)
    cache = cache or EngineCache()
    hit = None if force else cache.lookup(key)
    if hit is not None:
        log.info("tensorrt: engine for %s found in the cache: %s", onnx_path.name, hit)
        return BuiltEngine(hit, key, True)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, logger, onnx_path, True, dla_core is not None)
    mode = build_mode(precision, network_precision(trt, network), version, onnx_path.name)
    if mode == "fp16_flag":  # TensorRT 10: a weakly typed network may pick fp16 kernels; inputs/outputs stay fp32
        network, parser = _parse(trt, builder, logger, onnx_path, False, dla_core is not None)
    check_static_inputs(
        {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)},
        onnx_path.name,
    )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(profile.workspace_mib) << 20)
    flags: list[str] = []
    if mode == "fp16_flag":
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        config.clear_flag(tf32)  # on by default: an fp32 engine would otherwise run its matmuls/convs in TF32
        flags.append("-TF32")
    monitor = _progress_monitor(trt)  # must outlive the build
    config.progress_monitor = monitor
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        flags.append("GPU_FALLBACK")
        log.warning("tensorrt: DLA core %d with GPU fallback: layers the DLA cannot run go to the GPU", dla_core)
    timing_path = (
        cache.root / f"timing-trt{version}-{re.sub(r'[^A-Za-z0-9]+', '_', gpu.name)}-sm{gpu.compute_capability}.cache"
    )
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing = config.create_timing_cache(blob)
    config.set_timing_cache(timing, ignore_mismatch=False)
    log.info(
        "tensorrt %s: building %s engine from %s (%s%s) for %s (sm %s), workspace %d MiB%s",
        version,
        precision,
        onnx_path.name,
        mode.replace("_", " "),
        f", flags {flags}" if flags else "",
        gpu.name,
        gpu.compute_capability,
        profile.workspace_mib,
        f", DLA core {dla_core}" if dla_core is not None else "",
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above)")
    atomic_write_bytes(timing_path, bytes(memoryview(timing.serialize())))
    path = cache.store(
        key,
        bytes(memoryview(serialized)),
        {
            "onnx": str(onnx_path),
            "profile": profile.name,
            "workspace_mib": profile.workspace_mib,
            "strongly_typed": mode == "strongly_typed",
            "builder_flags": flags,
            "timing_cache": timing_path.name,
        },
    )
    del monitor, parser
    return BuiltEngine(path, key, False)


__all__ = [
    "MIN_TRT_MAJOR",
    "BuiltEngine",
    "build_engine",
    "build_mode",
    "check_dla_support",
    "check_static_inputs",
    "check_trt_version",
    "engine_key_for",
    "network_precision",
    "require_tensorrt",
    "trt_major",
]
