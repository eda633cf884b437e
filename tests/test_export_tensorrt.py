"""TensorRT: the engine cache key, atomic cache writes, the refusal of engines from another TensorRT/GPU (with the
command that rebuilds them), and modules that import where TensorRT is absent.

The version and GPU facts are given explicitly (as `trt.__version__` and cuda-python would report them); no TensorRT
build is faked. Real builds need an NVIDIA GPU with TensorRT: those tests are marked `gpu` and skip with a reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from pathlib import Path

import pytest

from edgeav.devices import load_profile
from edgeav.errors import BundleError, DeviceError
from edgeav.trt_cache import EngineCache, GpuInfo, check_engine, make_key, rebuild_command

ORIN = GpuInfo("Orin (nvgpu)", "8.7")
SHA = hashlib.sha256(b"model_int8.onnx bytes").hexdigest()


def _has_tensorrt() -> bool:
    try:
        importlib.import_module("tensorrt")
    except ImportError:
        return False
    return True


def test_modules_import_without_tensorrt() -> None:
    import edgeav.export.tensorrt as t
    import edgeav.runtime.trt_runner as r

    assert callable(t.build_engine) and callable(r.create_backend)


def test_key_changes_with_everything_an_engine_depends_on() -> None:
    base = make_key(SHA, "int8", "10.3.0", ORIN)
    variants = [
        make_key(hashlib.sha256(b"other").hexdigest(), "int8", "10.3.0", ORIN),
        make_key(SHA, "fp16", "10.3.0", ORIN),
        make_key(SHA, "int8", "10.7.0", ORIN),
        make_key(SHA, "int8", "10.3.0", GpuInfo("NVIDIA GeForce RTX 4090", "8.7")),
        make_key(SHA, "int8", "10.3.0", GpuInfo("Orin (nvgpu)", "8.9")),
        make_key(SHA, "int8", "10.3.0", ORIN, dla_core=0),
    ]
    names = {base.file_name} | {v.file_name for v in variants}
    assert len(names) == 1 + len(variants)
    assert (
        base == make_key(SHA, "int8", "10.3.0", ORIN)
        and base.file_name == make_key(SHA, "int8", "10.3.0", ORIN).file_name
    )
    assert base.file_name.startswith("int8-") and base.file_name.endswith(".engine")


def test_bad_key_values_are_refused() -> None:
    with pytest.raises(DeviceError, match="sha256"):
        make_key("abc", "int8", "10.3.0", ORIN)
    with pytest.raises(DeviceError, match="unknown engine precision"):
        make_key(SHA, "int4", "10.3.0", ORIN)
    with pytest.raises(DeviceError, match="compute capability"):
        GpuInfo("Orin", "87")


def test_cache_store_and_lookup(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = make_key(SHA, "int8", "10.3.0", ORIN)
    assert cache.lookup(key) is None
    p = cache.store(key, b"serialized engine", {"profile": "jetson-orin-nx"})
    assert cache.lookup(key) == p and p.read_bytes() == b"serialized engine"
    side = json.loads(p.with_name(p.stem + "_key.json").read_text())
    assert side["key"] == key.to_dict() and side["sha256"] == hashlib.sha256(b"serialized engine").hexdigest()
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")]  # no temporary files left
    assert cache.lookup(make_key(SHA, "int8", "10.4.0", ORIN)) is None  # another TensorRT: not this file
    with pytest.raises(DeviceError, match="empty"):
        cache.store(key, b"")


def test_engine_from_the_same_machine_is_accepted(tmp_path: Path) -> None:
    key = make_key(SHA, "int8", "10.3.0", ORIN)
    p = EngineCache(tmp_path).store(key, b"engine")
    assert check_engine(p, "10.3.0", ORIN) == key


@pytest.mark.parametrize(
    "version, gpu, says",
    [
        ("10.7.0", ORIN, "TensorRT 10.3.0, this machine has 10.7.0"),
        ("11.0.0", ORIN, "TensorRT 10.3.0, this machine has 11.0.0"),
        (
            "10.3.0",
            GpuInfo("NVIDIA H100 80GB HBM3", "9.0"),
            "GPU 'Orin (nvgpu)', this machine has 'NVIDIA H100 80GB HBM3'",
        ),
        ("10.3.0", GpuInfo("Orin (nvgpu)", "8.9"), "compute capability 8.7, this GPU is 8.9"),
    ],
)
def test_engine_from_another_trt_or_gpu_is_refused_with_the_rebuild_command(
    tmp_path: Path, version: str, gpu: GpuInfo, says: str
) -> None:
    p = EngineCache(tmp_path).store(make_key(SHA, "int8", "10.3.0", ORIN), b"engine")
    with pytest.raises(DeviceError) as e:
        check_engine(p, version, gpu, onnx_path="bundle/model_int8.onnx", profile="jetson-orin-nx")
    msg = str(e.value)
    assert says in msg and "not portable" in msg and "\n" not in msg
    assert "python -m edgeav.export.tensorrt bundle/model_int8.onnx --precision int8 --device jetson-orin-nx" in msg


def test_engine_without_sidecar_or_tampered_is_refused(tmp_path: Path) -> None:
    p = EngineCache(tmp_path).store(make_key(SHA, "fp16", "10.3.0", ORIN), b"engine")
    p.write_bytes(b"engine!")
    with pytest.raises(BundleError, match="sha256 does not match"):
        check_engine(p, "10.3.0", ORIN)
    p.with_name(p.stem + "_key.json").unlink()
    with pytest.raises(BundleError, match="cannot tell which TensorRT and GPU"):
        check_engine(p, "10.3.0", ORIN)


def test_rebuild_command_names_dla_core() -> None:
    assert rebuild_command("m.onnx", "int8", "jetson-agx-orin", 1).endswith(
        "--device jetson-agx-orin --dla-core 1 --parity-feeds WINDOWS.npz"
    )


def test_trt_version_rules() -> None:
    from edgeav.export.tensorrt import check_trt_version

    check_trt_version("10.3.0", load_profile("jetson-orin-nx"))
    with pytest.raises(DeviceError, match="need TensorRT 10\\+"):
        check_trt_version("8.2.1", load_profile("jetson-nano"))
    with pytest.raises(DeviceError, match="expects TensorRT 10.3, this machine has 11.0"):
        check_trt_version("11.0.1", load_profile("jetson-orin-nx"))


def test_dla_support_by_tensorrt_version() -> None:
    from edgeav.export.tensorrt import check_dla_support

    check_dla_support("10.3.0")  # JetPack 6
    check_dla_support("11.4.1")
    for version in ("10.8.0", "11.0.0", "11.3.1"):
        with pytest.raises(DeviceError, match="cannot build for DLA"):
            check_dla_support(version)


def _clip_contract(n_frames: int = 8):  # noqa: ANN202
    from edgeav.contract import AudioContract, ImageContract, InputContract

    return InputContract(
        audio=AudioContract(window_s=1.0),
        image=ImageContract(height_px=48, width_px=48, n_frames=n_frames, frame_rate_hz=25.0),
    )


def _engine_shapes(image: tuple[int, ...], batch: int = 1) -> dict[str, tuple[int, ...]]:
    """I/O shapes as `ICudaEngine.get_tensor_shape` reports them for a static engine of 3 classes."""
    return {
        "audio": (batch, 16_000),
        "image": image,
        "mask": (batch, 2),
        "logits": (batch, 3),
        "logits_audio": (batch, 3),
        "logits_image": (batch, 3),
    }


def test_engine_shapes_of_a_clip_model_are_checked_against_the_contract() -> None:
    """A clip model's engine takes image (B, T, 3, H, W): accepted at the contract's T, refused at another T, as a
    still (B, 3, H, W), or with a dynamic axis; batch = the engine's."""
    from edgeav.contract import InputContract
    from edgeav.errors import ExportError, ModelError
    from edgeav.export.trt_builder import check_static_inputs
    from edgeav.runtime.trt_runner import check_engine_shapes

    clip = _clip_contract(8)
    assert check_engine_shapes(_engine_shapes((1, 8, 3, 48, 48)), clip, "e.engine") == 1
    assert check_engine_shapes(_engine_shapes((4, 8, 3, 48, 48), batch=4), clip, "e.engine") == 4
    with pytest.raises(
        ModelError,
        match=r"input 'image' is \(1, 4, 3, 48, 48\), the contract says \(1, 8, 3, 48, 48\) "
        r"\(8 frames of 48x48\)",
    ):
        check_engine_shapes(_engine_shapes((1, 4, 3, 48, 48)), clip, "e.engine")
    with pytest.raises(ModelError, match=r"input 'image' is \(1, 3, 48, 48\)"):
        check_engine_shapes(_engine_shapes((1, 3, 48, 48)), clip, "e.engine")
    with pytest.raises(ModelError, match=r"dynamic axis \('image' is \(-1, 8, 3, 48, 48\)\).*without --dynamic-batch"):
        check_engine_shapes(_engine_shapes((-1, 8, 3, 48, 48)), clip, "e.engine")
    shapes = _engine_shapes((1, 8, 3, 48, 48))
    del shapes["logits_image"]
    with pytest.raises(ModelError, match=r"engine lacks tensor\(s\) \['logits_image'\]"):
        check_engine_shapes(shapes, clip, "e.engine")
    still = InputContract(
        audio=clip.audio, image=clip.image.model_copy(update={"n_frames": 1, "layout": "NCHW", "frame_rate_hz": None})
    )
    assert check_engine_shapes(_engine_shapes((1, 3, 48, 48)), still, "e.engine") == 1  # T = 1 unchanged
    check_static_inputs({"audio": (1, 16_000), "image": (1, 8, 3, 48, 48), "mask": (1, 2)}, "m.onnx")
    with pytest.raises(ExportError, match=r"m.onnx: input 'image' has a dynamic shape \(-1, 8, 3, 48, 48\)"):
        check_static_inputs({"audio": (1, 16_000), "image": (-1, 8, 3, 48, 48), "mask": (1, 2)}, "m.onnx")


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_without_tensorrt_export_engine_and_backend_say_so(tmp_path: Path) -> None:
    from edgeav.contract import InputContract
    from edgeav.export.tensorrt import require_tensorrt
    from edgeav.runtime.backends import create_backend

    with pytest.raises(DeviceError, match="TensorRT is not installed here"):
        require_tensorrt(load_profile("jetson-orin-nx"))
    engine = EngineCache(tmp_path).store(make_key(SHA, "int8", "10.3.0", ORIN), b"engine")
    with pytest.raises(DeviceError, match="TensorRT is not installed here"):
        create_backend("tensorrt", engine, InputContract())


