"""Inference backends: the registry, ONNX Runtime on a tiny model built with onnx.helper (no torch), no fallbacks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building the test model needs onnx")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime (pip install 'edgeav[runtime]')")

from edgeav.contract import AudioContract, ImageContract, InputContract  # noqa: E402
from edgeav.errors import DeviceError, ModelError, UnknownNameError  # noqa: E402
from edgeav.runtime.backends import BACKENDS, Backend, OrtBackend, backend_from_config, create_backend  # noqa: E402
from edgeav.schema.runtime import BackendConfig  # noqa: E402


def small_contract(rate_hz: int = 16000, window_s: float = 1.0, size_px: int = 32) -> InputContract:
    return InputContract(
        audio=AudioContract(sample_rate_hz=rate_hz, window_s=window_s, fmax_hz=rate_hz / 2),
        image=ImageContract(height_px=size_px, width_px=size_px),
    )


def tiny_onnx_model(path: Path, contract: InputContract, n_classes: int = 2) -> Path:
    """A 'fused classifier' with the real interface, built with onnx.helper.

    audio energy a = mean|audio|, image brightness v = mean(image)/255;
    logits_audio = a * [-10, +10] + [1, 0], logits_image = v * [-10, +10] + [5, -5] (class 1 = loud / bright),
    logits = mask_a * logits_audio + mask_i * logits_image.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t = contract.audio.window_samples
    image_shape = contract.shapes(batch=1)["image"]  # (1, 3, H, W) or (1, T, 3, H, W)
    c = n_classes
    wa = np.zeros((1, c), np.float32)
    wa[0, 0], wa[0, -1] = -10.0, 10.0
    ba = np.zeros((c,), np.float32)
    ba[0] = 1.0
    wi = wa.copy()
    bi = np.zeros((c,), np.float32)
    bi[0], bi[-1] = 5.0, -5.0
    inits = [
        numpy_helper.from_array(wa, "wa"),
        numpy_helper.from_array(ba, "ba"),
        numpy_helper.from_array(wi, "wi"),
        numpy_helper.from_array(bi, "bi"),
        numpy_helper.from_array(np.array([[1.0], [0.0]], np.float32), "sel_a"),
        numpy_helper.from_array(np.array([[0.0], [1.0]], np.float32), "sel_i"),
        numpy_helper.from_array(np.array(1 / 255.0, np.float32), "inv255"),
    ]
    nodes = [
        helper.make_node("Abs", ["audio"], ["a_abs"]),
        helper.make_node("ReduceMean", ["a_abs"], ["a_feat"], axes=[1], keepdims=1),  # (B, 1)
        helper.make_node("MatMul", ["a_feat", "wa"], ["a_mm"]),
        helper.make_node("Add", ["a_mm", "ba"], ["logits_audio"]),  # (B, C)
        helper.make_node("Cast", ["image"], ["img_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["img_f", "inv255"], ["img_n"]),
        helper.make_node(
            "ReduceMean", ["img_n"], ["i_feat4"], axes=list(range(1, len(image_shape))), keepdims=1
        ),  # (B, 1, 1, 1) or (B, 1, 1, 1, 1) for T frames
        helper.make_node("Flatten", ["i_feat4"], ["i_feat"], axis=1),  # (B, 1)
        helper.make_node("MatMul", ["i_feat", "wi"], ["i_mm"]),
        helper.make_node("Add", ["i_mm", "bi"], ["logits_image"]),  # (B, C)
        helper.make_node("MatMul", ["mask", "sel_a"], ["m_a"]),  # (B, 1)
        helper.make_node("MatMul", ["mask", "sel_i"], ["m_i"]),
        helper.make_node("Mul", ["logits_audio", "m_a"], ["la_m"]),
        helper.make_node("Mul", ["logits_image", "m_i"], ["li_m"]),
        helper.make_node("Add", ["la_m", "li_m"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_fused",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", t]),
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["B", *image_shape[1:]]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", 2]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", c])
            for n in ("logits", "logits_audio", "logits_image")
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _feeds(contract: InputContract, b: int = 2):
    s = contract.shapes(b)
    audio = np.zeros(s["audio"], np.float32)
    audio[1] = 0.5
    image = np.zeros(s["image"], np.uint8)
    image[1] = 255
    mask = np.ones(s["mask"], np.float32)
    return audio, image, mask


def test_registry_lists_backends_and_rejects_unknown(tmp_path):
    assert BACKENDS.names() == ["onnxruntime", "pytorch", "tensorrt"]
    assert BACKENDS.meta("pytorch")["dev_only"] is True and "dev_only" not in BACKENDS.meta("onnxruntime")
    with pytest.raises(UnknownNameError, match="valid names: onnxruntime, pytorch, tensorrt"):
        create_backend("openvino", tmp_path / "m.onnx", small_contract())


def test_ort_backend_runs_tiny_model(tmp_path):
    contract = small_contract()
    path = tiny_onnx_model(tmp_path / "tiny.onnx", contract)
    with create_backend("onnxruntime", path, contract, intra_op_threads=1) as be:
        assert isinstance(be, Backend) and be.name == "onnxruntime" and be.input_contract == contract
        assert be.providers == ("CPUExecutionProvider",)
        out = be.infer(*_feeds(contract))
        assert set(out) == {"logits", "logits_audio", "logits_image"}
        assert all(v.shape == (2, 2) and v.dtype == np.float32 for v in out.values())
        np.testing.assert_allclose(out["logits_audio"][1], [-4.0, 5.0], atol=1e-5)
        np.testing.assert_allclose(out["logits_image"][1], [-5.0, 5.0], atol=1e-5)
        np.testing.assert_allclose(out["logits"], out["logits_audio"] + out["logits_image"], atol=1e-5)
        # the mask switches a modality off inside the model
        a, i, m = _feeds(contract)
        m[:, 1] = 0
        np.testing.assert_allclose(be.infer(a, i, m)["logits"], be.infer(a, i, m)["logits_audio"], atol=1e-6)


def test_ort_backend_checks_inputs(tmp_path):
    contract = small_contract()
    be = OrtBackend(tiny_onnx_model(tmp_path / "tiny.onnx", contract), contract)
    a, i, m = _feeds(contract)
    with pytest.raises(ModelError, match="input 'image' is float32"):
        be.infer(a, i.astype(np.float32), m)
    with pytest.raises(ModelError, match="input 'audio'"):
        be.infer(a[:, :100], i, m)


def test_unavailable_provider_is_an_error_not_a_fallback(tmp_path):
    import onnxruntime as ort

    contract = small_contract()
    path = tiny_onnx_model(tmp_path / "tiny.onnx", contract)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is available here; the refusal cannot be shown")
    with pytest.raises(DeviceError, match=r"\['cuda'\] requested but not available"):
        backend_from_config(BackendConfig(providers=["cuda", "cpu"]), path, contract)
    with pytest.raises(ModelError, match="unknown ONNX Runtime provider"):
        OrtBackend(path, contract, providers=("openvino",))


def test_model_with_wrong_interface_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelError, match="do not match the contract"):
        OrtBackend(tmp_path / "bad.onnx", small_contract())
    with pytest.raises(ModelError, match="not found"):
        OrtBackend(tmp_path / "missing.onnx", small_contract())


