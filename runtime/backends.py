"""Inference backends behind one small interface, created by name from a registry.

A backend takes exactly the model's inputs and returns its three outputs:

    infer(audio (B, S) float32, image (B, 3, H, W) or (B, T, 3, H, W) uint8, mask (B, 2) float32)
        -> {"logits": (B, C), "logits_audio": (B, C), "logits_image": (B, C)}

Entries: `onnxruntime` (the embedded default; CPU unless CUDA/TensorRT execution providers are asked for, and a
provider asked for but not available is an error, never a silent fallback), `tensorrt` (imports
`edgeav.runtime.trt_runner` lazily) and `pytorch` (development only: a training checkpoint, through
`edgeav.export.torch_backend`, imported lazily - this module never imports torch; a field unit has none).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeav.backend import OUTPUT_NAMES, Backend
from edgeav.contract import InputContract
from edgeav.errors import DeviceError, ModelError
from edgeav.onnx_session import OnnxRunner, SessionSettings, create_session
from edgeav.providers import import_provider
from edgeav.registry import Registry

if TYPE_CHECKING:
    from edgeav.schema.runtime import BackendConfig

log = logging.getLogger(__name__)

BACKENDS: Registry[Backend] = Registry("inference backend")


class OrtBackend(Backend):
    """ONNX Runtime. `providers` in priority order ("cpu", "cuda", "tensorrt"); CPU is always appended last
    only when it was asked for - every provider asked for must be available and active, else DeviceError."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        contract: InputContract,
        providers: Sequence[str] = ("cpu",),
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        device_id: int = 0,
    ) -> None:
        self._contract = contract
        self.model_path = Path(model_path)
        settings = SessionSettings(
            providers=tuple(providers),
            intra_op_threads=int(intra_op_threads),
            inter_op_threads=int(inter_op_threads),
            log_severity=2,
            device_id=int(device_id),
        )
        self._session = create_session(self.model_path, settings)
        self.providers = tuple(self._session.get_providers())
        in_names = {i.name for i in self._session.get_inputs()}
        if set(contract.input_names) - in_names:
            raise ModelError(
                f"{self.model_path}: inputs {sorted(in_names)} do not match the contract {list(contract.input_names)}"
            )
        out_names = [o.name for o in self._session.get_outputs()]
        if set(OUTPUT_NAMES) - set(out_names):
            raise ModelError(
                f"{self.model_path}: outputs {out_names} lack {sorted(set(OUTPUT_NAMES) - set(out_names))}"
            )
        self._runner = OnnxRunner(self._session, OUTPUT_NAMES, self.model_path.name)
        dims0 = {i.name: (i.shape[0] if i.shape else 1) for i in self._session.get_inputs()}
        fixed = [d for d in dims0.values() if isinstance(d, int) and d > 0]
        self._max_batch: int | None = min(fixed) if fixed else None  # a symbolic batch axis takes any batch
        log.info("onnxruntime backend: %s on %s", self.model_path.name, ", ".join(self.providers))

    @property
    def input_contract(self) -> InputContract:
        return self._contract

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def infer(self, audio: np.ndarray, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        self.check_inputs(audio, image, mask)
        a, i, m = self._contract.input_names
        outs = self._runner.run({a: audio, i: image, m: mask})
        return {k: np.asarray(v, dtype=np.float32) for k, v in outs.items()}  # each (B, C)

    def close(self) -> None:
        self._session = self._runner = None


@BACKENDS.register("onnxruntime", default=True, artifact=".onnx")
def _create_onnxruntime(model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    return OrtBackend(model_path, contract, **options)


@BACKENDS.register("tensorrt", artifact=".engine")
def _create_tensorrt(model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    """The TensorRT runner (`edgeav.runtime.trt_runner.create_backend`, through the core's `edgeav.providers`,
    imported on first use: TensorRT and cuda-python are imported only when an engine is loaded)."""
    try:
        create = import_provider("backend.tensorrt")
    except ImportError as e:
        raise DeviceError(f"TensorRT is not available here ({e}); use the onnxruntime backend") from None
    return create(model_path, contract, **options)


@BACKENDS.register("pytorch", artifact=".pt", dev_only=True)
def _create_pytorch(model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    """Development only: a training checkpoint run by PyTorch (export's, reached through the core's
    `edgeav.providers`, imported lazily; the runtime itself never imports torch). On a unit without torch this is a
    DeviceError that says so."""
    try:
        create = import_provider("backend.pytorch")
    except ImportError as e:
        raise DeviceError(
            f"the pytorch backend is for development and needs torch + edgeav[train] ({e}); "
            "a field unit runs onnxruntime or tensorrt"
        ) from None
    log.warning("pytorch backend: development only, not for a field unit")
    return create(model_path, contract, **options)


def create_backend(name: str, model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    """Create a backend by registry name; an unknown name raises UnknownNameError listing the valid ones."""
    return BACKENDS.create(name, model_path, contract, **options)


def backend_from_config(cfg: BackendConfig, model_path: str | Path, contract: InputContract) -> Backend:
    """From the runtime's backend section."""
    if cfg.name == "onnxruntime":
        return create_backend(
            "onnxruntime",
            model_path,
            contract,
            providers=tuple(cfg.providers),
            intra_op_threads=cfg.intra_op_threads,
            inter_op_threads=cfg.inter_op_threads,
            device_id=cfg.device_id,
        )
    if cfg.name == "pytorch":
        return create_backend("pytorch", model_path, contract, threads=cfg.intra_op_threads)
    return create_backend(cfg.name, model_path, contract, device_id=cfg.device_id)


__all__ = ["Backend", "OrtBackend", "BACKENDS", "create_backend", "backend_from_config", "OUTPUT_NAMES"]
