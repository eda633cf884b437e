"""`edgeav export` and `edgeav bench` end to end on a small trained checkpoint and its SYNTHETIC data set.

What a user sees: a bundle that passes parity and the INT8 gate, with the figures in its manifest and ONNX metadata;
refusals (no calibration data, INT8 on a Nano, a failed parity check or gate) that exit non-zero and leave nothing
at --out; a tampered bundle refused; `edgeav bench --json` with its keys.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="export needs torch (pip install 'edgeav[train,export]')")
pytest.importorskip("onnxruntime", reason="export needs onnxruntime (pip install 'edgeav[export]')")
pytest.importorskip("onnxslim", reason="export needs onnxslim (pip install 'edgeav[export]')")
pytest.importorskip("soundfile", reason="the synthetic data set is written with soundfile")
onnx = pytest.importorskip("onnx")

from _export_models import export_args, make_synthetic_data, train_checkpoint  # noqa: E402

from edgeav.cli import main  # noqa: E402
from edgeav.errors import ExportError  # noqa: E402
from edgeav.schema.export import ExportConfig  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    data = make_synthetic_data(root / "data")
    ckpt = train_checkpoint(root / "tiny.pt", data, steps=15, cache_dir=root / "cache")
    return {"root": root, "data": data, "ckpt": ckpt}


def _args(setup: dict[str, Path], out: Path, **kw: object) -> argparse.Namespace:
    return export_args(setup["ckpt"], setup["data"], out, **kw)


def _nothing_at(out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    assert not out.with_name(out.name + ".tar.gz").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary files left"


@pytest.fixture(scope="module")
def int8_bundle(setup: dict[str, Path]) -> tuple[Path, dict]:
    from edgeav.export.cli import run_export

    out = setup["root"] / "bundles" / "int8"
    result = run_export(_args(setup, out, int8=True))
    return out, result


def test_int8_export_passes_parity_and_gate(int8_bundle: tuple[Path, dict], setup: dict[str, Path]) -> None:
    out, result = int8_bundle
    assert result["precisions"] == ["int8", "fp32"] and result["gate"]["passed"]
    assert result["parity_fp32"]["max_abs_diff"] <= 1e-4 and result["parity_fp32"]["top1_agreement"] == 100.0
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.txt",
        "manifest.json",
        "model_fp32.onnx",
        "model_int8.onnx",
    ]
    with tarfile.open(out.with_name("int8.tar.gz")) as tf:
        assert "int8/model_int8.onnx" in tf.getnames()
    m = json.loads((out / "manifest.json").read_text())
    assert m["metrics"]["fp32"]["accuracy"] == pytest.approx(result["fp32_accuracy"])
    assert m["metrics"]["int8"]["n"] == result["test_windows"] > 0
    assert m["metrics"]["gate"]["split"] == "test"
    q = m["extra"]["int8"]
    assert q["form"] == "ort_u8s8" and q["activation_type"] == "uint8"  # the cpu profile's form
    assert q["calibration"]["split"] == "train" and q["calibration"]["stratified"]
    assert set(q["calibration"]["per_class"]) == set(m["labels"]) and min(q["calibration"]["per_class"].values()) > 0
    assert m["extra"]["float_nodes"] and all(n.startswith("/frontend/") for n in m["extra"]["float_nodes"])
    assert {"torch", "onnx", "onnxruntime", "onnxslim", "edgeav"} <= set(m["extra"]["tool_versions"])
    assert m["extra"]["target_profile"] == "cpu"
    # the ONNX files carry the manifest, opset 17, static batch 1, and a front end named /frontend/
    fp32 = onnx.load(str(out / "model_fp32.onnx"))
    meta = {p.key: p.value for p in fp32.metadata_props}
    inner = json.loads(meta["edgeav.manifest"])
    assert inner["labels"] == m["labels"] and inner["precision"] == "fp32"
    assert inner["parent_sha256"] == m["extra"]["source_checkpoint"]["sha256"]
    assert next(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim][0] == 1
    assert any(n.name.startswith("/frontend/") and n.op_type == "Conv" for n in fp32.graph.node)  # STFT
    int8 = onnx.load(str(out / "model_int8.onnx"))
    i8 = json.loads({p.key: p.value for p in int8.metadata_props}["edgeav.manifest"])
    assert i8["precision"] == "int8" and i8["parent_sha256"] == m["extra"]["files"]["model_fp32"]["sha256"]


@pytest.mark.slow  # a second full INT8 export; the forms themselves are tested in test_export_quantize.py
def test_tensorrt_target_gets_the_symmetric_form(setup: dict[str, Path]) -> None:
    from edgeav.export.cli import run_export

    out = setup["root"] / "bundles" / "orin"
    result = run_export(_args(setup, out, int8=True, device="jetson-orin-nx", calib_windows=24))
    m = json.loads((out / "manifest.json").read_text())
    assert m["extra"]["int8"]["form"] == "trt_symmetric" and m["extra"]["target_profile"] == "jetson-orin-nx"
    assert "simulated" in m["extra"]["int8"]["evaluated_with"]
    assert m["extra"]["int8"]["calibration"]["feeds_used"] == 24 == result["calibration_feeds"]


def test_int8_without_calibration_data_is_refused(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "bundles" / "nocalib"
    code = main(["export", str(setup["ckpt"]), "--out", str(out), "--int8"])
    assert code != 0
    assert "INT8 needs calibration data: pass --calib-data" in capsys.readouterr().err
    _nothing_at(out)


def test_int8_on_a_nano_names_what_it_can_do(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "bundles" / "nano"
    code = main(
        [
            "export",
            str(setup["ckpt"]),
            "--out",
            str(out),
            "--int8",
            "--calib-data",
            str(setup["data"]),
            "--device",
            "jetson-nano",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "jetson-nano has no fast INT8" in err and "fp16" in err
    _nothing_at(out)


def test_parity_failure_writes_nothing(setup: dict[str, Path]) -> None:
    from edgeav.export.cli import run_export

    out = setup["root"] / "bundles" / "parity"
    # the real ONNX Runtime vs PyTorch difference (~1e-6) against a tolerance no float computation meets
    with pytest.raises(ExportError, match=r"FP32 ONNX parity check failed on \d+ samples: max \|logits diff\|"):
        run_export(_args(setup, out), ExportConfig(parity_max_abs_diff=1e-12, parity_rel_diff=0.0))
    _nothing_at(out)


def _int8_all_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the INT8 model's evaluation predict the next class for every window (the FP32 one stays real)."""
    import numpy as np

    from edgeav.export import gate

    real = gate.evaluate_onnx

    def int8_all_wrong(model_path, samples, labels, **kw):  # noqa: ANN001, ANN003
        if Path(model_path).name != "model_int8.onnx":
            return real(model_path, samples, labels, **kw)
        samples = list(samples)
        m = real(model_path, samples, labels, **kw)
        y = np.concatenate([np.asarray(lab).reshape(-1) for _, lab in samples])
        pred = (y + 1) % len(labels)  # every window predicted as the next class
        return gate.metrics_from_predictions(y, pred, labels) if m.n else m

    monkeypatch.setattr(gate, "evaluate_onnx", int8_all_wrong)


