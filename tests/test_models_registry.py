"""Every (backbone pair, fusion head) the registries allow: builds, trains a step, exports to ONNX and runs the same
in ONNX Runtime. The default run covers every registry entry (`allowed_archs("representative")`); the full cross
product is `slow`.

Small inputs keep it fast: 1 s of audio (101 log-mel frames) and 64 px frames, random weights (pretrained=False).
Temporal picture backbones (`input_kind="video"`) get clips instead: 4 frames of 32 px at 25 Hz (more where the
backbone's meta asks for more, `min_frames`: s3d takes 6), with a pattern that moves from frame to frame.
Each ONNX test prints and records (junit property `onnx_max_abs_diff`) the largest |ONNX Runtime - PyTorch| over the
three outputs. The bound is 1e-4, or 4 x PyTorch's own float32 error (against float64) where that is larger: random
weights make some deep nets (EfficientNet-B0: |logits| ~ 1e2) round by more than 1e-4 in either framework.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch
from _export_models import export_raw_onnx

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ModelError, UnknownNameError
from edgeav.train.models import (
    BACKBONES,
    HEADS,
    NAMED_MODELS,
    OUTPUT_NAMES,
    allowed_archs,
    build_model,
    create_model,
    model_stats,
    parse_arch,
)

SMALL = InputContract(audio=AudioContract(window_s=1.0), image=ImageContract(height_px=64, width_px=64))
CLIP_FRAMES, CLIP_PX, CLIP_RATE_HZ = 4, 32, 25.0
N_CLASSES = 5
PARITY_ATOL = 1e-4
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def _id(triple: tuple) -> str:
    a, i, h = triple
    return f"{a or 'shared'}+{i}->{h}"


def _settle_batchnorm(model) -> None:
    """Give every BatchNorm the statistics of real activations: one pass over 8 samples with only the BatchNorms in
    training mode (cumulative average), so stochastic depth and dropout do not skew them; then eval mode.

    Fresh torchvision MobileNet/EfficientNet weights with fresh running statistics shrink the signal to ~1e-9 in eval
    mode; comparisons on such a model would pass whatever the export did. Settled, the embeddings are O(1)."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        model(*_inputs(model.contract, [[1, 1]] * 8, seed=11))
    model.eval()


def _contract_for(image_backbone: str, audio_backbone: str | None = None) -> InputContract:
    """SMALL for a still-image backbone; for a temporal one, a clip of CLIP_FRAMES (or the backbone's `min_frames`)
    frames of CLIP_PX px. An audio backbone with its own front end (meta `audio_frontend`: birdnet_v24 takes 48 kHz,
    3 s) gets that sample rate and window."""
    audio = SMALL.audio
    fixed = BACKBONES.meta(audio_backbone).get("audio_frontend") if audio_backbone is not None else None
    if fixed:
        audio = AudioContract(sample_rate_hz=fixed["sample_rate_hz"], window_s=fixed["window_s"])
    if BACKBONES.meta(image_backbone).get("input_kind") != "video":
        return InputContract(audio=audio, image=SMALL.image)
    T = max(CLIP_FRAMES, int(BACKBONES.meta(image_backbone).get("min_frames", 2)))
    return InputContract(
        audio=audio, image=ImageContract(height_px=CLIP_PX, width_px=CLIP_PX, n_frames=T, frame_rate_hz=CLIP_RATE_HZ)
    )


def _missing_files(name: str) -> str | None:
    """Why a backbone that needs files made on this machine (meta `requires`, "module:function" giving the reason or
    None: birdnet_v24's converted BirdNET) cannot be built here."""
    requires = BACKBONES.meta(name).get("requires")
    if not requires:
        return None
    module, func = requires.split(":")
    return getattr(importlib.import_module(module), func)()


