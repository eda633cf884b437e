"""Temporal picture backbones (edgeav.train.models.video, temporal): the clip interface of every entry, the temporal
shift itself, the frame-difference stem, weights loading, and what `edgeav model info` says of a clip model.
Training and ONNX export of every entry are in test_models_registry."""

from __future__ import annotations

import pytest
import torch

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ModelError
from edgeav.train.models import BACKBONES, build_model, create_backbone, model_stats
from edgeav.train.models.model import temporal_backbone_names
from edgeav.train.models.video import TemporalShift

PX = 32


def _frames(name: str) -> int:
    return max(4, int(BACKBONES.meta(name).get("min_frames", 2)))


def _clip(T: int, seed: int = 0, b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T, 3, PX, PX, generator=g)  # (B, T, 3, h, w) as the front end gives it


def _settled(bb: torch.nn.Module, T: int) -> torch.nn.Module:
    """BatchNorm statistics of real activations (fresh ones shrink MobileNet's signal to ~1e-9 in eval mode), then
    eval mode."""
    for m in bb.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    bb.train()
    with torch.no_grad():
        bb(_clip(T, seed=7, b=4))
    return bb.eval()


@pytest.mark.parametrize("name", temporal_backbone_names())
def test_every_temporal_backbone_takes_a_clip_and_reads_its_order(name):
    torch.manual_seed(0)
    bb = _settled(create_backbone(name), _frames(name))
    meta = BACKBONES.meta(name)
    assert meta["modality"] == "image" and meta["input_kind"] == "video" == bb.input_kind
    assert bb.embed_dim == meta["embed_dim"]
    x = _clip(_frames(name))
    with torch.no_grad():
        fmap, emb = bb(x)
        _, emb_reversed = bb(x.flip(1))
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, bb.embed_dim)  # (B, D, h', w')
    assert emb.shape == (2, bb.embed_dim) and torch.isfinite(emb).all()
    assert not torch.allclose(emb, emb_reversed, atol=1e-5), "the frames' order does not reach the embedding"


def test_temporal_shift_moves_one_eighth_each_way_with_zeros_at_the_ends():
    B, T, C = 2, 3, 16
    x = torch.arange(B * T * C, dtype=torch.float32).view(B, T, C, 1, 1).expand(B, T, C, 2, 2)  # (B, T, C, h, w)
    s = TemporalShift(C)
    s.n_frames = T
    y = s(x.reshape(B * T, C, 2, 2)).view(B, T, C, 2, 2)
    f = C // 8
    assert torch.equal(y[:, :-1, :f], x[:, 1:, :f]) and not y[:, -1, :f].any()  # frame t <- t+1, last: zeros
    assert torch.equal(y[:, 1:, f : 2 * f], x[:, :-1, f : 2 * f]) and not y[:, 0, f : 2 * f].any()  # t <- t-1
    assert torch.equal(y[:, :, 2 * f :], x[:, :, 2 * f :])  # the other 3/4 stay
    s.n_frames = 1
    assert torch.equal(s(x[0]), x[0])  # one frame: nothing to shift


