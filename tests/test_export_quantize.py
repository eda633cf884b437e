"""INT8 by explicit Q/DQ: both forms, the front end stays in float, no calibration data is an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="INT8 quantization needs onnxruntime (pip install 'edgeav[export]')")
pytest.importorskip("torch", reason="the test model is built with torch")
onnx = pytest.importorskip("onnx")

from _export_models import build_onnx, feeds  # noqa: E402

from edgeav.devices import load_profile  # noqa: E402
from edgeav.errors import DeviceError, ExportError  # noqa: E402
from edgeav.export.quantize import (  # noqa: E402
    float_node_names,
    logits_error,
    quantize_for_device,
    quantize_int8,
    sensitivity_check,
)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("m") / "model_fp32.onnx")


def _run(path: Path, fs: list[dict[str, np.ndarray]], simulate_qdq: bool = False) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if simulate_qdq:  # Q/DQ as float ops, as TensorRT computes them
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(["logits"], f)[0] for f in fs])


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _init_type(model: onnx.ModelProto, name: str) -> int:
    return next(i.data_type for i in model.graph.initializer if i.name == name)


def _check_frontend_float(model: onnx.ModelProto) -> None:
    prod = _producers(model)
    # the front end's own nodes (ONNX Runtime names the Q/DQ pair on its output edge after the tensor)
    front = [
        n
        for n in model.graph.node
        if n.name.startswith("/frontend/") and n.op_type not in ("QuantizeLinear", "DequantizeLinear")
    ]
    assert front, "the front end nodes are still in the graph under their names"
    for n in front:
        for i in n.input:
            p = prod.get(i)
            assert p is None or p.op_type not in ("DequantizeLinear", "QuantizeLinear"), (
                f"{n.name} reads a quantized tensor ({p.name})"
            )
    # nothing upstream of the front end is quantized: walk back from its nodes to the graph input
    stack, seen = [i for n in front for i in n.input], set()
    while stack:
        t = stack.pop()
        if t in seen or t not in prod:
            continue
        seen.add(t)
        assert prod[t].op_type != "QuantizeLinear", f"QuantizeLinear on the front end's path: {prod[t].name}"
        stack.extend(prod[t].input)


def test_symmetric_form_for_tensorrt(fp32: Path, tmp_path: Path) -> None:
    out, info = quantize_int8(fp32, tmp_path / "int8.onnx", feeds(8), "trt_symmetric")
    m = onnx.load(str(out))
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs and info["quantize_linear_nodes"] == len(qs)
    for q in qs:  # activations: int8, zero-point 0
        zp = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == q.input[2]))
        assert zp.dtype == np.int8 and not zp.any(), q.name
    weight_dq = [d for d in dqs if d.input[0] in {i.name for i in m.graph.initializer}]
    assert weight_dq and all(_init_type(m, d.input[0]) == onnx.TensorProto.INT8 for d in weight_dq)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert any(inits[d.input[1]].size > 1 for d in weight_dq), "weights are quantized per channel"
    _check_frontend_float(m)
    assert set(info["float_nodes"]) == set(float_node_names(fp32))
    assert info["form"] == "trt_symmetric" and info["activation_type"] == "int8" and info["calibration_feeds"] == 8
    test = feeds(4, seed=7)
    assert logits_error(_run(fp32, test), _run(out, test, simulate_qdq=True)) < 0.05


def test_u8s8_form_for_cpu(fp32: Path, tmp_path: Path) -> None:
    out, info = quantize_for_device(fp32, tmp_path / "int8.onnx", iter(feeds(8)), load_profile("cpu"))
    m = onnx.load(str(out))
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:
        assert _init_type(m, q.input[2]) == onnx.TensorProto.UINT8, q.name
    _check_frontend_float(m)
    assert info["activation_type"] == "uint8" and info["target_profile"] == "cpu"
    test = feeds(4, seed=7)
    ref, got = _run(fp32, test), _run(out, test)
    assert logits_error(ref, got) < 0.05 and info["weight_bits"] == 7  # cpu profile: 7-bit weights (no-VNNI x86)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.75


def test_extra_float_nodes_are_kept(fp32: Path, tmp_path: Path) -> None:
    keep = "/image/image.2/Conv"
    out, info = quantize_int8(fp32, tmp_path / "int8.onnx", feeds(4), "trt_symmetric", extra_float_nodes=[keep])
    m = onnx.load(str(out))
    node = next(n for n in m.graph.node if n.name == keep)
    weight = next(i for i in m.graph.initializer if i.name == node.input[1])  # read directly, in float
    assert weight.data_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == node.output[0] for n in m.graph.node)
    assert keep in info["float_nodes"]
    with pytest.raises(ExportError, match="not found"):
        quantize_int8(fp32, tmp_path / "x.onnx", feeds(2), "trt_symmetric", extra_float_nodes=["/nope/Conv"])


@pytest.mark.parametrize("calib", [None, []])
def test_no_calibration_data_is_refused(fp32: Path, tmp_path: Path, calib: object) -> None:
    with pytest.raises(ExportError, match="INT8 needs calibration data: pass --calib-data"):
        quantize_int8(fp32, tmp_path / "int8.onnx", calib, "trt_symmetric")  # type: ignore[arg-type]
    assert not (tmp_path / "int8.onnx").exists()


def test_bad_feed_names_the_missing_input(fp32: Path, tmp_path: Path) -> None:
    bad = [{"audio": f["audio"], "image": f["image"]} for f in feeds(2)]
    with pytest.raises(ExportError, match="mask"):
        quantize_int8(fp32, tmp_path / "int8.onnx", bad, "ort_u8s8")


def test_int8_on_a_device_without_it(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="use --fp16"):
        quantize_for_device(fp32, tmp_path / "int8.onnx", feeds(2), load_profile("jetson-nano"))


def test_sensitivity_check_reports_per_op_type(fp32: Path) -> None:
    rep = sensitivity_check(fp32, (f for f in feeds(4)), "trt_symmetric", max_feeds=4, min_gain=0.0, max_op_types=1)
    assert rep.baseline_error >= 0 and "Conv" in rep.error_without
    assert len(rep.fragile_op_types) <= 1
    assert all(not n.startswith("/frontend/") for n in rep.fragile_nodes)
    assert rep.to_dict()["fragile_nodes"] == rep.fragile_nodes