def _build(triple: tuple, contract: InputContract | None = None, seed: int = 0):
    a, i, h = triple
    contract = _contract_for(i, a) if contract is None else contract
    for name in (a, i):
        if name is not None and BACKBONES.meta(name).get("extra") and not HAS_TRANSFORMERS:
            pytest.skip(
                f"backbone {name!r} needs the optional extra edgeav[{BACKBONES.meta(name)['extra']}]"
                " (transformers), not installed here; the error it gives is tested in test_models_checkpoint"
            )
        if name is not None and (reason := _missing_files(name)):
            pytest.skip(f"backbone {name!r}: {reason}")
    torch.manual_seed(seed)
    arch = {"audio_backbone": a, "image_backbone": i, "head": h, "contract": contract.model_dump(mode="json")}
    return build_model(arch, [f"c{k}" for k in range(N_CLASSES)])


def _inputs(contract: InputContract, masks: list[list[float]], seed: int = 1):
    """Photo-like and sound-like inputs (white-noise images would give deep features that hardly vary, where float32
    rounding dominates): audio a tone plus noise; images random colour gradients and stripes with a little noise.
    One mask row per sample."""
    g = torch.Generator().manual_seed(seed)
    b = len(masks)
    t = torch.arange(contract.audio.window_samples) / contract.audio.sample_rate_hz
    f0 = 200.0 + 3000.0 * torch.rand(b, 1, generator=g)
    audio = 0.3 * torch.sin(2 * math.pi * f0 * t) + 0.05 * torch.randn(b, t.numel(), generator=g)  # (B, T)
    H, W = contract.image.height_px, contract.image.width_px
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")  # (H, W)
    p = torch.rand(b, 3, 4, 1, 1, generator=g)  # per sample and channel: frequencies, phase, level
    phase = 2 * math.pi * (4 * p[:, :, 0] * xx + 4 * p[:, :, 1] * yy) + 6 * p[:, :, 2]  # (B, 3, H, W)
    T = contract.image.n_frames
    if T == 1:
        image = 60 + 130 * p[:, :, 3] + 60 * torch.sin(phase) + 8 * torch.randn(b, 3, H, W, generator=g)
    else:  # a clip: the stripes drift at a per-sample speed, so frames (and their differences) differ by sample
        speed = 0.3 + 1.2 * torch.rand(b, 1, 1, 1, 1, generator=g)  # (B, 1, 1, 1, 1) radians per frame
        k = torch.arange(T, dtype=torch.float32).view(1, T, 1, 1, 1)  # (1, T, 1, 1, 1)
        moving = torch.sin(phase.unsqueeze(1) + speed * k)  # (B, T, 3, H, W)
        image = 60 + 130 * p[:, :, 3].unsqueeze(1) + 60 * moving + 8 * torch.randn(b, T, 3, H, W, generator=g)
    return audio.float(), image.clamp(0, 255).to(torch.uint8), torch.tensor(masks, dtype=torch.float32)


def _check_train_step(model) -> None:
    model.train()
    # 4 examples: train-mode batch norm over 2 tiny clips (s3d's temporal stem) once gave non-finite gradients
    audio, image, mask = _inputs(model.contract, [[1, 1], [1, 1], [1, 1], [1, 1]])
    out = model(audio, image, mask)
    assert out._fields == ("logits", "logits_audio", "logits_image")
    for t in out:
        assert t.shape == (4, N_CLASSES)
        assert torch.isfinite(t).all()
    loss = sum(torch.nn.functional.cross_entropy(t, torch.tensor([0, 3, 1, 2])) for t in out)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters outside the graph (never get a gradient): {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.fusion.parameters()) or not list(model.fusion.parameters())


