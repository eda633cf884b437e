"""TensorRT engine cache: the key an engine depends on, the cache on disk, the refusal of foreign engines, and what
this machine's GPU is (cuda-python).

Engines are not portable: one built by TensorRT 10.3 for an Orin's GPU (compute capability 8.7) does not load under
another TensorRT version or on another GPU. So an engine is stored under a key that holds everything it depends on:

    EngineKey(onnx_sha256, trt_version, gpu_name, compute_capability, precision, dla_core)

`EngineCache` keeps `<precision>-<digest>.engine` with a `<precision>-<digest>_key.json` sidecar (the key, the
engine's sha256 and how it was built). The sidecar is written first, then the engine, each atomically (temporary file
+ fsync + os.replace): a crash between the two leaves a sidecar without an engine, or - from older versions, which
wrote the engine first - an engine without a sidecar. `lookup` treats every such half-written entry (no sidecar, an
unreadable sidecar, a sidecar of another key, or an engine whose sha256 is not the sidecar's) as absent, so the next
build replaces it. `check_engine` refuses an engine whose sidecar names another TensorRT version, GPU or compute
capability than this machine's, with the command that rebuilds it.

TensorRT and cuda-python are imported inside the functions: this module imports where neither is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeav.atomic import atomic_write_bytes
from edgeav.errors import BundleError, DeviceError

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


def make_key(
    onnx_sha256: str, precision: str, trt_version: str, gpu: GpuInfo, dla_core: int | None = None
) -> EngineKey:
    return EngineKey(onnx_sha256, str(trt_version), gpu.name, gpu.compute_capability, precision, dla_core)


def default_cache_dir() -> Path:
    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "edgeav" / "engines"


def rebuild_command(
    onnx_path: str | Path | None, precision: str, profile: str | None = None, dla_core: int | None = None
) -> str:
    """The command that builds the engine for this machine (run it on the device itself)."""
    src = str(onnx_path) if onnx_path else "BUNDLE/model_<precision>.onnx"
    cmd = f"python -m edgeav.export.tensorrt {src} --precision {precision}"
    if profile:
        cmd += f" --device {profile}"
    if dla_core is not None:
        cmd += f" --dla-core {dla_core}"
    return cmd + " --parity-feeds WINDOWS.npz"  # windows (audio, image, mask) the new engine is checked on


class EngineCache:
    """Engines on disk, one file per key, each with a JSON sidecar (`<engine stem>_key.json`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.root / key.file_name

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for `key`, or None. A half-written or foreign entry (no sidecar, a sidecar that is not
        JSON or holds another key, an engine whose sha256 is not the sidecar's) counts as absent: the next build
        replaces it."""
        p = self.path_for(key)
        if not p.is_file():
            return None
        why = entry_problem(p, key)
        if why is not None:
            log.warning(
                "engine cache: %s is not a complete entry (%s); treating it as absent, it will be rebuilt", p.name, why
            )
            return None
        return p

    def store(self, key: EngineKey, engine_bytes: bytes, build_info: dict[str, Any] | None = None) -> Path:
        """Write the sidecar, then the engine, each atomically: an engine on disk always has its sidecar beside it,
        and a sidecar whose engine never arrived (or differs from its sha256) is ignored by `lookup`."""
        if not engine_bytes:
            raise DeviceError("refusing to cache an empty engine")
        p = self.path_for(key)
        side = {
            "key": key.to_dict(),
            "bytes": len(engine_bytes),
            "sha256": hashlib.sha256(engine_bytes).hexdigest(),
            "built_unix_ns": time.time_ns(),
            "build": dict(build_info or {}),
        }
        atomic_write_bytes(sidecar_path(p), json.dumps(side, indent=2, sort_keys=True).encode())
        atomic_write_bytes(p, engine_bytes)
        log.info("engine cached: %s (%d bytes)", p, len(engine_bytes))
        return p

    def evict(self, key: EngineKey) -> None:
        """Remove the entry of `key` (engine first, then its sidecar): what a refused engine gets."""
        p = self.path_for(key)
        for q in (p, sidecar_path(p)):
            q.unlink(missing_ok=True)


def entry_problem(engine_path: Path, key: EngineKey) -> str | None:
    """Why the cache entry at `engine_path` cannot be used for `key`, or None when it is complete."""
    try:
        side = read_sidecar(engine_path)
    except BundleError as e:
        return str(e)
    if side.get("key") != key.to_dict():
        return "its sidecar carries another key"
    if hashlib.sha256(engine_path.read_bytes()).hexdigest() != side.get("sha256"):
        return "the engine's sha256 is not its sidecar's (a write that did not finish, or a changed file)"
    return None


def sidecar_path(engine_path: str | Path) -> Path:
    """`x.engine` -> `x_key.json` (in a bundle: role `engine_int8` -> `engine_int8.engine`, `engine_int8_key.json`)."""
    p = Path(engine_path)
    return p.with_name(p.stem + "_key.json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise BundleError(
            f"{engine_path}: no {side.name} beside it: cannot tell which TensorRT and GPU it was built "
            "for; rebuild it on this device"
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BundleError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        raise BundleError(f"{side}: no engine key")
    return data


def check_engine(
    engine_path: str | Path,
    trt_version: str,
    gpu: GpuInfo,
    *,
    onnx_path: str | Path | None = None,
    profile: str | None = None,
) -> EngineKey:
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
        raise DeviceError(
            f"{Path(engine_path).name} was built for "
            + "; ".join(problems)
            + ": engines are not portable; rebuild it here: "
            + rebuild_command(onnx_path, key.precision, profile, key.dla_core)
        )
    return key


# ------------------------------------------------------------------------------------ this machine (cuda-python)


def import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6) or `cuda.cudart` (older)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise DeviceError(f"cuda-python is not installed here ({e}); pip install 'edgeav[tensorrt]'") from None
    return cudart


def check_cuda(result: Any, what: str) -> Any:
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
    cudart = import_cudart()
    props = check_cuda(cudart.cudaGetDeviceProperties(int(device_id)), "cudaGetDeviceProperties")
    name = props.name.decode("utf-8", "replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip(), f"{props.major}.{props.minor}")


def import_tensorrt(instead: str = "it ships with JetPack / NVIDIA's wheels") -> Any:
    """The `tensorrt` module; DeviceError where it is not installed, ending with what to do `instead`."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as e:
        raise DeviceError(f"TensorRT is not installed here ({e}); {instead}") from None
    return trt


def trt_version() -> str:
    return str(import_tensorrt().__version__)


__all__ = [
    "ENGINE_CACHE_ENV",
    "ENGINE_SUFFIX",
    "PRECISIONS",
    "EngineCache",
    "EngineKey",
    "GpuInfo",
    "check_engine",
    "current_gpu",
    "default_cache_dir",
    "entry_problem",
    "make_key",
    "read_sidecar",
    "rebuild_command",
    "import_cudart",
    "check_cuda",
    "import_tensorrt",
    "sidecar_path",
    "trt_version",
]