def test_tensorrt_entry_says_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "edgeav.runtime.trt_runner", None)  # as on a unit without TensorRT
    with pytest.raises(DeviceError, match="TensorRT is not available here"):
        create_backend("tensorrt", tmp_path / "m.engine", small_contract())


def test_pytorch_entry_says_unavailable_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "edgeav.export.torch_backend", None)  # as on a unit without torch
    with pytest.raises(DeviceError, match="pytorch backend is for development"):
        create_backend("pytorch", tmp_path / "m.pt", small_contract())


def test_pytorch_backend_matches_onnxruntime_on_the_same_model(tmp_path):
    """The dev backend runs a training checkpoint; its ONNX export through ORT gives the same logits (parity)."""
    torch = pytest.importorskip("torch", reason="the pytorch backend needs torch")
    from _runtime_models import GRID_LABELS, grid_contract

    from edgeav.train.models import ExportWrapper, create_model, save_checkpoint

    contract = grid_contract(window_s=1.0, image_px=64)
    torch.manual_seed(0)
    model = create_model("edgeav-small", list(GRID_LABELS), contract=contract, pretrained=False).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, list(GRID_LABELS), model.arch, contract, {}, {})
    shapes = contract.shapes(2)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(shapes["audio"])).astype(np.float32)
    image = rng.integers(0, 256, shapes["image"], dtype=np.uint8)
    mask = np.array([[1, 1], [1, 0]], np.float32)  # second row: image missing
    onnx_path = tmp_path / "m.onnx"
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ExportWrapper(model).eval(),
            tuple(torch.from_numpy(x) for x in (audio, image, mask)),
            str(onnx_path),
            input_names=["audio", "image", "mask"],
            output_names=["logits", "logits_audio", "logits_image"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={k: {0: "b"} for k in ("audio", "image", "mask")},
        )
    with (
        create_backend("pytorch", ckpt, contract, threads=1) as pt,
        create_backend("onnxruntime", onnx_path, contract) as ort_be,
    ):
        assert pt.name == "pytorch" and pt.max_batch is None and pt.input_contract == contract
        a, b = pt.infer(audio, image, mask), ort_be.infer(audio, image, mask)
        for k in ("logits", "logits_audio", "logits_image"):
            np.testing.assert_allclose(a[k], b[k], atol=1e-3, rtol=1e-3)
        assert not np.allclose(a["logits"][0], a["logits"][1])  # the mask reaches the model


