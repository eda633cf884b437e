"""TensorRT: the engine cache key, atomic cache writes, the refusal of engines from another TensorRT/GPU (with the
command that rebuilds them), and modules that import where TensorRT is absent.

The version and GPU facts are given explicitly (as `trt.__version__` and cuda-python would report them); no TensorRT
build is faked. Real builds need an NVIDIA GPU with TensorRT: those tests are marked `gpu` and skip with a reason.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest

from edgeav.devices import load_profile
from edgeav.errors import BundleError, DeviceError
from edgeav.runtime.trt_runner import EngineCache, GpuInfo, check_engine, make_key, rebuild_command

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
    assert base == make_key(SHA, "int8", "10.3.0", ORIN) and base.file_name == make_key(SHA, "int8", "10.3.0", ORIN).file_name
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


@pytest.mark.parametrize("version, gpu, says", [
    ("10.7.0", ORIN, "TensorRT 10.3.0, this machine has 10.7.0"),
    ("11.0.0", ORIN, "TensorRT 10.3.0, this machine has 11.0.0"),
    ("10.3.0", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), "GPU 'Orin (nvgpu)', this machine has 'NVIDIA H100 80GB HBM3'"),
    ("10.3.0", GpuInfo("Orin (nvgpu)", "8.9"), "compute capability 8.7, this GPU is 8.9"),
])
def test_engine_from_another_trt_or_gpu_is_refused_with_the_rebuild_command(
        tmp_path: Path, version: str, gpu: GpuInfo, says: str) -> None:
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
    assert rebuild_command("m.onnx", "int8", "jetson-agx-orin", 1).endswith("--device jetson-agx-orin --dla-core 1")


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

    return InputContract(audio=AudioContract(window_s=1.0),
                         image=ImageContract(height_px=48, width_px=48, n_frames=n_frames, frame_rate_hz=25.0))


def _engine_shapes(image: tuple[int, ...], batch: int = 1) -> dict[str, tuple[int, ...]]:
    """I/O shapes as `ICudaEngine.get_tensor_shape` reports them for a static engine of 3 classes."""
    return {"audio": (batch, 16_000), "image": image, "mask": (batch, 2),
            "logits": (batch, 3), "logits_audio": (batch, 3), "logits_image": (batch, 3)}


def test_engine_shapes_of_a_clip_model_are_checked_against_the_contract() -> None:
    """A clip model's engine takes image (B, T, 3, H, W): accepted at the contract's T, refused at another T, as a
    still (B, 3, H, W), or with a dynamic axis; batch = the engine's."""
    from edgeav.contract import InputContract
    from edgeav.errors import ExportError, ModelError
    from edgeav.runtime.trt_runner import check_engine_shapes, check_static_inputs

    clip = _clip_contract(8)
    assert check_engine_shapes(_engine_shapes((1, 8, 3, 48, 48)), clip, "e.engine") == 1
    assert check_engine_shapes(_engine_shapes((4, 8, 3, 48, 48), batch=4), clip, "e.engine") == 4
    with pytest.raises(ModelError, match=r"input 'image' is \(1, 4, 3, 48, 48\), the contract says \(1, 8, 3, 48, 48\) "
                                         r"\(8 frames of 48x48\)"):
        check_engine_shapes(_engine_shapes((1, 4, 3, 48, 48)), clip, "e.engine")
    with pytest.raises(ModelError, match=r"input 'image' is \(1, 3, 48, 48\)"):
        check_engine_shapes(_engine_shapes((1, 3, 48, 48)), clip, "e.engine")
    with pytest.raises(ModelError, match=r"dynamic axis \('image' is \(-1, 8, 3, 48, 48\)\).*without --dynamic-batch"):
        check_engine_shapes(_engine_shapes((-1, 8, 3, 48, 48)), clip, "e.engine")
    shapes = _engine_shapes((1, 8, 3, 48, 48))
    del shapes["logits_image"]
    with pytest.raises(ModelError, match=r"engine lacks tensor\(s\) \['logits_image'\]"):
        check_engine_shapes(shapes, clip, "e.engine")
    still = InputContract(audio=clip.audio, image=clip.image.model_copy(update={"n_frames": 1, "layout": "NCHW",
                                                                                  "frame_rate_hz": None}))
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
    from edgeav.export.onnx_export import onnx_outputs, export_onnx
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