def test_export_engine_on_a_cpu_profile_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from edgeav.cli import main

    code = main(["export", str(tmp_path / "x.pt"), "--out", str(tmp_path / "b"), "--engine", "--device", "cpu"])
    assert code != 0 and "--engine builds a TensorRT engine" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
def test_real_engine_build_and_run(tmp_path: Path) -> None:  # pragma: no cover - needs a GPU with TensorRT
    if not _has_tensorrt():
        pytest.skip("TensorRT is not installed here (it ships with JetPack / NVIDIA's wheels)")
    pytest.importorskip("torch")
    import numpy as np
    from _export_models import TINY_ARCH

    from edgeav.contract import AudioContract, ImageContract, InputContract
    from edgeav.export.onnx_export import export_onnx, onnx_outputs
    from edgeav.export.tensorrt import build_engine
    from edgeav.runtime.trt_runner import create_backend
    from edgeav.train.models import build_model, example_inputs

    contract = InputContract(audio=AudioContract(window_s=1.0), image=ImageContract(height_px=32, width_px=32))
    model = build_model({**TINY_ARCH, "contract": contract.model_dump(mode="json")}, 3)
    onnx_path = export_onnx(model, tmp_path / "model_fp32.onnx")  # static shapes, batch 1
    cache = EngineCache(tmp_path / "cache")
    built = build_engine(onnx_path, load_profile("x86-cuda"), "fp32", cache=cache)
    again = build_engine(onnx_path, load_profile("x86-cuda"), "fp32", cache=cache)
    assert again.from_cache and again.path == built.path and not built.from_cache
    a, i, m = (t.numpy() for t in example_inputs(contract, 1))
    with create_backend(built.path, contract) as be:
        out = be.infer(a, i, m)
    ref = onnx_outputs(onnx_path, [{"audio": a, "image": i, "mask": m}])[0]
    assert np.abs(out["logits"] - ref["logits"]).max() < 1e-2