def _check_onnx(model, tmp_path, record_property) -> float:
    import onnx
    import onnxruntime as ort

    _settle_batchnorm(model)  # also undoes the running statistics of a 2-sample training step
    # both present, audio only, image only: the masked rows go through the graph too
    audio, image, mask = _inputs(model.contract, [[1, 1], [1, 0], [0, 1]])
    path = tmp_path / "model.onnx"
    export_raw_onnx(model, (audio, image, mask), path)
    assert not model.training  # exporting did not switch the model to training mode
    with torch.no_grad():
        ref = model(audio, image, mask)
    proto = onnx.load(str(path))
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 17
    assert (
        any(n.name.startswith("/frontend/audio/") for n in proto.graph.node) or model.frontend.audio_input == "waveform"
    )
    assert any(n.name.startswith("/frontend/image/") for n in proto.graph.node)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {"audio": audio.numpy(), "image": image.numpy(), "mask": mask.numpy()})
    for name, r in zip(OUTPUT_NAMES, ref):  # the outputs depend on the input: a comparison that can fail
        spread = float((r[0] - r[1]).abs().max()) if name != "logits_image" else float((r[0] - r[2]).abs().max())
        assert spread > 1e-3, f"{name} hardly depends on the input ({spread:.3g}): the parity check would be empty"
    diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))
    # PyTorch's own float32 rounding, against the same model in float64: random-init deep nets (EfficientNet's
    # residual stream grows to ~1e3, ResNet-50) carry ~1e-4 of it; ONNX Runtime may differ from PyTorch by a few
    # times that, since both round, but never by more than max(1e-4, 4 x that)
    fp32_noise = float("nan")  # measured only where 1e-4 is not met
    if diff > PARITY_ATOL:
        model64 = copy.deepcopy(model).double()
        with torch.no_grad():
            ref64 = model64(audio.double(), image, mask.double())
        fp32_noise = max(float((r.double() - r64).abs().max()) for r, r64 in zip(ref, ref64))
    bound = PARITY_ATOL if diff <= PARITY_ATOL else max(PARITY_ATOL, 4.0 * fp32_noise)
    record_property("onnx_max_abs_diff", diff)
    record_property("torch_fp32_vs_fp64", fp32_noise)
    print(
        f"onnx parity {model.arch['audio_backbone']}+{model.arch['image_backbone']}->{model.arch['head']}: "
        f"max |ORT - torch| = {diff:.3g}; torch fp32 vs fp64 {fp32_noise:.3g}; "
        f"logit scale {max(float(r.abs().max()) for r in ref):.3g}"
    )
    assert diff <= bound, (
        f"ONNX Runtime differs from PyTorch by {diff:.3g} (> {PARITY_ATOL}, and > 4 x the "
        f"{fp32_noise:.3g} PyTorch float32 itself is off by)"
    )
    return diff


@pytest.mark.parametrize("triple", allowed_archs("representative"), ids=_id)
def test_registry_entry_trains_and_exports(triple, tmp_path, record_property):
    model = _build(triple)
    _check_train_step(model)
    _check_onnx(model, tmp_path, record_property)


@pytest.mark.slow
@pytest.mark.parametrize(
    "triple", [t for t in allowed_archs("full") if t not in allowed_archs("representative")], ids=_id
)
def test_registry_full_cross_product(triple, tmp_path, record_property):
    model = _build(triple)
    _check_train_step(model)
    _check_onnx(model, tmp_path, record_property)


def test_representative_set_covers_every_entry():
    rep = allowed_archs("representative")
    assert {h for _, _, h in rep} == set(HEADS.names())
    assert {a for a, _, _ in rep if a} | {i for _, i, _ in rep} == set(BACKBONES.names())
    assert set(rep) <= set(allowed_archs("full"))


def test_allowed_archs_are_exactly_what_parse_arch_accepts():
    names = [None, *BACKBONES.names()]
    accepted, refused = set(), 0
    for a, i, h in itertools.product(names, BACKBONES.names(), HEADS.names()):
        # the contract a triple is built with: a clip for a temporal image backbone, a still otherwise
        contract = _contract_for(i, a) if BACKBONES.meta(i)["modality"] == "image" else SMALL
        try:
            parse_arch(
                {"audio_backbone": a, "image_backbone": i, "head": h, "contract": contract.model_dump(mode="json")}
            )
            accepted.add((a, i, h))
        except ModelError as e:
            assert str(e) and "\n" not in str(e)
            refused += 1
    assert accepted == set(allowed_archs("full"))
    assert refused > 0