GATE_REFUSAL = r"refused by the accuracy gate: accuracy fell [\d.]+ points \([\d.]+ -> 0.00 %\)"


def test_gate_failure_writes_nothing(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """An INT8 model that gets every window wrong is refused, and nothing is written."""
    from edgeav.export.cli import run_export

    _int8_all_wrong(monkeypatch)
    out = setup["root"] / "bundles" / "gate"
    cfg = ExportConfig(calib_windows=24, sensitivity_retry=False)
    with pytest.raises(ExportError, match=GATE_REFUSAL):
        run_export(_args(setup, out, int8=True), cfg)
    _nothing_at(out)


@pytest.mark.slow
def test_gate_failure_after_the_sensitivity_retry(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgeav.export.cli import run_export

    _int8_all_wrong(monkeypatch)
    out = setup["root"] / "bundles" / "gate_retry"
    with pytest.raises(ExportError, match=GATE_REFUSAL):
        run_export(_args(setup, out, int8=True, calib_windows=24))
    assert "running the sensitivity check" in caplog.text
    _nothing_at(out)


def test_fp16_export_with_parity_report(setup: dict[str, Path]) -> None:
    from edgeav.export.cli import run_export

    out = setup["root"] / "bundles" / "fp16"
    result = run_export(_args(setup, out, fp16=True, device="jetson-orin-nx"))
    m = json.loads((out / "manifest.json").read_text())
    rep = m["metrics"]["parity_fp16"]
    assert rep["passed"] and rep["top1_agreement"] >= 99.0 and 0 < rep["max_abs_diff"]["logits"] <= 5e-2
    assert result["precisions"] == ["fp32", "fp16"]
    assert m["metrics"]["fp32"]["split"] == "test" and m["metrics"]["fp32"]["n"] == result["test_windows"] > 0
    half = onnx.load(str(out / "model_fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # inputs keep the contract
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)


def test_existing_out_is_refused(
    int8_bundle: tuple[Path, dict], setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = int8_bundle
    before = (out / "manifest.json").read_bytes()
    code = main(["export", str(setup["ckpt"]), "--out", str(out)])
    assert code != 0 and "already exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before


def test_bench_json(int8_bundle: tuple[Path, dict], setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = int8_bundle
    assert main(["bench", str(out), "--json", "--threads", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["machine"]["threads"] == 1  # every backend ran with the process's thread plan, not the libraries' default
    assert {
        "bundle",
        "profile",
        "backends",
        "int8_vs_fp32_p50_ratio",
        "target_ratio",
        "target_met",
        "machine",
        "accuracy",
    } <= set(r)
    for name in ("pytorch_fp32", "ort_fp32", "ort_int8"):
        b = r["backends"][name]
        assert {"p50_ms", "p95_ms", "throughput_per_s", "best_batch", "size_bytes", "peak_rss_mib"} <= set(b), name
        assert 0 < b["p50_ms"] <= b["p95_ms"] and b["throughput_per_s"] > 0 and b["peak_rss_mib"] > 0
    assert r["backends"]["ort_int8"]["size_bytes"] < r["backends"]["ort_fp32"]["size_bytes"]
    assert r["int8_vs_fp32_p50_ratio"] == pytest.approx(
        r["backends"]["ort_int8"]["p50_ms"] / r["backends"]["ort_fp32"]["p50_ms"], rel=1e-3
    )
    assert r["backends"]["ort_fp32"]["best_batch"] == 1  # a static-shape export only takes batch 1
    from edgeav.export.bench import one_line

    line = one_line(r)
    assert "\n" not in line and "ort_int8 p50" in line and "INT8/FP32 p50 ratio" in line


def test_tampered_bundle_is_refused(
    int8_bundle: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    out, _ = int8_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model_int8.onnx", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    assert main(["bench", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "model_int8.onnx" in err and "sha256" in err and "does not match" in err


def test_fp16_keeps_the_front_end_in_float32_on_silence(tmp_path: Path) -> None:
    """Silence: the mel power is clamped to the log floor (1e-10), which FP16 flushes to 0 (log -> -inf, NaN logits);
    the front end must stay float32 between its own nodes, not only inside them."""
    import numpy as np
    from _export_models import TINY_ARCH

    from edgeav.contract import AudioContract, ImageContract, InputContract
    from edgeav.export.onnx_export import compare_outputs, convert_fp16, export_onnx, onnx_outputs, torch_outputs
    from edgeav.train.models import build_model

    contract = InputContract(audio=AudioContract(window_s=1.0), image=ImageContract(height_px=32, width_px=32))
    model = build_model({**TINY_ARCH, "contract": contract.model_dump(mode="json")}, 3).eval()
    fp32 = export_onnx(model, tmp_path / "model_fp32.onnx")
    half, info = convert_fp16(fp32, tmp_path / "model_fp16.onnx")
    t = np.arange(16000) / 16000.0
    wave = np.where(t < 0.5, 0.0, 0.9 * np.sin(2 * np.pi * 1000 * t))  # half silence, half a loud tone
    loud = {
        "audio": wave[None].astype(np.float32),  # (1, T)
        "image": np.full((1, 3, 32, 32), 128, np.uint8),
        "mask": np.ones((1, 2), np.float32),
    }
    rep = compare_outputs(torch_outputs(model, [loud]), onnx_outputs(half, [loud]), max_abs_diff=5e-2)
    assert rep.passed, rep.failures
    assert info["float32_nodes"] and all(n.startswith("/frontend/") for n in info["float32_nodes"])


@pytest.mark.slow
@pytest.mark.data
def test_int8_export_on_real_grid_video(shared_data: Path, tmp_path: Path) -> None:
    """Real talking-face videos: calibration takes every sampled frame of each training window, stratified."""
    from edgeav.export.cli import run_export

    grid = shared_data / "grid"
    if not grid.is_dir():
        pytest.skip(f"{grid} not found")
    data = {
        "kind": "video",
        "window_s": 3.0,
        "hop_s": 3.0,
        "image_size_px": 64,
        "frames_per_clip": 3,
        "val_fraction": 0.15,
    }
    ckpt = train_checkpoint(tmp_path / "grid.pt", grid, data=data, steps=8, cache_dir=tmp_path / "cache")
    out = tmp_path / "bundle"
    result = run_export(
        export_args(ckpt, grid, out, int8=True, calib_windows=120, max_drop=100.0, max_class_drop=100.0)
    )
    m = json.loads((out / "manifest.json").read_text())
    cal = m["extra"]["int8"]["calibration"]
    assert cal["feeds_used"] == 120 and set(cal["per_class"].values()) == {30}  # 4 classes, stratified
    assert cal["windows_used"] < cal["feeds_used"]  # several frames of one window
    assert m["metrics"]["fp32"]["n"] == result["test_windows"] == 40  # GRID's 40 test clips, one 3 s window each