# ------------------------------------------------------- the builder, the cache and the engine check, on a fake TensorRT
# tests/_fake_tensorrt.py stands in for the `tensorrt` module (TensorRT 10 API); the ONNX files and ONNX Runtime are real.


def _tiny_onnx(path: Path, qdq: bool = False, seed: int = 0) -> Path:
    """audio (1, 8), image (1, 3, 2, 2), mask (1, 2) -> logits_audio = audio @ Wa, logits_image = flat(image) @ Wi,
    logits = their sum (3 classes); `qdq` puts int8 QuantizeLinear/DequantizeLinear on the audio (an int8 model)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "wa"),
        numpy_helper.from_array(rng.normal(size=(12, 3)).astype(np.float32), "wi"),
        numpy_helper.from_array(np.array([1, 12], dtype=np.int64), "flat"),
    ]
    nodes = []
    audio = "audio"
    if qdq:
        inits += [
            numpy_helper.from_array(np.array(0.02, dtype=np.float32), "s"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["audio", "s", "z"], ["aq"]),
            helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["adq"]),
        ]
        audio = "adq"
    nodes += [
        helper.make_node("MatMul", [audio, "wa"], ["logits_audio"]),
        helper.make_node("Reshape", ["image", "flat"], ["imf"]),
        helper.make_node("MatMul", ["imf", "wi"], ["logits_image"]),
        helper.make_node("Add", ["logits_audio", "logits_image"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 8]),
        helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 2, 2]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2]),
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("logits", "logits_audio", "logits_image")
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(n: int = 6) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(1)
    return [
        {
            "audio": rng.normal(size=(1, 8)).astype(np.float32),
            "image": rng.normal(size=(1, 3, 2, 2)).astype(np.float32),
            "mask": np.ones((1, 2), np.float32),
        }
        for _ in range(n)
    ]


def test_a_half_written_cache_entry_is_rebuilt_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine without its sidecar (the old write order, killed between the two), a truncated engine, and a
    sidecar whose engine never arrived all count as absent: the next build replaces them."""
    import _fake_tensorrt

    from edgeav.export.trt_builder import build_engine
    from edgeav.trt_cache import sidecar_path

    trt = _fake_tensorrt.install(monkeypatch, gpu=ORIN)
    onnx_path, cache, orin = (
        _tiny_onnx(tmp_path / "m.onnx"),
        EngineCache(tmp_path / "engines"),
        load_profile("jetson-orin-nx"),
    )
    first = build_engine(onnx_path, orin, "fp32", cache=cache)
    assert build_engine(onnx_path, orin, "fp32", cache=cache).from_cache and len(trt.builds) == 1

    sidecar_path(first.path).unlink()  # engine without sidecar
    again = build_engine(onnx_path, orin, "fp32", cache=cache)
    assert not again.from_cache and len(trt.builds) == 2 and check_engine(again.path, "10.3.0", ORIN) == again.key

    again.path.write_bytes(again.path.read_bytes()[:5])  # engine cut short: its sha256 is not the sidecar's
    assert not build_engine(onnx_path, orin, "fp32", cache=cache).from_cache and len(trt.builds) == 3

    first.path.unlink()  # sidecar without engine
    assert not build_engine(onnx_path, orin, "fp32", cache=cache).from_cache and len(trt.builds) == 4
    assert build_engine(onnx_path, orin, "fp32", cache=cache).from_cache and len(trt.builds) == 4


