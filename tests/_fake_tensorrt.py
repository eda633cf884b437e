"""A stand-in `tensorrt` module for the builder's logic where TensorRT cannot be installed (no GPU here).

It follows the TensorRT 10 Python API the builder calls (Builder, create_network(flags), OnnxParser.parse_from_file,
the network's inputs and layers, IBuilderConfig flags / memory pool / timing cache, IProgressMonitor,
build_serialized_network) and nothing more. The parser reads the real ONNX file (with `onnx`) and reports what
TensorRT's parser would: a QUANTIZE/DEQUANTIZE layer per QuantizeLinear/DequantizeLinear node, a HALF output for a
node whose output is float16. The "serialized engine" is JSON saying how it was built, so a test can read back the
network mode and the builder flags. No claim is made that real TensorRT behaves the same beyond these calls.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


def _enum(cls_name: str, *names: str) -> type:
    return type(cls_name, (), {n: _Enum(f"{cls_name}.{n}", i) for i, n in enumerate(names)})


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class _Layer:
    def __init__(self, type_: Any, outputs: list[_Tensor]) -> None:
        self.type, self._outputs = type_, outputs
        self.num_outputs = len(outputs)

    def get_output(self, j: int) -> _Tensor:
        return self._outputs[j]


def make_fake_tensorrt(version: str = "10.3.0", *, fail_build: bool = False) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []  # one dict per build_serialized_network call
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH", "STRONGLY_TYPED")
    trt.BuilderFlag = _enum("BuilderFlag", "FP16", "INT8", "GPU_FALLBACK", "TF32")
    trt.MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE")
    trt.DeviceType = _enum("DeviceType", "GPU", "DLA")
    trt.OnnxParserFlag = _enum("OnnxParserFlag", "ADJUST_FOR_DLA")
    trt.LayerType = _enum("LayerType", "CONVOLUTION", "MATRIX_MULTIPLY", "QUANTIZE", "DEQUANTIZE", "OTHER")
    trt.DataType = _enum("DataType", "FLOAT", "HALF", "INT8", "UINT8")

    class Logger:
        WARNING = 2

        def __init__(self, level: int = 2) -> None:
            self.level = level

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.strongly_typed = bool(flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            self.inputs: list[_Tensor] = []
            self.layers: list[_Layer] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> _Tensor:
            return self.inputs[i]

        def get_layer(self, i: int) -> _Layer:
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.num_errors = network, 0

        def set_flag(self, flag: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            import onnx

            proto = onnx.load(path)
            init = {i.name for i in proto.graph.initializer}
            for i in proto.graph.input:
                if i.name not in init:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
                    self.network.inputs.append(_Tensor(i.name, dims, trt.DataType.FLOAT))
            half = {v.name for v in proto.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
            kinds = {
                "QuantizeLinear": trt.LayerType.QUANTIZE,
                "DequantizeLinear": trt.LayerType.DEQUANTIZE,
                "Conv": trt.LayerType.CONVOLUTION,
                "MatMul": trt.LayerType.MATRIX_MULTIPLY,
            }
            for node in proto.graph.node:
                to_half = node.op_type == "Cast" and any(
                    a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute
                )
                outs = [
                    _Tensor(o, (), trt.DataType.HALF if (o in half or to_half) else trt.DataType.FLOAT)
                    for o in node.output
                ]
                self.network.layers.append(_Layer(kinds.get(node.op_type, trt.LayerType.OTHER), outs))
            return True

        def get_error(self, i: int) -> str:
            return ""

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing"

    class Config:
        def __init__(self) -> None:
            self.flags = {"BuilderFlag.TF32"}  # TensorRT's default
            self.progress_monitor = None
            self.pool: dict[str, int] = {}

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pool[repr(pool)] = size

        def set_flag(self, flag: Any) -> None:
            self.flags.add(repr(flag))

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(repr(flag))

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            info = {"strongly_typed": network.strongly_typed, "flags": sorted(config.flags), "n": len(trt.builds) + 1}
            trt.builds.append(info)
            return None if fail_build else json.dumps(info).encode()

    for cls in (Logger, IProgressMonitor, OnnxParser, Builder):
        setattr(trt, cls.__name__, cls)
    return trt


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", gpu: Any = None) -> types.ModuleType:
    """Put a fake `tensorrt` in sys.modules and make the builder see `gpu` (a GpuInfo) as this machine's GPU."""
    from edgeav.export import trt_builder

    trt = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if gpu is not None:
        monkeypatch.setattr(trt_builder, "current_gpu", lambda device_id=0: gpu)
    return trt


def engine_info(path: Path) -> dict[str, Any]:
    """How the fake built the engine at `path`."""
    return json.loads(Path(path).read_bytes())
