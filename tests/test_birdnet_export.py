"""A fused model with `birdnet_v24` through export: BirdNET's in-network spectrogram stays float in INT8 and FP16
because the model says so (registry meta `float_scopes`, not a list in the exporter), checkpoints keep BirdNET's
frozen weights by reference, and the bundle states the licence.

The fast tests need nothing; the others need the converted BirdNET (`edgeav model birdnet-convert`, which
scripts/setup.sh runs) and, for real windows, ../shared/data/birds; each skips with the reason when they are absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ExportError, ModelError
from edgeav.export.quantize import FLOAT_PREFIXES, check_float_prefixes, model_float_prefixes
from edgeav.train.models.backbones import BACKBONES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "birds"
SPEC = "/audio_backbone/birdnet/spec/"
NET = "/audio_backbone/birdnet/net/"
ARCH = {"audio_backbone": "birdnet_v24", "image_backbone": "mobilenetv3_small", "head": "hdmf"}
CONTRACT = InputContract(
    audio=AudioContract(sample_rate_hz=48_000, window_s=3.0), image=ImageContract(height_px=64, width_px=64)
)
INT8_MAX_REL_ERROR = 0.05  # relative RMS audio-logits error of INT8 (BirdNET float) vs FP32 (birds test: 0.004)


def _birdnet_missing() -> str | None:
    from edgeav.train.models.birdnet import birdnet_missing

    return birdnet_missing()


MISSING = _birdnet_missing()
needs_birdnet = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
needs_data = pytest.mark.skipif(not (DATA / "recordings.csv").is_file(), reason=f"no bird recordings at {DATA}")


# --------------------------------------------------------------------------------------------------------------------
# without BirdNET's files
# --------------------------------------------------------------------------------------------------------------------


def test_float_prefixes_are_a_property_of_the_model():
    got = model_float_prefixes(ARCH)
    assert list(got)[: len(FLOAT_PREFIXES)] == list(FLOAT_PREFIXES)
    assert SPEC in got and "birdnet_v24" in got[SPEC] and NET in got  # INT8: BirdNET's CNN too (measured fragile)
    assert list(model_float_prefixes(ARCH, "fp16")) == [*FLOAT_PREFIXES, SPEC]
    with pytest.raises(ExportError, match="int8 or fp16"):
        model_float_prefixes(ARCH, "fp32")
    plain = model_float_prefixes({"audio_backbone": "audio_cnn", "image_backbone": "mobilenetv3_small"})
    assert list(plain) == list(FLOAT_PREFIXES)
    assert list(model_float_prefixes({"audio_backbone": None, "image_backbone": "resnet18"})) == list(FLOAT_PREFIXES)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_float_scopes_meta_is_well_formed(name):
    for key in ("float_scopes", "int8_float_scopes"):
        scopes = BACKBONES.meta(name).get(key)
        if scopes is None:
            continue
        assert isinstance(scopes, dict) and scopes
        for sub, why in scopes.items():
            assert isinstance(sub, str) and sub and not sub.startswith("/") and not sub.endswith("/")
            assert isinstance(why, str) and why  # the manifest says why each part stays float


def test_a_declared_float_part_missing_from_the_graph_is_an_error(tmp_path):
    from _export_models import build_onnx

    path = build_onnx(tmp_path / "tiny.onnx")
    counts = check_float_prefixes(path, list(FLOAT_PREFIXES))
    assert counts["/frontend/"] > 0
    with pytest.raises(ExportError, match=f"no node named {SPEC}"):
        check_float_prefixes(path, [*FLOAT_PREFIXES, SPEC])


def _dft_mel_onnx(path: Path, nonlinear: bool = False) -> tuple[Path, np.ndarray]:
    """x (1, 10, 1, 16) @ basis (16, 9) -> squeeze(-2) -> reshape(-1, 9) [-> relu] -> @ mel (9, 4), mel rows 0, 1, 7
    and 8 zero (BirdNET's spectrogram in small)."""
    import torch
    from torch import nn

    class DftMel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.register_buffer("basis", torch.randn(16, 9, generator=g))
            mel = torch.rand(9, 4, generator=g)
            mel[[0, 1, 7, 8]] = 0.0
            self.register_buffer("mel", mel)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.matmul(x, self.basis).squeeze(-2).reshape(-1, 9)  # (10, 9)
            return torch.matmul(torch.relu(y) if nonlinear else y, self.mel)  # (10, 4)

    x = torch.randn(1, 10, 1, 16, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(DftMel(), (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    return path, x.numpy()


@pytest.mark.parametrize("nonlinear", [False, True])
def test_dft_columns_no_mel_filter_reads_are_pruned_exactly(tmp_path, nonlinear):
    import onnx
    import onnxruntime as ort

    from edgeav.export.onnx_export import check_model
    from edgeav.export.prune import prune_discarded_columns

    path, x = _dft_mel_onnx(tmp_path / "m.onnx", nonlinear)
    proto = onnx.load(str(path))
    done = prune_discarded_columns(proto)
    check_model(proto)
    onnx.save(proto, str(tmp_path / "pruned.onnx"))
    run = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for p in (path, tmp_path / "pruned.onnx")
    ]
    assert np.allclose(run[0], run[1], atol=1e-6)
    if nonlinear:  # a Relu between: not the pattern, left alone (relu(0)=0 happens to hold, but any op is refused)
        assert done == []
    else:
        assert [(d["columns"], d["kept"]) for d in done] == [(9, 5)]


def test_calibration_sees_each_sensor_missing():
    from edgeav.export.quantize import with_missing_modalities

    feeds = [
        {
            "audio": np.ones((1, 4), np.float32),
            "image": np.ones((1, 3, 2, 2), np.uint8),
            "mask": np.ones((1, 2), np.float32),
        }
        for _ in range(4)
    ]
    out = list(with_missing_modalities(iter(feeds), every=2))
    masks = [tuple(f["mask"][0]) for f in out]
    assert masks == [(1, 1), (1, 0), (0, 1), (1, 1), (1, 1), (1, 0), (0, 1), (1, 1)]
    assert not out[1]["image"].any() and out[1]["audio"].all() and not out[2]["audio"].any()
    assert out[0]["image"].all()  # the originals are not changed
    solo = [
        {
            "audio": np.ones((1, 4), np.float32),
            "image": np.zeros((1, 3, 2, 2), np.uint8),
            "mask": np.array([[1.0, 0.0]], np.float32),
        }
    ]
    assert len(list(with_missing_modalities(solo))) == 1  # no copy of a sensor that is already missing


def test_a_float_node_never_reads_a_weight_quantized_for_another(tmp_path):
    """Identical initializers are shared after export (a random-init picture CNN's zero biases and BirdNET's): the
    quantizer would hand the float-kept node the int8 copy through a DequantizeLinear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeav.export.quantize import quantize_int8

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["audio", "w"], ["a"], name="/frontend/mm"),
        helper.make_node("Relu", ["a"], ["r"], name="/net/relu"),
        helper.make_node("MatMul", ["r", "w"], ["logits"], name="/net/mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])],
        [w],
    )
    path = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    feeds = [{"audio": np.random.default_rng(k).normal(size=(1, 8)).astype(np.float32)} for k in range(4)]
    out, info = quantize_int8(path, tmp_path / "int8.onnx", feeds, "ort_u8s8", preprocess=False)
    q = onnx.load(str(out))
    producer = {o: n for n in q.graph.node for o in n.output}
    front = next(n for n in q.graph.node if n.name == "/frontend/mm")
    assert all(producer[i].op_type != "DequantizeLinear" for i in front.input if i in producer)
    assert info["quantize_linear_nodes"] > 0  # /net/mm is quantized, with its own int8 copy of w


# --------------------------------------------------------------------------------------------------------------------
# with the converted model
# --------------------------------------------------------------------------------------------------------------------


@needs_birdnet
def test_float_scopes_name_real_submodules():
    from edgeav.train.models.birdnet import BirdNetV24

    net = BirdNetV24()
    meta = BACKBONES.meta("birdnet_v24")
    for sub in [*meta["float_scopes"], *meta["int8_float_scopes"]]:
        net.get_submodule(sub.replace("/", "."))  # AttributeError if the scope names nothing


def _fused(n_classes: int = 17):
    import torch

    from edgeav.train.models import build_model

    torch.manual_seed(0)
    return build_model({**ARCH, "contract": CONTRACT.model_dump(mode="json")}, n_classes).eval()


def _real_feeds(n: int) -> list[dict[str, np.ndarray]]:
    """n feeds {audio (1, 144000), image (1, 3, 64, 64) uint8, mask (1, 2)}: 3 s windows from the birds' recordings
    (one per recording, 1 s in), random pictures."""
    from edgeav.train.data.media import decode_audio

    rows = list(csv.DictReader(open(DATA / "recordings.csv", encoding="utf-8")))[:n]
    g = np.random.default_rng(0)
    feeds = []
    for r in rows:
        w = decode_audio(DATA / r["file"], 48_000)
        w = np.pad(w, (0, max(0, 4 * 48_000 - w.size)))[48_000 : 4 * 48_000]
        feeds.append(
            {
                "audio": w[None].astype(np.float32),
                "mask": np.ones((1, 2), np.float32),
                "image": g.integers(0, 256, (1, 3, 64, 64), dtype=np.uint8),
            }
        )
    return feeds


@pytest.mark.slow
@needs_birdnet
@needs_data
def test_int8_keeps_birdnet_float_and_fp16_its_spectrogram(tmp_path):
    import onnx

    from edgeav.export.onnx_export import convert_fp16, export_onnx, onnx_outputs
    from edgeav.export.quantize import logits_error, quantize_int8

    model = _fused()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    prefixes = list(model_float_prefixes(model.arch))
    counts = check_float_prefixes(fp32, prefixes)
    assert counts[SPEC] > 10 and counts[NET] > 100
    feeds = _real_feeds(12)
    int8, info = quantize_int8(fp32, tmp_path / "int8.onnx", feeds[:8], "ort_u8s8", float_prefixes=prefixes)
    assert info["float_prefixes"] == prefixes
    birdnet = {n for n in info["float_nodes"] if n.startswith((SPEC, NET))}
    assert len(birdnet) == counts[SPEC] + counts[NET]
    q = onnx.load(str(int8))
    producer = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.name.startswith((SPEC, NET)):  # float in, float out: no input comes through a Q/DQ pair
            assert all(producer[i].op_type != "DequantizeLinear" for i in n.input if i in producer), n.name
    assert info["quantize_linear_nodes"] > 20  # the picture branch and the fusion are quantized
    ref = onnx_outputs(fp32, feeds[8:])
    got = onnx_outputs(int8, feeds[8:])
    err = logits_error(
        np.concatenate([r["logits_audio"] for r in ref]), np.concatenate([g["logits_audio"] for g in got])
    )
    print(f"INT8 (BirdNET float) vs FP32, audio logits on 4 real windows: relative RMS error {err:.3f}")
    assert err <= INT8_MAX_REL_ERROR

    fp16, finfo = convert_fp16(
        fp32, tmp_path / "fp16.onnx", keep_float_prefixes=list(model_float_prefixes(model.arch, "fp16"))
    )
    spec_nodes = {n for n in birdnet if n.startswith(SPEC)}
    assert spec_nodes <= set(finfo["float32_nodes"]) and not any(n.startswith(NET) for n in finfo["float32_nodes"])
    half = onnx_outputs(fp16, feeds[8:])
    assert all(np.isfinite(h["logits"]).all() for h in half)


@pytest.mark.slow
@needs_birdnet
def test_checkpoint_keeps_birdnet_by_reference_and_rebuilds(tmp_path):
    import torch

    from edgeav.train.models import load_checkpoint, read_checkpoint, save_checkpoint

    model = _fused(5)
    path = save_checkpoint(tmp_path / "m.pt", model, model.labels, model.arch, CONTRACT, {}, {"val_acc": 0.5})
    size_mib = path.stat().st_size / 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    ref = raw["file_weights"]["audio_backbone"]
    print(
        f"birdnet_v24 + mobilenetv3_small checkpoint: {size_mib:.1f} MiB; {ref['tensors']} BirdNET tensors "
        f"({ref['bytes'] / 2**20:.1f} MiB) by reference"
    )
    assert size_mib < 25 and ref["bytes"] > 50 * 2**20 and "CC BY-NC-SA 4.0" in ref["licence"]
    assert not any(k.startswith("audio_backbone.birdnet.") for k in raw["state_dict"])
    assert "file_weights" in raw["manifest"]
    again, info = load_checkpoint(path)
    x = (0.1 * torch.randn(2, 144_000), torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), torch.ones(2, 2))
    with torch.no_grad():
        assert torch.equal(model(*x).logits, again(*x).logits)
    assert set(read_checkpoint(path)["state_dict"]) == set(model.state_dict())  # filled for every other reader

    raw["file_weights"]["audio_backbone"]["sha256"] = "0" * 64  # another conversion than the one trained with
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="are not the ones the checkpoint was trained with") as e:
        load_checkpoint(tmp_path / "other.pt")
    assert "\n" not in str(e.value)


@needs_birdnet
@pytest.mark.parametrize("trainable_blocks", [0, 2])
def test_training_phases_keep_birdnet_frozen_as_declared(trainable_blocks):
    """Every phase of the training loop unfreezes whole branches; BirdNET outside its trainable blocks stays frozen
    (a frozen birdnet_v24 trained at phase I's learning rate diverged: loss 301 then 20341 in two epochs)."""
    from edgeav.train.models import build_model
    from edgeav.train.trainable import freeze_for_phase

    model = build_model(
        {**ARCH, "audio_kwargs": {"trainable_blocks": trainable_blocks}, "contract": CONTRACT.model_dump(mode="json")},
        3,
    )
    bb = model.audio_backbone
    declared = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert bool(declared) == (trainable_blocks > 0)
    for phase in ("joint", "phase1_audio", "phase1_image", "phase2_fusion"):
        freeze_for_phase(model, phase)
        now = {n for n, p in bb.named_parameters() if p.requires_grad}
        assert now == (declared if phase in ("joint", "phase1_audio") else set()), phase
        assert any(p.requires_grad for p in model.aux_audio.parameters()) == (phase in ("joint", "phase1_audio"))
    assert set(bb.file_state_keys()).isdisjoint(declared)  # phase II froze them: still stored by value


STREAMS = DATA.parent / "streams"


@pytest.mark.slow
@pytest.mark.gstreamer
@needs_birdnet
@pytest.mark.parametrize(
    "stream, seconds", [("birdnet_soundscape_120s.flac", 120.0), ("opensoundscape_1min.wav", 59.5)]
)
def test_runtime_feeds_birdnet_48k_windows_from_any_rate(tmp_path, stream, seconds):
    """The runtime resamples to the contract's 48 kHz (the soundscape is 48 kHz, the dawn chorus 32 kHz) and cuts 3 s
    windows; audio only, so the picture is a masked modality on every window."""
    pytest.importorskip("gi", reason="GStreamer's Python bindings (gi) are not installed")
    if not (STREAMS / stream).is_file():
        pytest.skip(f"no {STREAMS / stream}")
    from edgeav.export.onnx_export import export_onnx
    from edgeav.runtime.engine import run_stream
    from edgeav.schema.runtime import RuntimeConfig

    model = _fused(3)
    path = export_onnx(model, tmp_path / "m.onnx")
    cfg = RuntimeConfig.model_validate({"align": {"hop_s": 3.0}})
    results = list(run_stream((STREAMS / stream).as_uri(), path, model.contract, model.labels, cfg))
    assert len(results) == int((seconds - 3.0) // 3.0) + 1
    for r in results:
        assert r.window.audio is not None and r.window.audio.shape == (144_000,) and "image" in r.window.missing
        assert r.scores is not None
    assert max(float(np.abs(r.window.audio).max()) for r in results) > 0.01  # real sound, not zeros
