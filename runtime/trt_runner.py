"""TensorRT on the field unit: the runner. The engine cache is the core's (edgeav.trt_cache), the builder the
export stage's (edgeav.export.trt_builder); this module imports neither stage.

`TrtBackend` runs an engine behind the `Backend` interface (edgeav.backend): explicit device
buffers allocated once with cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`), host -> device copies,
`execute_async_v3` on a CUDA stream, device -> host copies. Engines are built on the device by `edgeav export
--engine` or `python -m edgeav.export.tensorrt` (which also compares the engine's outputs with ONNX Runtime); the
daemon runs the engine a bundle carries and builds none. TensorRT and cuda-python are imported when a backend is
created, never at module import: this module imports where neither is installed. Nothing here has run on a GPU in
this project.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.backend import OUTPUT_NAMES, Backend
from edgeav.contract import InputContract
from edgeav.errors import DeviceError, ModelError
from edgeav.trt_cache import check_cuda, check_engine, current_gpu, import_cudart, import_tensorrt, rebuild_command

log = logging.getLogger(__name__)


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
        raise ModelError(
            f"{where}: tensor(s) {dynamic} have a dynamic axis ({dynamic[0]!r} is "
            f"{tuple(shapes[dynamic[0]])}); build the engine from a static-shape ONNX (edgeav export "
            "without --dynamic-batch)"
        )
    first = contract.input_names[0]
    if not shapes[first]:
        raise ModelError(f"{where}: input {first!r} has no batch axis")
    batch = int(shapes[first][0])
    want = contract.shapes(batch)
    for name, kind in zip(contract.input_names, ("audio", "image", "mask")):
        got = tuple(int(d) for d in shapes[name])
        if got != want[kind]:
            raise ModelError(
                f"{where}: input {name!r} is {got}, the contract says {want[kind]}"
                + (
                    f" ({contract.image.n_frames} frames of {contract.image.height_px}x{contract.image.width_px})"
                    if kind == "image"
                    else ""
                )
            )
    for name in OUTPUT_NAMES:
        got = tuple(int(d) for d in shapes[name])
        if len(got) != 2 or got[0] != batch:
            raise ModelError(f"{where}: output {name!r} is {got}, want ({batch}, classes)")
    return batch


class TrtBackend(Backend):
    """A TensorRT engine with explicit device buffers. Inputs and outputs are static: batch = the engine's, and
    every shape is checked against the contract when the engine is loaded (`check_engine_shapes`)."""

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | Path,
        contract: InputContract,
        device_id: int = 0,
        onnx_path: str | Path | None = None,
        profile: str | None = None,
    ) -> None:
        trt = import_tensorrt("use the onnxruntime backend")
        self._contract = contract
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: engine not found")
        self._cudart = cudart = import_cudart()
        check_cuda(cudart.cudaSetDevice(int(device_id)), "cudaSetDevice")
        gpu = current_gpu(device_id)
        self.key = check_engine(self.model_path, str(trt.__version__), gpu, onnx_path=onnx_path, profile=profile)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.key.dla_core is not None:
            self._runtime.DLA_core = int(self.key.dla_core)
        self._engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if self._engine is None:
            raise DeviceError(
                f"{self.model_path}: TensorRT could not deserialize the engine; rebuild it: "
                + rebuild_command(onnx_path, self.key.precision, profile, self.key.dla_core)
            )
        self._context = self._engine.create_execution_context()
        self._io: dict[str, dict[str, Any]] = {}
        self._stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        try:
            self._bind_buffers(trt)
        except BaseException:
            self.close()  # free what was allocated before the failure
            raise
        try:
            self.batch = check_engine_shapes(
                {n: io["shape"] for n, io in self._io.items()}, contract, str(self.model_path)
            )
        except ModelError:
            self.close()
            raise
        log.info(
            "tensorrt backend: %s (%s, TensorRT %s, %s), batch %d",
            self.model_path.name,
            self.key.precision,
            self.key.trt_version,
            gpu.name,
            self.batch,
        )

    def _bind_buffers(self, trt: Any) -> None:
        """One device buffer per I/O tensor (static shapes), bound to the context; a host array per output."""
        cudart = self._cudart
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(tname))
            if any(d < 0 for d in shape):
                raise ModelError(
                    f"{self.model_path}: tensor {tname!r} has a dynamic shape {shape}; build the engine "
                    "from a static-shape ONNX"
                )
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
            is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ptr = check_cuda(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._context.set_tensor_address(tname, int(ptr))
            self._io[tname] = {
                "shape": shape,
                "dtype": dtype,
                "input": is_input,
                "ptr": ptr,
                "nbytes": nbytes,
                "host": None if is_input else np.empty(shape, dtype),
            }

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
            check_cuda(cudart.cudaMemcpyAsync(io["ptr"], src.ctypes.data, io["nbytes"], h2d, self._stream), "H2D copy")
        if not self._context.execute_async_v3(self._stream):
            raise DeviceError(f"{self.model_path.name}: execute_async_v3 failed")
        for name in OUTPUT_NAMES:
            io = self._io[name]
            check_cuda(
                cudart.cudaMemcpyAsync(io["host"].ctypes.data, io["ptr"], io["nbytes"], d2h, self._stream), "D2H copy"
            )
        check_cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
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


def create_backend(model_path: str | Path, contract: InputContract, **options: Any) -> Backend:
    """What edgeav.runtime.backends' `tensorrt` entry calls."""
    return TrtBackend(model_path, contract, **options)


__all__ = ["TrtBackend", "check_engine_shapes", "create_backend"]