@pytest.mark.parametrize(
    "key,value", [("audio_backbone", "audio_vgg99"), ("image_backbone", "resnet1000"), ("head", "attention_soup")]
)
def test_unknown_names_are_refused_with_the_valid_ones(key, value):
    arch = {"audio_backbone": "audio_cnn", "image_backbone": "mobilenetv3_small", "head": "hdmf", key: value}
    with pytest.raises(UnknownNameError, match=f"unknown .*{value}.*this edgeav knows: .*") as e:
        build_model(arch, 3)
    offered = str(e.value).split("this edgeav knows: ")[1].split(", ")
    fits = {
        "audio_backbone": ("audio_cnn", "mobilenetv3_small"),
        "image_backbone": ("mobilenetv3_small", "audio_cnn"),
        "head": ("hdmf", "audio_cnn"),
    }[key]
    assert fits[0] in offered and fits[1] not in offered  # only names that fit this key
    registry = HEADS if key == "head" else BACKBONES
    with pytest.raises(UnknownNameError, match="valid names: ") as e:
        registry.create(value)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------------------------
# missing modalities
# --------------------------------------------------------------------------------------------------------------------

MASK_ARCHS = [t for t in allowed_archs("representative") if t[1] == "mobilenetv3_small" and t[0] in ("audio_cnn", None)]


@pytest.mark.parametrize("triple", MASK_ARCHS, ids=_id)
def test_masked_modality_does_not_reach_the_output(triple):
    model = _build(triple)
    _settle_batchnorm(model)
    a1, i1, _ = _inputs(model.contract, [[1, 1], [1, 1]], seed=1)
    a2, i2, _ = _inputs(model.contract, [[1, 1], [1, 1]], seed=2)
    assert not torch.equal(a1, a2) and not torch.equal(i1, i2)
    with torch.no_grad():
        # audio missing: changing the audio changes nothing; image present: changing the image does
        m = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
        o1, o2, o3 = model(a1, i1, m), model(a2, i1, m), model(a1, i2, m)
        for x, y in zip(o1, o2):
            assert torch.equal(x, y)
        assert not torch.allclose(o1.logits, o3.logits)
        assert torch.equal(o1.logits, o1.logits_image) and not o1.logits_audio.any()
        # image missing: the mirror image
        m = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        o1, o2, o3 = model(a1, i1, m), model(a1, i2, m), model(a2, i1, m)
        for x, y in zip(o1, o2):
            assert torch.equal(x, y)
        assert not torch.allclose(o1.logits, o3.logits)
        assert torch.equal(o1.logits, o1.logits_audio) and not o1.logits_image.any()
        # a batch mixing the cases: each row is what it would be alone, all finite
        mixed = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
        out = model(a1, i1, mixed)
        alone = model(a1[1:], i1[1:], mixed[1:])
        assert all(torch.isfinite(t).all() for t in out)
        assert torch.allclose(out.logits[1:], alone.logits, atol=1e-5)
        # nothing present: all-zero logits (uniform), not NaN
        none = model(a1, i1, torch.zeros(2, 2))
        assert all(torch.equal(t, torch.zeros(2, N_CLASSES)) for t in none)


def test_modality_dropout_never_drops_both_and_keeps_rates():
    from edgeav.train.models import modality_dropout

    g = torch.Generator().manual_seed(0)
    mask = torch.ones(20_000, 2)
    mask[:1000, 0] = 0  # already audio-less
    out = modality_dropout(mask, p_audio=0.2, p_image=0.3, generator=g)
    assert (out.sum(dim=1) >= 1).all()
    assert torch.equal(out[:1000], mask[:1000])
    full = out[1000:]
    assert abs(float((full[:, 0] == 0).float().mean()) - 0.2) < 0.02
    assert abs(float((full[:, 1] == 0).float().mean()) - 0.3) < 0.02
    with pytest.raises(ModelError, match="p_audio \\+ p_image <= 1"):
        modality_dropout(mask, 0.6, 0.6)