def test_batched_inference_gives_the_same_results_as_one_by_one(tmp_path):
    from edgeav.runtime.align import AlignedWindow
    from edgeav.runtime.engine import infer_windows
    from edgeav.runtime.postprocess import PostProcessor
    from edgeav.schema.runtime import PostprocessConfig

    contract = small_contract()
    be = OrtBackend(tiny_onnx_model(tmp_path / "tiny.onnx", contract), contract)
    assert be.max_batch is None  # symbolic batch axis
    rng = np.random.default_rng(0)
    n, hop = contract.audio.window_samples, 500_000_000
    windows = []
    for k in range(11):
        audio = (rng.uniform(0, 0.3) * rng.standard_normal(n)).astype(np.float32)
        frames = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        if k == 5:  # no sensor at all: no inference, smoothing restarts
            windows.append(AlignedWindow(k * hop, k * hop + 10**9, None, None, (), {"audio": "x", "image": "y"}))
        elif k == 7:  # image missing: zeros and mask 0
            windows.append(AlignedWindow(k * hop, k * hop + 10**9, audio, None, (), {"image": "gone"}))
        else:
            windows.append(AlignedWindow(k * hop, k * hop + 10**9, audio, frames, (k * hop,)))
    cfg = PostprocessConfig(threshold=0.6, mean_windows=2, min_gap_s=0.0)
    runs = {}
    for batch in (1, 4):
        post = PostProcessor(["quiet", "loud"], cfg)
        runs[batch] = list(infer_windows(windows, be, contract, post, batch_windows=batch))
    one, four = runs[1], runs[4]
    assert len(one) == len(four) == 11 and one[5].scores is None and four[5].scores is None
    for a, b in zip(one, four):
        if a.scores is not None:
            np.testing.assert_allclose(a.scores.fused, b.scores.fused, atol=1e-6)
            np.testing.assert_allclose(a.scores.smoothed, b.scores.smoothed, atol=1e-6)
        assert [(d.label, d.end_ns) for d in a.detections] == [(d.label, d.end_ns) for d in b.detections]
    assert four[7].scores.image is None and four[7].scores.audio is not None
    assert sum(len(r.detections) for r in one) > 0


def test_session_factory_sets_the_threads_asked_for(tmp_path):
    """Threads are explicit: the number asked for (config or caller) is what the session runs with, and the default
    is the cores free now, not ONNX Runtime's one-per-core (which over-subscribes a shared machine)."""
    from edgeav.onnx_session import OnnxRunner, create_session, free_cores

    contract = small_contract()
    path = tiny_onnx_model(tmp_path / "tiny.onnx", contract)
    opts = create_session(path, intra_op_threads=3, inter_op_threads=2, optimization="disable").get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 2)
    assert opts.graph_optimization_level.name == "ORT_DISABLE_ALL" and opts.log_severity_level == 3
    assert 1 <= create_session(path).get_session_options().intra_op_num_threads <= free_cores() + 1
    with backend_from_config(BackendConfig(intra_op_threads=2), path, contract) as be:
        assert be._session.get_session_options().intra_op_num_threads == 2
        a, i, m = _feeds(contract)
        via_feeds = be.run({"audio": a, "image": i, "mask": m, "unused": m})  # the runner interface of every stage
        np.testing.assert_array_equal(via_feeds["logits"], be.infer(a, i, m)["logits"])
        np.testing.assert_array_equal(
            OnnxRunner.open(path, ["logits"]).run({"audio": a, "image": i, "mask": m})["logits"], via_feeds["logits"]
        )
    with pytest.raises(ModelError, match="unknown graph optimization level 'fast'"):
        create_session(path, optimization="fast")
