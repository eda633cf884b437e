"""Bundles: written atomically with a tarball, verified on the field unit; tampering and bad shapes are refused."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch", reason="the test model is built with torch")

from _export_models import IMAGE_HW, LABELS, WINDOW_SAMPLES, build_onnx  # noqa: E402

from edgeav.bundle import verify_bundle  # noqa: E402
from edgeav.contract import AudioContract, ImageContract, InputContract  # noqa: E402
from edgeav.errors import BundleError  # noqa: E402
from edgeav.export.bundle import write_bundle  # noqa: E402
from edgeav.manifest import ArtifactManifest, sha256_file  # noqa: E402

# 1600 samples at 16 kHz = 0.1 s windows; 32 px frames (the test model's)
CONTRACT = InputContract(
    audio=AudioContract(window_s=WINDOW_SAMPLES / 16000, n_fft=256, win_length=256, hop_length=64),
    image=ImageContract(height_px=IMAGE_HW, width_px=IMAGE_HW),
)
TOOLS = {"edgeav": "0.1.0", "onnx": "1.23", "onnxruntime": "1.31"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("m") / "fp32.onnx")


def _manifest(contract: InputContract = CONTRACT) -> ArtifactManifest:
    return ArtifactManifest(
        kind="onnx",
        labels=LABELS,
        contract=contract,
        precision="int8",
        metrics={"fp32": {"accuracy": 91.0}, "int8": {"accuracy": 90.5}},
    )


def test_round_trip(model: Path, tmp_path: Path) -> None:
    assert CONTRACT.shapes()["audio"] == (1, WINDOW_SAMPLES)
    out = write_bundle(tmp_path / "bundle", {"model_fp32": model, "model_int8": model}, _manifest(), "cpu", TOOLS)
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.txt",
        "manifest.json",
        "model_fp32.onnx",
        "model_int8.onnx",
    ]
    assert (out / "labels.txt").read_text().split() == LABELS
    info = verify_bundle(out)
    assert info.profile_name == "cpu" and info.tool_versions == TOOLS and info.labels == LABELS
    assert info.model("model_int8") == out / "model_int8.onnx"
    assert info.sha256["model_int8"] == sha256_file(out / "model_int8.onnx")  # the digest verify_bundle checked
    assert out.stat().st_mode & 0o755 == 0o755  # readable by a daemon running as another user
    assert info.manifest.kind == "bundle" and info.manifest.metrics["int8"]["accuracy"] == 90.5
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["extra"]["files"]["model_fp32"]["sha256"]) == 64
    with tarfile.open(tmp_path / "bundle.tar.gz") as tf:
        assert "bundle/manifest.json" in tf.getnames()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left behind
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(out, {"model_fp32": model}, _manifest(), "cpu", TOOLS)
    with pytest.raises(BundleError, match="model_fp16"):
        info.model("model_fp16")


def test_tampered_file_is_named(model: Path, tmp_path: Path) -> None:
    out = write_bundle(tmp_path / "b", {"model_int8": model}, _manifest(), "cpu", TOOLS)
    with open(out / "model_int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError) as e:
        verify_bundle(out)
    assert "model_int8.onnx" in str(e.value) and "sha256" in str(e.value) and "\n" not in str(e.value)
    (out / "labels.txt").unlink()
    with pytest.raises(BundleError, match="labels.txt"):
        verify_bundle(out)


def test_wrong_input_shape_is_refused(model: Path, tmp_path: Path) -> None:
    other = InputContract(audio=CONTRACT.audio, image=ImageContract(height_px=64, width_px=64))
    with pytest.raises(BundleError, match=r"input 'image' has shape .*32, 32.*contract says \('B', 3, 64, 64\)"):
        write_bundle(tmp_path / "b", {"model_int8": model}, _manifest(other), "cpu", TOOLS)
    assert list(tmp_path.iterdir()) == []  # nothing written when anything fails


def test_missing_manifest_and_bad_role(model: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no manifest"):
        verify_bundle(tmp_path)
    with pytest.raises(BundleError, match="bad bundle role"):
        write_bundle(tmp_path / "b", {"../evil": model}, _manifest(), "cpu", TOOLS)
    assert not (tmp_path / "b").exists()
