"""The export chain for a clip model (T > 1 frames per window), end to end on a tiny model and a SYNTHETIC video set.

A video_tcn picture branch over 8 frames at 25 Hz of 48 px frames, cropped to the synthetic set's mouth box (where
its motion is), is trained for a few steps; `edgeav export --int8` writes a bundle whose ONNX takes image
(1, 8, 3, 48, 48) uint8, passes parity against PyTorch, calibrates on (1, T, 3, H, W) feeds and runs the gate on the
test split; the bundle's input check refuses another T; `edgeav bench` feeds clips; `edgeav run` replays the
synthetic stream through GStreamer into detections, every window with all its frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="export needs torch (pip install 'edgeav[train,export]')")
pytest.importorskip("onnxruntime", reason="export needs onnxruntime (pip install 'edgeav[export]')")
pytest.importorskip("onnxslim", reason="export needs onnxslim (pip install 'edgeav[export]')")
pytest.importorskip("av", reason="the synthetic video set is written with PyAV")
onnx = pytest.importorskip("onnx")

from _export_models import export_args, train_checkpoint  # noqa: E402

from edgeav.cli import main  # noqa: E402

T, HW, RATE_HZ = 8, 48, 25.0
CLIP_ARCH = {
    "name": "export-test-clip",
    "audio_backbone": "audio_cnn",
    "image_backbone": "video_tcn",
    "head": "concat",
    "dropout": 0.0,
    "image_kwargs": {"channels": [8, 16], "embed_dim": 16, "temporal_layers": 1, "temporal_kernel": 3},
}
CLIP_DATA = {
    "kind": "video",
    "window_s": 1.0,
    "hop_s": 1.0,
    "image_size_px": HW,
    "frames_per_window": T,
    "frame_rate_hz": RATE_HZ,
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 classes x 4 clips of 2 s (one test clip per class, two 1 s windows each), a checkpoint, an INT8 bundle."""
    from edgeav.train.synthetic_video import MOTION_BOX, make_video_set

    root = tmp_path_factory.mktemp("clip")
    syn = make_video_set(root / "syn", n_classes=3, per_class=4, seconds=2.0, size_px=64)
    data = syn / "videos"
    ckpt = train_checkpoint(
        root / "clip.pt", data, data=CLIP_DATA, arch=CLIP_ARCH, steps=30, cache_dir=root / "cache", roi=MOTION_BOX
    )
    out = root / "bundle"
    # the gate's limits are wide: 6 test windows of a model trained for 30 steps; what is checked is that it ran
    code = main(
        [
            "export",
            str(ckpt),
            "--out",
            str(out),
            "--int8",
            "--calib-data",
            str(data),
            "--device",
            "cpu",
            "--max-drop",
            "100",
            "--max-class-drop",
            "100",
        ]
    )
    assert code == 0
    return {"root": root, "syn": syn, "data": data, "ckpt": ckpt, "bundle": out}


