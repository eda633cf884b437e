"""TensorRT on the field unit: engine cache keys, the refusal of foreign engines, the builder, and the runner.

Engines are not portable: one built by TensorRT 10.3 for an Orin's GPU (compute capability 8.7) does not load under
another TensorRT version or on another GPU. So an engine is stored under a key that holds everything it depends on:

    EngineKey(onnx_sha256, trt_version, gpu_name, compute_capability, precision, dla_core)

`EngineCache` keeps `<precision>-<digest>.engine` with a `<precision>-<digest>_key.json` sidecar (the key and how it was built), written
atomically (temporary file + os.replace). `check_engine` refuses an engine whose sidecar names another TensorRT
version, GPU or compute capability than this machine's, with the command that rebuilds it.

`build_engine` builds an engine from the Q/DQ ONNX on this GPU (strongly typed network, workspace and DLA core from
the device profile, a timing cache, progress through `trt.IProgressMonitor`) into the cache; `edgeav export
--engine` and the daemon's first start both call it (see edgeav.export.tensorrt for the details and the command).

`TrtBackend` runs an engine behind the runtime's `Backend` interface (edgeav.runtime.backends): explicit device
buffers allocated once with cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`), host -> device copies,
`execute_async_v3` on a CUDA stream, device -> host copies. TensorRT and cuda-python are imported when a backend is
created, never at module import: this module imports where neither is installed (the version/GPU logic is tested
there with explicit values).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.atomic import atomic_write_bytes
from edgeav.contract import InputContract
from edgeav.errors import BundleError, DeviceError, ExportError, ModelError
from edgeav.manifest import sha256_file
from edgeav.runtime.backends import OUTPUT_NAMES, Backend

log = logging.getLogger(__name__)

ENGINE_CACHE_ENV = "EDGEAV_ENGINE_CACHE"
ENGINE_SUFFIX = ".engine"
PRECISIONS = ("fp32", "fp16", "int8")


# ------------------------------------------------------------------------------------------ keys and cache


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: its name as CUDA reports it and its compute capability ("8.7")."""

    name: str
    compute_capability: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise DeviceError(f"bad compute capability {self.compute_capability!r} (want major.minor)")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two builds with the same key are interchangeable; any difference is not."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise DeviceError(f"unknown engine precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise DeviceError(f"engine key needs the ONNX file's sha256 (64 hex digits), got {self.onnx_sha256!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:24]

    @property
    def file_name(self) -> str:
        where = f"-dla{self.dla_core}" if self.dla_core is not None else ""
        return f"{self.precision}{where}-{self.digest}{ENGINE_SUFFIX}"


def make_key(onnx_sha256: str, precision: str, trt_version: str, gpu: GpuInfo, dla_core: int | None = None) -> EngineKey:
    return EngineKey(onnx_sha256, str(trt_version), gpu.name, gpu.compute_capability, precision, dla_core)


def default_cache_dir() -> Path:
    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "edgeav" / "engines"


def rebuild_command(onnx_path: str | Path | None, precision: str, profile: str | None = None,
                    dla_core: int | None = None) -> str:
    """The command that builds the engine for this machine (run it on the device itself)."""
    src = str(onnx_path) if onnx_path else "BUNDLE/model_<precision>.onnx"
    cmd = f"python -m edgeav.export.tensorrt {src} --precision {precision}"
    if profile:
        cmd += f" --device {profile}"
    if dla_core is not None:
        cmd += f" --dla-core {dla_core}"
    return cmd


class EngineCache:
    """Engines on disk, one file per key, each with a JSON sidecar (`<engine stem>_key.json`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.root / key.file_name

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for `key`, or None. A file whose sidecar does not hold exactly `key` is not used."""
        p = self.path_for(key)
        if not p.is_file():
            return None
        side = read_sidecar(p)
        if side.get("key") != key.to_dict():
            log.warning("engine cache: %s does not carry the key it is filed under; ignoring it", p)
            return None
        return p

    def store(self, key: EngineKey, engine_bytes: bytes, build_info: dict[str, Any] | None = None) -> Path:
        """Write the engine and its sidecar atomically (the sidecar last: an engine without one is never used)."""
        if not engine_bytes:
            raise DeviceError("refusing to cache an empty engine")
        p = self.path_for(key)
        atomic_write_bytes(p, engine_bytes)
        side = {"key": key.to_dict(), "bytes": len(engine_bytes),
                "sha256": hashlib.sha256(engine_bytes).hexdigest(), "built_unix_ns": time.time_ns(),
                "build": dict(build_info or {})}
        atomic_write_bytes(sidecar_path(p), json.dumps(side, indent=2, sort_keys=True).encode())
        log.info("engine cached: %s (%d bytes)", p, len(engine_bytes))
        return p


def sidecar_path(engine_path: str | Path) -> Path:
    """`x.engine` -> `x_key.json` (in a bundle: role `engine_int8` -> `engine_int8.engine`, `engine_int8_key.json`)."""
    p = Path(engine_path)
    return p.with_name(p.stem + "_key.json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise BundleError(f"{engine_path}: no {side.name} beside it: cannot tell which TensorRT and GPU it was built "
                          "for; rebuild it on this device")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BundleError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        raise BundleError(f"{side}: no engine key")
    return data


def check_engine(engine_path: str | Path, trt_version: str, gpu: GpuInfo, *, onnx_path: str | Path | None = None,
                 profile: str | None = None) -> EngineKey:
    """Refuse (DeviceError) an engine built for another TensorRT version, GPU or compute capability, naming the
    command that rebuilds it; return its key when it fits this machine."""
    data = read_sidecar(engine_path)
    try:
        key = EngineKey(**data["key"])
    except TypeError as e:
        raise BundleError(f"{sidecar_path(engine_path)}: bad engine key ({e})") from None
    if hashlib.sha256(Path(engine_path).read_bytes()).hexdigest() != data.get("sha256"):
        raise BundleError(f"{engine_path}: sha256 does not match its sidecar (file changed or corrupt)")
    problems = []
    if key.trt_version != str(trt_version):
        problems.append(f"TensorRT {key.trt_version}, this machine has {trt_version}")
    if key.gpu_name != gpu.name:
        problems.append(f"GPU {key.gpu_name!r}, this machine has {gpu.name!r}")
    if key.compute_capability != gpu.compute_capability:
        problems.append(f"compute capability {key.compute_capability}, this GPU is {gpu.compute_capability}")
    if problems:
        raise DeviceError(f"{Path(engine_path).name} was built for " + "; ".join(problems)
                          + ": engines are not portable; rebuild it here: "
                          + rebuild_command(onnx_path, key.precision, profile, key.dla_core))
    return key


# ------------------------------------------------------------------------------------ cuda-python helpers


def _cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6) or `cuda.cudart` (older)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise DeviceError(f"cuda-python is not installed here ({e}); pip install 'edgeav[tensorrt]'") from None
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return (err, *values); raise DeviceError unless err is cudaSuccess."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    code = int(getattr(err, "value", err))
    if code != 0:
        raise DeviceError(f"CUDA {what} failed: {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def current_gpu(device_id: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `device_id` (cuda-python)."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(int(device_id)), "cudaGetDeviceProperties")
    name = props.name.decode("utf-8", "replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip(), f"{props.major}.{props.minor}")


def trt_version() -> str:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as e:
        raise DeviceError(f"TensorRT is not installed here ({e}); it ships with JetPack / NVIDIA's wheels") from None
    return str(trt.__version__)


# ------------------------------------------------------------------------------------------------ runner


# ------------------------------------------------------------------------------------------------ shapes


def check_engine_shapes(shapes: dict[str, tuple[int, ...]], contract: InputContract, where: str) -> int:
    """The batch of an engine whose I/O tensors have `shapes` (name -> dims, as `ICudaEngine.get_tensor_shape` gives
    them), after checking them against the contract: every input and output present and static (no -1), audio
    (B, S), image (B, 3, H, W) - or (B, T, 3, H, W) for a clip model, T = contract.image.n_frames -, mask (B, 2),
    each output (B, C), one B for all. ModelError naming the first tensor that does not fit."""
    missing = [n for n in (*contract.input_names, *OUTPUT_NAMES) if n not in shapes]
    if missing:
        raise ModelError(f"{where}: engine lacks tensor(s) {missing}; it has {sorted(shapes)}")
    dynamic = sorted(n for n, dims in shapes.items() if any(int(d) < 0 for d in dims))
    if dynamic:
        raise ModelError(f"{where}: tensor(s) {dynamic} have a dynamic axis ({dynamic[0]!r} is "
                         f"{tuple(shapes[dynamic[0]])}); build the engine from a static-shape ONNX (edgeav export "
                         "without --dynamic-batch)")
    first = contract.input_names[0]
    if not shapes[first]:
        raise ModelError(f"{where}: input {first!r} has no batch axis")
    batch = int(shapes[first][0])
    want = contract.shapes(batch)
    for name, kind in zip(contract.input_names, ("audio", "image", "mask")):
        got = tuple(int(d) for d in shapes[name])
        if got != want[kind]:
            raise ModelError(f"{where}: input {name!r} is {got}, the contract says {want[kind]}"
                             + (f" ({contract.image.n_frames} frames of {contract.image.height_px}x"
                                f"{contract.image.width_px})" if kind == "image" else ""))
    for name in OUTPUT_NAMES:
        got = tuple(int(d) for d in shapes[name])
        if len(got) != 2 or got[0] != batch:
            raise ModelError(f"{where}: output {name!r} is {got}, want ({batch}, classes)")
    return batch


def check_static_inputs(shapes: dict[str, tuple[int, ...]], onnx_name: str) -> None:
    """ExportError when a network input parsed from `onnx_name` has a dynamic axis (-1): engines here are built
    without optimization profiles, from the static shapes of the export (image (1, 3, H, W) or (1, T, 3, H, W))."""
    dynamic = {n: tuple(int(d) for d in dims) for n, dims in shapes.items() if any(int(d) < 0 for d in dims)}
    if dynamic:
        name = sorted(dynamic)[0]
        raise ExportError(f"{onnx_name}: input {name!r} has a dynamic shape {dynamic[name]}; TensorRT engines are "
                          "built from a static-shape export (edgeav export without --dynamic-batch)")


class TrtBackend(Backend):
    """A TensorRT engine with explicit device buffers. Inputs and outputs are static: batch = the engine's, and
    every shape is checked against the contract when the engine is loaded (`check_engine_shapes`)."""

    name = "tensorrt"

    def __init__(self, model_path: str | Path, contract: InputContract, device_id: int = 0,
                 onnx_path: str | Path | None = None, profile: str | None = None) -> None:
        try:
            import tensorrt as trt  # type: ignore[import-not-found]
        except ImportError as e:
            raise DeviceError(f"TensorRT is not installed here ({e}); use the onnxruntime backend") from None
        self._contract = contract
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: engine not found")
        self._cudart = cudart = _cudart()
        _check(cudart.cudaSetDevice(int(device_id)), "cudaSetDevice")
        gpu = current_gpu(device_id)
        self.key = check_engine(self.model_path, str(trt.__version__), gpu, onnx_path=onnx_path, profile=profile)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.key.dla_core is not None:
            self._runtime.DLA_core = int(self.key.dla_core)
        self._engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if self._engine is None:
            raise DeviceError(f"{self.model_path}: TensorRT could not deserialize the engine; rebuild it: "
                              + rebuild_command(onnx_path, self.key.precision, profile, self.key.dla_core))
        self._context = self._engine.create_execution_context()
        self._io: dict[str, dict[str, Any]] = {}
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        try:
            self._bind_buffers(trt)
        except BaseException:
            self.close()  # free what was allocated before the failure
            raise
        try:
            self.batch = check_engine_shapes({n: io["shape"] for n, io in self._io.items()}, contract,
                                             str(self.model_path))
        except ModelError:
            self.close()
            raise
        log.info("tensorrt backend: %s (%s, TensorRT %s, %s), batch %d", self.model_path.name, self.key.precision,
                 self.key.trt_version, gpu.name, self.batch)

    def _bind_buffers(self, trt: Any) -> None:
        """One device buffer per I/O tensor (static shapes), bound to the context; a host array per output."""
        cudart = self._cudart
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(tname))
            if any(d < 0 for d in shape):
                raise ModelError(f"{self.model_path}: tensor {tname!r} has a dynamic shape {shape}; build the engine "
                                 "from a static-shape ONNX")
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
            is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ptr = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._context.set_tensor_address(tname, int(ptr))
            self._io[tname] = {"shape": shape, "dtype": dtype, "input": is_input, "ptr": ptr, "nbytes": nbytes,
                               "host": None if is_input else np.empty(shape, dtype)}

    @property
    def input_contract(self) -> InputContract:
        return self._contract

    def infer(self, audio: np.ndarray, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        self.check_inputs(audio, image, mask)
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_in = dict(zip(self._contract.input_names, (audio, image, mask)))
        for name, arr in host_in.items():
            io = self._io[name]
            if tuple(arr.shape) != io["shape"]:
                raise ModelError(f"tensorrt: input {name!r} is {tuple(arr.shape)}; this engine takes {io['shape']}")
            src = np.ascontiguousarray(arr, dtype=io["dtype"])
            _check(cudart.cudaMemcpyAsync(io["ptr"], src.ctypes.data, io["nbytes"], h2d, self._stream), "H2D copy")
        if not self._context.execute_async_v3(self._stream):
            raise DeviceError(f"{self.model_path.name}: execute_async_v3 failed")
        for name in OUTPUT_NAMES:
            io = self._io[name]
            _check(cudart.cudaMemcpyAsync(io["host"].ctypes.data, io["ptr"], io["nbytes"], d2h, self._stream), "D2H copy")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {n: self._io[n]["host"].astype(np.float32, copy=True) for n in OUTPUT_NAMES}  # each (B, C)

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        for io in getattr(self, "_io", {}).values():
            if io.get("ptr") is not None and cudart is not None:
                cudart.cudaFree(io["ptr"])
                io["ptr"] = None
        if getattr(self, "_stream", None) is not None and cudart is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None


# ------------------------------------------------------------------------------------------------ builder

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
    check_static_inputs({network.get_input(i).name: tuple(network.get_input(i).shape)
                         for i in range(network.num_inputs)}, onnx_path.name)
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
    atomic_write_bytes(timing_path, bytes(memoryview(timing.serialize())))
    path = cache.store(key, bytes(memoryview(serialized)),
                       {"onnx": str(onnx_path), "profile": profile.name, "workspace_mib": profile.workspace_mib,
                        "strongly_typed": True, "timing_cache": timing_path.name})
    del monitor
    return BuiltEngine(path, key, False)


def create_backend(model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    """What edgeav.runtime.backends' `tensorrt` entry calls."""
    return TrtBackend(model_path, contract, **options)


__all__ = ["ENGINE_CACHE_ENV", "MIN_TRT_MAJOR", "BuiltEngine", "EngineCache", "EngineKey", "GpuInfo", "TrtBackend",
           "build_engine", "check_dla_support", "check_engine", "check_engine_shapes", "check_static_inputs",
           "check_trt_version", "create_backend", "engine_key_for",
           "require_tensorrt", "trt_major",
           "current_gpu", "default_cache_dir", "make_key", "read_sidecar", "rebuild_command", "sidecar_path",
           "trt_version"]