def test_cache_writes_the_sidecar_before_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeav import trt_cache

    written: list[str] = []
    real = trt_cache.atomic_write_bytes
    monkeypatch.setattr(
        trt_cache, "atomic_write_bytes", lambda p, data: (written.append(Path(p).suffix), real(p, data))[1]
    )
    EngineCache(tmp_path).store(make_key(SHA, "int8", "10.3.0", ORIN), b"engine")
    assert written == [".json", ".engine"]


def test_precision_builds_a_different_engine_or_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 from an fp32 model: a weakly typed network with the FP16 builder flag (TensorRT 10); fp32 clears TF32;
    int8 from the Q/DQ model: strongly typed, no flags; int8 from an fp32 model: refused with what can be built."""
    import _fake_tensorrt

    from edgeav.errors import ExportError
    from edgeav.export.trt_builder import build_engine, build_mode

    _fake_tensorrt.install(monkeypatch, gpu=ORIN)
    fp32, int8 = _tiny_onnx(tmp_path / "model_fp32.onnx"), _tiny_onnx(tmp_path / "model_int8.onnx", qdq=True)
    cache, orin = EngineCache(tmp_path / "engines"), load_profile("jetson-orin-nx")
    e32 = _fake_tensorrt.engine_info(build_engine(fp32, orin, "fp32", cache=cache).path)
    e16 = _fake_tensorrt.engine_info(build_engine(fp32, orin, "fp16", cache=cache).path)
    e8 = _fake_tensorrt.engine_info(build_engine(int8, orin, "int8", cache=cache).path)
    assert e32 == {"strongly_typed": True, "flags": [], "n": 1}  # TF32 cleared
    assert e16 == {"strongly_typed": False, "flags": ["BuilderFlag.FP16", "BuilderFlag.TF32"], "n": 2}
    assert e8 == {"strongly_typed": True, "flags": ["BuilderFlag.TF32"], "n": 3}
    with pytest.raises(ExportError) as e:
        build_engine(fp32, orin, "int8", cache=cache)
    assert str(e.value) == (
        "model_fp32.onnx computes in fp32: --precision int8 cannot be built from it; from this file: "
        "--precision fp32 or fp16 (TensorRT 10's FP16 builder flag); int8 needs the Q/DQ "
        "model_int8.onnx of `edgeav export --int8`"
    )
    with pytest.raises(ExportError, match="model_int8.onnx computes in int8: --precision fp16 cannot be built"):
        build_engine(int8, orin, "fp16", cache=cache)
    with pytest.raises(
        ExportError,
        match=r"from this file: --precision fp32; fp16 needs model_fp16.onnx .*"
        r"\(TensorRT 11.0.0 has no FP16 flag\)",
    ):
        build_mode("fp16", "fp32", "11.0.0", "model_fp32.onnx")
    assert len(list(cache.root.glob("*.engine"))) == 3  # the refusals left nothing in the cache


def _run_like_onnxruntime(offset: float = 0.0):  # noqa: ANN202
    """A fake engine runner: ONNX Runtime's outputs of the file the engine came from, plus `offset` on logits."""
    from edgeav.export.onnx_export import onnx_outputs

    def run(engine_path: Path, contract, feeds):  # noqa: ANN001, ANN202
        outs = onnx_outputs(engine_path.parent.parent / "m.onnx", feeds)
        for o in outs:
            o["logits"] = o["logits"] + offset * (o["logits"] == o["logits"].min())  # lifts the lowest logit
        return outs

    return run