def _input_dims(path: Path) -> dict[str, tuple[int, list[int]]]:
    g = onnx.load(str(path)).graph
    return {
        i.name: (i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in g.input
    }


def test_int8_bundle_of_a_clip_model(clip: dict[str, Path]) -> None:
    from edgeav.train.synthetic_video import MOTION_BOX

    out = clip["bundle"]
    m = json.loads((out / "manifest.json").read_text())
    image = m["contract"]["image"]
    assert image["layout"] == "NTCHW" and image["n_frames"] == T and image["frame_rate_hz"] == RATE_HZ
    assert tuple(image["roi"]) == MOTION_BOX and (image["height_px"], image["width_px"]) == (HW, HW)
    assert m["extra"]["precisions"] == ["int8", "fp32"]
    for name in ("model_fp32.onnx", "model_int8.onnx"):  # static T in both graphs, uint8 frames
        dims = _input_dims(out / name)
        assert dims["image"] == (onnx.TensorProto.UINT8, [1, T, 3, HW, HW]), name
        assert dims["audio"] == (onnx.TensorProto.FLOAT, [1, 16_000]) and dims["mask"][1] == [1, 2]
        inner = json.loads({p.key: p.value for p in onnx.load(str(out / name)).metadata_props}["edgeav.manifest"])
        assert inner["contract"]["image"]["n_frames"] == T and inner["contract"]["image"]["layout"] == "NTCHW"
    parity = m["metrics"]["parity_fp32"]
    assert parity["passed"] and parity["max_abs_diff"]["logits"] <= 1e-4 and parity["top1_agreement"] == 100.0
    gate = m["metrics"]["gate"]
    assert gate["split"] == "test" and gate["attempts"] and m["metrics"]["int8"]["n"] == m["metrics"]["fp32"]["n"] == 6
    cal = m["extra"]["int8"]["calibration"]
    assert cal["image_shape"] == [1, T, 3, HW, HW]  # one (1, T, 3, H, W) feed per training window
    assert cal["feeds_used"] == cal["windows_used"] > 0 and min(cal["per_class"].values()) > 0


def test_bundle_refuses_another_frame_count(clip: dict[str, Path]) -> None:
    """The bundle's input check compares the 5-D image input with the contract: another T, or a still, is refused."""
    from edgeav.bundle import check_onnx_inputs, verify_bundle
    from edgeav.contract import InputContract
    from edgeav.errors import BundleError

    contract = verify_bundle(clip["bundle"]).manifest.contract
    model = clip["bundle"] / "model_int8.onnx"
    check_onnx_inputs(model, contract)
    four = InputContract.model_validate(
        {**contract.model_dump(), "image": {**contract.image.model_dump(exclude={"layout"}), "n_frames": 4}}
    )
    with pytest.raises(
        BundleError,
        match=rf"input 'image' has shape \(1, {T}, 3, {HW}, {HW}\), the contract says "
        rf"\('B', 4, 3, {HW}, {HW}\)",
    ):
        check_onnx_inputs(model, four)
    still = InputContract.model_validate(
        {
            **contract.model_dump(),
            "image": {**contract.image.model_dump(exclude={"layout", "frame_rate_hz"}), "n_frames": 1},
        }
    )
    with pytest.raises(BundleError, match=rf"the contract says \('B', 3, {HW}, {HW}\)"):
        check_onnx_inputs(model, still)


def test_fp16_export_of_a_clip_model(clip: dict[str, Path]) -> None:
    from edgeav.export.cli import run_export

    out = clip["root"] / "fp16"
    result = run_export(export_args(clip["ckpt"], clip["data"], out, fp16=True, device="jetson-orin-nx"))
    assert result["precisions"] == ["fp32", "fp16"] and result["parity_fp16"]["top1_agreement"] >= 99.0
    assert result["parity_fp16"]["max_abs_diff"] <= 5e-2
    assert _input_dims(out / "model_fp16.onnx")["image"] == (onnx.TensorProto.UINT8, [1, T, 3, HW, HW])


def test_bench_feeds_clips(clip: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(clip["bundle"]), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for name in ("pytorch_fp32", "ort_fp32", "ort_int8"):
        assert r["backends"][name]["p50_ms"] > 0, name


def test_adaptive_pool_with_odd_sizes_exports_as_slices(tmp_path: Path) -> None:
    """video_tcn pools a frame's map to 2x2; a region of interest's map is often odd (5x6 for train/grid.yaml's mouth
    box at 160 px), which the TorchScript exporter refuses. The exported copy averages the same cells."""
    import warnings

    import numpy as np
    import torch
    from torch import nn

    from edgeav.export.onnx_export import exportable_copy

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    twin, swapped = exportable_copy(net)
    assert swapped == ["1"] and isinstance(net[1], nn.AdaptiveAvgPool2d)  # the model itself is not changed
    x = torch.randn(2, 3, 5, 7)  # (B, 3, h, w): 5x7 pooled to 2x2, cells of unequal size that overlap
    with torch.no_grad():
        assert torch.allclose(net(x), twin(x), atol=1e-6)
        assert torch.allclose(
            nn.AdaptiveAvgPool3d((1, 2, 3))(x[:, None]),
            exportable_copy(nn.Sequential(nn.AdaptiveAvgPool3d((1, 2, 3))))[0](x[:, None]),
            atol=1e-6,
        )
    path = tmp_path / "pool.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation note; the static sizes' tracer note
        torch.onnx.export(
            twin, (x,), str(path), input_names=["x"], opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}}
        )  # a symbolic batch: only h, w are baked in
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]  # (2, 3)
    assert np.abs(got - net(x).detach().numpy()).max() < 1e-5
    with pytest.raises(Exception, match="adaptive_avg_pool2d, output size that are not factor of input size"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(tmp_path / "plain.onnx"), opset_version=17, dynamo=False)


@pytest.mark.gstreamer
def test_replay_of_a_clip_stream_gives_detections(clip: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`edgeav run` on the synthetic stream (3 test clips of 2 s): the source is resampled to the contract's 25 Hz,
    every 1 s window gets its 8 frames (none missing), and the windows become detections scored against the CSV."""
    pytest.importorskip("gi", reason="replay needs PyGObject")
    import logging

    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        stream = clip["syn"] / "stream.mp4"
        code = main(
            [
                "run",
                "--bundle",
                str(clip["bundle"]),
                "--source",
                stream.resolve().as_uri(),
                "--ground-truth",
                str(clip["syn"] / "stream.csv"),
                "--json",
                "--set",
                "runtime.postprocess.threshold=0.34",
            ]
        )
        out = capsys.readouterr().out
    finally:  # main() installs a stderr handler on the root logger
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
    assert code == 0
    r = json.loads(out)
    assert r["model_role"] == "model_int8" and r["media_s"] == pytest.approx(6.0, abs=0.3)
    assert r["windows"] >= 5 and r["windows_inferred"] == r["windows"]
    assert r["windows_missing_image"] == 0 and r["windows_missing_audio"] == 0  # all T frames found per window
    assert r["detections"] >= 1 and r["segments"] == 3 and r["segments_scored"] == 3
    assert all("image" in d["modalities"] for d in r["detection_list"])