@pytest.mark.parametrize("name,stages", [("tsm_resnet18", 8), ("tsm_mobilenetv3_small", 6)])
def test_tsm_shifts_inside_the_residual_blocks_and_adds_no_parameters(name, stages):
    plain = create_backbone(name.removeprefix("tsm_"))
    tsm = create_backbone(name)
    shifts = [m for m in tsm.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == stages  # ResNet-18: 8 BasicBlocks; MobileNetV3-small: 6 inverted residuals with a skip
    assert sum(p.numel() for p in tsm.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("name", ["video_gru", "mobilenetv3_small_tconv", "tsm_mobilenetv3_small"])
def test_difference_stem_ignores_what_stands_still(name):
    torch.manual_seed(0)
    T = 4
    bb = _settled(create_backbone(name, stem="diff"), T)
    still_a = _clip(1, seed=1).expand(-1, T, -1, -1, -1)  # a clip whose frames are all the same
    still_b = _clip(1, seed=2).expand(-1, T, -1, -1, -1)
    with torch.no_grad():
        fa, ea = bb(still_a)
        _, eb = bb(still_b)
        _, em = bb(_clip(T, seed=3))
    assert torch.allclose(ea, eb)  # nothing moves: the content of the frames does not matter
    assert not torch.allclose(ea, em, atol=1e-5)
    if name != "tsm_mobilenetv3_small":
        assert fa.shape[-1] == T - 1  # (B, D, 1, T - 1): one position per difference


def test_bad_arguments_are_one_line_model_errors():
    cases = [
        lambda: create_backbone("video_gru", stem="optical_flow"),
        lambda: create_backbone("video_gru", frame="cnn", pretrained=True),
        lambda: create_backbone("video_gru", frame="vit"),
        lambda: create_backbone("mobilenetv3_small_tconv", temporal_kernel=4),
        lambda: create_backbone("tsm_resnet18", stem="flow"),
        lambda: create_backbone("r3d_18", pretrained=True, weights_path="x.pt"),
    ]
    for make in cases:
        with pytest.raises(ModelError) as e:
            make()
        assert str(e.value) and "\n" not in str(e.value)
    s3d = create_backbone("s3d").eval()
    with pytest.raises(ModelError, match="s3d.*>= 6 frames"):
        s3d(_clip(5))


def test_weights_path_loads_the_library_state_dicts(tmp_path):
    from torchvision.models import mobilenet_v3_small
    from torchvision.models.video import mc3_18

    torch.manual_seed(1)
    net = mc3_18(weights=None)
    torch.save(net.state_dict(), tmp_path / "mc3.pt")
    bb = create_backbone("mc3_18", weights_path=tmp_path / "mc3.pt")
    assert torch.equal(bb.features[0][0].weight, net.stem[0].weight)
    assert torch.equal(bb.features[4][1].conv2[0].weight, net.layer4[1].conv2[0].weight)

    mnet = mobilenet_v3_small(weights=None)
    torch.save(mnet.state_dict(), tmp_path / "mnv3.pt")
    for name in ("tsm_mobilenetv3_small",):
        bb = create_backbone(name, weights_path=tmp_path / "mnv3.pt")
        assert torch.equal(bb.frames.features[0][0].weight, mnet.features[0][0].weight)

    gru = create_backbone("video_gru")
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    again = create_backbone("video_gru", weights_path=tmp_path / "gru.pt")
    assert all(torch.equal(a, b) for a, b in zip(gru.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ModelError, match="do not fit"):
        create_backbone("r3d_18", weights_path=tmp_path / "mc3.pt")


def test_stats_count_one_clip_of_the_contract():
    """FLOPs of a clip model by hand: video_gru's per-frame CNN on every frame plus its GRU, on one window."""
    T, H = 6, 64
    contract = InputContract(
        audio=AudioContract(window_s=1.0), image=ImageContract(height_px=H, width_px=H, n_frames=T, frame_rate_hz=25.0)
    )
    model = build_model(
        {
            "audio_backbone": "audio_cnn",
            "image_backbone": "video_gru",
            "head": "hdmf",
            "contract": contract.model_dump(mode="json"),
        },
        3,
    )
    s = model_stats(model)
    per_frame, cin, px = 0, 3, H
    for c in (24, 48, 64):  # stride-2 3x3 convolutions
        px //= 2
        per_frame += 2 * (cin * 9) * c * px * px
        cin = c
    gru = 2 * 3 * (64 * 128 + 128 * 128) * T  # three gates, input and hidden matmuls, every frame
    assert s["flops"]["image"] == T * per_frame + gru
    assert s["params"]["image"] == sum(p.numel() for p in model.image_backbone.parameters())
    assert s["flops"]["audio"] + s["flops"]["image"] + s["flops"]["fusion"] == s["flops"]["total"]


def test_model_info_shows_the_clip_input_and_its_cost():
    from argparse import Namespace

    from edgeav.train.models.info import cmd_model_info

    out = cmd_model_info(Namespace(name="edgeav-motion", overrides=["model.image_roi=[0.25,0.5,0.75,1.0]"]))
    d = out.data
    im = d["contract"]["image"]
    assert d["input_shapes"]["image"] == [1, im["n_frames"], 3, im["height_px"], im["width_px"]]
    assert f"(B, {im['n_frames']}, 3, {im['height_px']}, {im['width_px']}) uint8 RGB NTCHW" in out.text
    assert f"{im['n_frames']} frames at {im['frame_rate_hz']:g} Hz" in out.text and "roi" in out.text
    # the backbone runs on the cropped box (half of each side): a quarter of the whole frame's cost, near enough
    whole = cmd_model_info(Namespace(name="edgeav-motion", overrides=[])).data
    ratio = d["flops"]["image"] / whole["flops"]["image"]
    assert 0.2 < ratio < 0.3, ratio