def test_engine_is_compared_with_onnxruntime_after_the_build_and_refused_when_it_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import _fake_tensorrt

    from edgeav.errors import ExportError
    from edgeav.export.tensorrt import build_checked_engine
    from edgeav.schema.export import ExportConfig

    trt = _fake_tensorrt.install(monkeypatch, gpu=ORIN)
    onnx_path, cache, orin = (
        _tiny_onnx(tmp_path / "m.onnx"),
        EngineCache(tmp_path / "engines"),
        load_profile("jetson-orin-nx"),
    )
    build = functools.partial(
        build_checked_engine,
        onnx_path,
        orin,
        "fp32",
        feeds=_feeds(),
        cfg=ExportConfig(),
        cache=cache,
        contract=object(),
    )
    built, check = build(run_engine=_run_like_onnxruntime())
    assert check is not None and check.passed and check.parity["n"] == 6 and check.parity["max_abs_diff"]["logits"] == 0
    with pytest.raises(ExportError) as e:  # an engine whose lowest logit becomes the top one on every window
        build(force=True, run_engine=_run_like_onnxruntime(offset=100.0))
    msg = str(e.value)
    assert msg.startswith("TensorRT fp32 engine of m.onnx refused: its outputs differ from ONNX Runtime's on 6 windows")
    assert "max |logits diff|" in msg and "top-1 agreement 0.00 % < 100 %" in msg and "\n" not in msg
    assert cache.lookup(built.key) is None and not built.path.exists()  # evicted: never reused
    assert len(trt.builds) == 2