# --------------------------------------------------------------------------------------------------------------------
# named models
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMED_MODELS.names())
def test_every_named_model_builds_and_counts_every_branch(name):
    model = create_model(name, pretrained=False)
    meta = NAMED_MODELS.meta(name)
    assert model.num_classes == meta["num_classes"] and model.arch["name"] == name
    s = model_stats(model)  # one forward of one window of the model's own contract
    for what in ("params", "flops"):
        parts = s[what]
        assert all(parts[b] > 0 for b in ("audio", "image", "fusion")), (what, parts)
        assert parts["audio"] + parts["image"] + parts["fusion"] == parts["total"]
    assert s["flops_detail"]["frontend.audio"] > 0  # the log-mel runs inside the model
    if "budget_params" in meta:
        assert s["params"]["total"] <= meta["budget_params"] and s["flops"]["total"] <= meta["budget_flops"]


@pytest.mark.parametrize(
    "triple", [("audio_cnn", "mobilenetv3_small", "hdmf"), (None, "mobilenetv3_small", "shared_2d")], ids=_id
)
def test_param_groups_and_freezing_split_backbones_from_fusion(triple):
    from edgeav.train.models import freeze_backbones, param_groups

    model = _build(triple)
    groups = param_groups(model, backbone_lr=1e-4, head_lr=1e-3)
    assert [g["name"] for g in groups] == ["backbones", "fusion"] and [g["lr"] for g in groups] == [1e-4, 1e-3]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter, once
    fusion_ids = {id(p) for p in model.fusion.parameters()} | {id(p) for p in model.aux_audio.parameters()}
    assert fusion_ids <= {id(p) for p in groups[1]["params"]}

    model.train()
    freeze_backbones(model)  # phase II of two-phase training
    for m in model.backbones():
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if "backbone" in k or "spec_norm" in k}
    out = model(*_inputs(model.contract, [[1, 1], [1, 1]]))
    sum(out).sum().backward()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # BN statistics untouched


@pytest.mark.parametrize(
    "triple",
    [("audio_cnn", "mobilenetv3_small", h) for h in ("hdmf", "cfnsr")] + [(None, "mobilenetv3_small", "shared_2d")],
    ids=_id,
)
def test_onnx_with_a_dynamic_batch_runs_any_batch(triple, tmp_path):
    """The heads that reshape by the batch size still run at other batch sizes once exported with a dynamic batch."""
    import onnxruntime as ort

    model = _build(triple)
    _settle_batchnorm(model)
    path = export_raw_onnx(model, _inputs(model.contract, [[1, 1]] * 2), tmp_path / "dyn.onnx", dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for masks in ([[1, 0]], [[1, 1], [0, 1], [1, 0], [1, 1], [1, 1]]):
        a, i, m = _inputs(model.contract, masks, seed=len(masks))
        got = sess.run(list(OUTPUT_NAMES), {"audio": a.numpy(), "image": i.numpy(), "mask": m.numpy()})
        with torch.no_grad():
            ref = model(a, i, m)
        for g, r in zip(got, ref):
            assert g.shape == (len(masks), N_CLASSES)
            assert float(np.abs(g - r.numpy()).max()) <= PARITY_ATOL  # small heads on MobileNetV3: unit scale


def test_concat_head_is_not_drowned_by_the_larger_embedding():
    """Branches trained apart (two-phase) differ in scale by far (GRID test clips: |z_i| ~26, |z_a| ~0.36): the
    concat head's per-modality LayerNorms make its output independent of each embedding's scale, so the audio
    embedding still moves the output however large the image one is."""
    from edgeav.train.models.heads import Branches, create_head

    torch.manual_seed(0)
    head = create_head("concat", audio_dim=16, image_dim=24, num_classes=4).eval()
    za, zi = torch.randn(3, 16), torch.randn(3, 24)
    empty, mask = torch.zeros(3, 0), torch.ones(3, 2)

    def out(a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return head(Branches(a[:, :, None, None], i[:, :, None, None], a, i, empty, empty, mask))

    ref = out(za, zi)
    assert torch.allclose(out(za * 0.1, zi * 1000.0), ref, atol=1e-3)  # scale of either branch: no effect
    assert not torch.allclose(out(torch.randn(3, 16), zi * 1000.0), ref, atol=1e-2)  # the audio content: an effect