def test_int8_engine_gate_is_the_export_accuracy_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """int8: agreement with ONNX Runtime's Q/DQ model decides, diffs are reported; with test windows the INT8
    accuracy gate (max_drop_points) applies to the engine's predictions."""
    import _fake_tensorrt

    from edgeav.errors import ExportError
    from edgeav.export.onnx_export import onnx_outputs
    from edgeav.export.tensorrt import build_checked_engine

    _fake_tensorrt.install(monkeypatch, gpu=ORIN)
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", qdq=True)
    cache, orin, feeds = EngineCache(tmp_path / "engines"), load_profile("jetson-orin-nx"), _feeds(8)
    truth = [int(o["logits"].argmax()) for o in onnx_outputs(onnx_path, feeds)]
    test = list(zip(feeds, truth))
    fp32_figures = {"accuracy": 100.0, "per_class_recall": {c: 100.0 for c in "abc" if "abc".index(c) in truth}}
    build = functools.partial(
        build_checked_engine,
        onnx_path,
        orin,
        "int8",
        feeds=feeds,
        cache=cache,
        contract=object(),
        test_samples=test,
        labels=list("abc"),
        reference_metrics=fp32_figures,
    )
    _, check = build(run_engine=_run_like_onnxruntime())
    assert check is not None and check.passed and check.gate["accuracy_drop_points"] == 0.0
    assert check.parity["max_abs_diff_limit"] is None  # reported, not gated
    with pytest.raises(ExportError, match="accuracy fell 100.00 points"):
        build(force=True, run_engine=_run_like_onnxruntime(offset=100.0))


@pytest.mark.parametrize("args", [[], ["--no-parity", "--parity-feeds", "w.npz"]])
def test_engine_command_wants_parity_windows_or_an_explicit_no(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from edgeav.export.tensorrt import main

    assert main([str(tmp_path / "m.onnx"), "--precision", "fp32", *args]) != 0
    assert "give --parity-feeds NPZ" in capsys.readouterr().err


def test_export_engine_is_built_checked_and_recorded_in_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edgeav export --int8 --engine` on a TensorRT profile (fake TensorRT, a fake engine runner that answers as
    ONNX Runtime does on the engine's source file): the bundle carries the engine, its sidecar and the check's
    figures (parity on the validation windows, the INT8 accuracy gate on the test split)."""
    pytest.importorskip("torch", reason="export needs torch")
    import json as json_mod

    import _fake_tensorrt
    from _export_models import export_args, make_synthetic_data, train_checkpoint

    from edgeav.export import tensorrt as export_trt
    from edgeav.export.cli import run_export
    from edgeav.export.onnx_export import onnx_outputs
    from edgeav.trt_cache import read_sidecar

    runs: list[int] = []

    def run(engine_path, contract, feeds):  # noqa: ANN001, ANN202
        runs.append(len(feeds))
        return onnx_outputs(read_sidecar(engine_path)["build"]["onnx"], feeds, disable_optimizations=True)

    monkeypatch.setattr(export_trt, "run_engine_outputs", run)
    data = make_synthetic_data(tmp_path / "data")
    ckpt = train_checkpoint(tmp_path / "tiny.pt", data, steps=15, cache_dir=tmp_path / "cache")
    _fake_tensorrt.install(monkeypatch, gpu=GpuInfo("NVIDIA H200", "9.0"))  # after torch's imports: it probes tensorrt
    monkeypatch.setenv("EDGEAV_ENGINE_CACHE", str(tmp_path / "engines"))
    out = tmp_path / "bundle"
    args = export_args(ckpt, data, out, int8=True, device="x86-cuda", engine=True, max_drop=100.0, max_class_drop=100.0)
    result = run_export(args)
    assert {"engine_int8.engine", "engine_int8_key.json"} <= {p.name for p in out.iterdir()}
    check = json_mod.loads((out / "manifest.json").read_text())["extra"]["engine"]["check"]
    assert check["passed"] and check["precision"] == "int8" and check["parity"]["top1_agreement"] == 100.0
    assert check["gate"]["accuracy_drop_points"] == 0.0 and len(runs) == 2  # validation windows, then test windows
    assert runs[1] == result["test_windows"]
