"""Temporal picture backbones from libraries: torchvision's 3D video CNNs and cheap temporal forms over 2D CNNs.

Every entry takes a clip (`input_kind="video"`): (B, T, 3, h, w) float32, normalized and cropped to the region of
interest by the model's front end, and gives a map (B, D, h', w') and an embedding (B, D) like every backbone.

- `r3d_18`, `mc3_18`, `r2plus1d_18`, `s3d`: torchvision.models.video cut before their pooling. The clip is permuted to
  (B, 3, T, h, w); the map is the last 3D feature map averaged over time, (B, D, h', w'). Their Kinetics-400 weights
  (`pretrained=True`) were trained with the Kinetics mean/std (0.432, 0.395, 0.376) / (0.228, 0.221, 0.217), close
  to the contract's ImageNet default. `s3d` halves time three times, so it needs T >= 5; at exactly T = 5 the
  backward pass of its first temporal convolution (kernel 7, stride 2) corrupts the heap in oneDNN's CPU conv3d
  (torch 2.14; T = 4, 6..16 are fine, and so is T = 5 with oneDNN off), so it asks for T >= 6 (`min_frames`).
- `tsm_mobilenetv3_small`, `tsm_resnet18`: temporal shift (TSM, Lin et al. 2019). The 2D CNN runs on all T frames
  as a batch of B*T images; inside each residual block (each inverted-residual block with a skip connection for
  MobileNetV3, each BasicBlock for ResNet-18), before the block's first convolution, 1/8 of the channels move one
  frame forward in time and 1/8 one frame backward (zeros enter at the clip's ends), so every block mixes
  neighbouring frames at no FLOP and no parameter cost. The skip path keeps the unshifted features. Static slices and
  a concatenation: exports to ONNX as Slice/Concat. Map: the last 2D map averaged over time.
- `video_gru`: a per-frame encoder (`frame="cnn"`: small stride-2 CNN as in `video_tcn`; `frame="mobilenetv3_small"`)
  pooled to a vector per frame, then a GRU over time. Map (B, D, 1, T') of the GRU outputs.
- `mobilenetv3_small_tconv`: per-frame MobileNetV3-small pooled per frame, then 1D temporal convolutions.
  Map (B, D, 1, T').

The per-frame forms take `stem="raw"` (default) or `stem="diff"`: the differences of consecutive frames (T' = T - 1),
as `video_tcn` does (see edgeav.train.models.temporal for why motion, not appearance, carries a spoken word).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeav.errors import ModelError
from edgeav.train.models.backbones import (
    BACKBONES,
    Backbone,
    TorchvisionBackbone,
    _check_weights_args,
    _load_state_dict,
    build_torchvision,
)
from edgeav.train.models.temporal import _frame_block, _time_block, frame_differences

log = logging.getLogger(__name__)


def _check_stem(name: str, stem: str) -> None:
    if stem not in ("raw", "diff"):
        raise ModelError(f"backbone {name!r}: stem must be 'raw' or 'diff', got {stem!r}")


def _apply_stem(x: torch.Tensor, stem: str) -> torch.Tensor:
    return frame_differences(x) if stem == "diff" else x  # (B, T, 3, h, w) -> (B, T', 3, h, w)


# --------------------------------------------------------------------------------------------------------------------
# torchvision video CNNs
# --------------------------------------------------------------------------------------------------------------------

# registry name -> (torchvision.models.video builder, embed dim, fewest frames the network takes)
_TORCHVISION_VIDEO: dict[str, tuple[str, int, int]] = {
    "r3d_18": ("r3d_18", 512, 2),
    "mc3_18": ("mc3_18", 512, 2),
    "r2plus1d_18": ("r2plus1d_18", 512, 2),
    "s3d": ("s3d", 1024, 6),  # 5 fits the network, but crashes oneDNN's conv3d backward on CPU (module docstring)
}


def _torchvision_video_model(name: str, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    return build_torchvision(name, "torchvision.models.video", _TORCHVISION_VIDEO[name][0], pretrained, weights_path)


class TorchvisionVideoBackbone(Backbone):
    """A torchvision video classifier cut before its pooling. (B, T, 3, h, w) -> map (B, D, h', w') averaged over
    the network's own time axis, embedding (B, D)."""

    modality = "image"
    input_kind = "video"

    def __init__(self, name: str, pretrained: bool = False, weights_path: str | Path | None = None) -> None:
        super().__init__()
        net = _torchvision_video_model(name, pretrained, weights_path)
        self.name = name
        self.embed_dim = _TORCHVISION_VIDEO[name][1]
        self.min_frames = _TORCHVISION_VIDEO[name][2]
        if name == "s3d":
            self.features = net.features
        else:  # VideoResNet
            self.features = nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if int(x.shape[1]) < self.min_frames:
            raise ModelError(
                f"backbone {self.name!r} needs >= {self.min_frames} frames per window, got "
                f"{int(x.shape[1])}: raise data.frames_per_window"
            )
        x = x.permute(0, 2, 1, 3, 4)  # (B, T, 3, h, w) -> (B, 3, T, h, w)
        return self.features(x).mean(dim=2)  # (B, D, t, h', w') -> (B, D, h', w')


def _register_torchvision_video(name: str) -> None:
    def factory(pretrained: bool = False, weights_path: str | Path | None = None) -> Backbone:
        return TorchvisionVideoBackbone(name, pretrained, weights_path)

    _, dim, min_frames = _TORCHVISION_VIDEO[name]
    BACKBONES.register(
        name,
        modality="image",
        input_kind="video",
        embed_dim=dim,
        min_frames=min_frames,
        source="torchvision.models.video",
    )(factory)


for _name in _TORCHVISION_VIDEO:
    _register_torchvision_video(_name)


# --------------------------------------------------------------------------------------------------------------------
# temporal shift (TSM) over 2D CNNs
# --------------------------------------------------------------------------------------------------------------------


class TemporalShift(nn.Module):
    """(B*T, C, h, w) -> same shape: channels [0, C/8) take the next frame's values, [C/8, C/4) the previous
    frame's, zeros at the clip's ends; the rest unchanged. `n_frames` (T) is set by the backbone before each
    forward (static under ONNX export: the clip length is part of the input contract)."""

    def __init__(self, channels: int, fold_div: int = 8) -> None:
        super().__init__()
        self.fold = channels // fold_div
        self.n_frames = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, f = self.n_frames, self.fold
        if T < 2 or f == 0:
            return x
        v = x.reshape(-1, T, *x.shape[1:])  # (B, T, C, h, w)
        back = torch.cat([v[:, 1:, :f], torch.zeros_like(v[:, :1, :f])], dim=1)  # frame t <- t+1
        fwd = torch.cat([torch.zeros_like(v[:, :1, f : 2 * f]), v[:, :-1, f : 2 * f]], dim=1)  # frame t <- t-1
        out = torch.cat([back, fwd, v[:, :, 2 * f :]], dim=2)  # (B, T, C, h, w)
        return out.reshape(x.shape)  # (B*T, C, h, w)


def _insert_shifts(features: nn.Module, arch: str) -> list[TemporalShift]:
    """Put a TemporalShift at the start of the residual branch of each residual block of `features`."""
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import BasicBlock

    shifts: list[TemporalShift] = []
    for m in features.modules():
        if arch == "resnet" and isinstance(m, BasicBlock):
            s = TemporalShift(m.conv1.in_channels)
            m.conv1 = nn.Sequential(s, m.conv1)
        elif arch == "mobilenet" and isinstance(m, InvertedResidual) and m.use_res_connect:
            first = m.block[0][0]  # the first Conv2d of the block (expand, or depthwise)
            s = TemporalShift(first.in_channels)
            m.block = nn.Sequential(s, *m.block)
        else:
            continue
        shifts.append(s)
    if not shifts:  # pragma: no cover - torchvision changed its block classes
        raise ModelError(f"temporal shift: no residual block found in {type(features).__name__}")
    return shifts


class TSMBackbone(Backbone):
    """Temporal shift inside a torchvision 2D CNN. (B, T, 3, h, w) -> map (B, D, h', w') (mean over the T' frames),
    embedding (B, D). Weights (`pretrained`, `weights_path`) are those of the 2D library model: the shift adds none."""

    modality = "image"
    input_kind = "video"

    def __init__(
        self, name: str, pretrained: bool = False, weights_path: str | Path | None = None, stem: str = "raw"
    ) -> None:
        super().__init__()
        _check_stem(f"tsm_{name}", stem)
        self.stem = stem
        self.frames = TorchvisionBackbone(name, pretrained, weights_path)
        self.embed_dim = self.frames.embed_dim
        self.shifts = _insert_shifts(self.frames.features, "resnet" if name.startswith("resnet") else "mobilenet")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = _apply_stem(x, self.stem)  # (B, T', 3, h, w)
        T = int(x.shape[1])
        for s in self.shifts:
            s.n_frames = T
        f = self.frames.forward_features(x.flatten(0, 1))  # (B*T', D, h', w')
        return f.reshape(-1, T, *f.shape[1:]).mean(dim=1)  # (B, D, h', w')

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.frames.forward_head(fmap)  # (B, D)


@BACKBONES.register(
    "tsm_mobilenetv3_small",
    modality="image",
    input_kind="video",
    embed_dim=576,
    source="torchvision MobileNetV3-small + temporal shift",
)
def tsm_mobilenetv3_small(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return TSMBackbone("mobilenetv3_small", pretrained, weights_path, **kwargs)


@BACKBONES.register(
    "tsm_resnet18", modality="image", input_kind="video", embed_dim=512, source="torchvision ResNet-18 + temporal shift"
)
def tsm_resnet18(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return TSMBackbone("resnet18", pretrained, weights_path, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# per-frame 2D encoder + temporal model (GRU, temporal convolutions)
# --------------------------------------------------------------------------------------------------------------------


class _FrameCNN(nn.Module):
    """The small per-frame CNN of `video_tcn`, pooled to one vector: (N, 3, h, w) -> (N, C)."""

    def __init__(self, channels: tuple[int, ...] = (24, 48, 64)) -> None:
        super().__init__()
        blocks, cin = [], 3
        for c in channels:
            blocks.append(_frame_block(cin, int(c)))
            cin = int(c)
        self.features = nn.Sequential(*blocks)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # (N, C)


class _FrameMobileNet(nn.Module):
    """MobileNetV3-small per frame, pooled: (N, 3, h, w) -> (N, 576)."""

    def __init__(self, pretrained: bool, weights_path: str | Path | None) -> None:
        super().__init__()
        self.net = TorchvisionBackbone("mobilenetv3_small", pretrained, weights_path)
        self.out_dim = self.net.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x))  # (N, 576)


def _frame_encoder(name: str, frame: str, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    if frame == "mobilenetv3_small":
        return _FrameMobileNet(pretrained, weights_path)
    if frame == "cnn":
        if pretrained:
            raise ModelError(
                f"backbone {name!r}: frame='cnn' is trained from scratch (no library weights); set "
                f"pretrained: false or frame='mobilenetv3_small'"
            )
        return _FrameCNN()
    raise ModelError(f"backbone {name!r}: frame must be 'cnn' or 'mobilenetv3_small', got {frame!r}")


def _per_frame(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, h, w) -> (B, T, C): the encoder on every frame, as one batch of B*T images."""
    T = int(x.shape[1])
    return encoder(x.flatten(0, 1)).reshape(-1, T, encoder.out_dim)  # (B*T, C) -> (B, T, C)


class VideoGRU(Backbone):
    """Per-frame encoder -> GRU over time. (B, T, 3, h, w) -> map (B, D, 1, T') of the GRU outputs, embedding (B, D)
    their mean over time. `weights_path` loads a state dict of this whole backbone (a library model's weights only
    through `pretrained` with frame='mobilenetv3_small')."""

    modality = "image"
    input_kind = "video"

    def __init__(
        self,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        frame: str = "cnn",
        stem: str = "raw",
        hidden: int = 128,
        layers: int = 1,
    ) -> None:
        super().__init__()
        _check_stem("video_gru", stem)
        _check_weights_args("video_gru", pretrained, weights_path)
        if hidden < 1 or layers < 1:
            raise ModelError(f"backbone 'video_gru': hidden and layers must be >= 1, got {hidden}, {layers}")
        self.stem = stem
        self.frames = _frame_encoder("video_gru", frame, pretrained, None)
        self.gru = nn.GRU(self.frames.out_dim, int(hidden), num_layers=int(layers), batch_first=True)
        self.embed_dim = int(hidden)
        if weights_path is not None:
            _load_state_dict(self, weights_path, "backbone 'video_gru'")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = _per_frame(self.frames, _apply_stem(x, self.stem))  # (B, T', C)
        h, _ = self.gru(f)  # (B, T', D)
        return h.transpose(1, 2).unsqueeze(2)  # (B, D, 1, T')


class FrameTConv(Backbone):
    """Per-frame MobileNetV3-small (pooled per frame) -> 1D convolutions over time. (B, T, 3, h, w) -> map
    (B, D, 1, T'), embedding (B, D) (mean over time). `pretrained` loads MobileNetV3-small's ImageNet weights into
    the per-frame encoder; `weights_path` a state dict of this whole backbone."""

    modality = "image"
    input_kind = "video"

    def __init__(
        self,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        stem: str = "raw",
        embed_dim: int = 256,
        temporal_layers: int = 2,
        temporal_kernel: int = 3,
    ) -> None:
        super().__init__()
        _check_stem("mobilenetv3_small_tconv", stem)
        _check_weights_args("mobilenetv3_small_tconv", pretrained, weights_path)
        if temporal_layers < 1 or temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ModelError("backbone 'mobilenetv3_small_tconv' needs temporal_layers >= 1 and an odd temporal_kernel")
        self.stem = stem
        self.frames = _FrameMobileNet(pretrained, None)
        self.embed_dim = int(embed_dim)
        blocks, cin = [], self.frames.out_dim
        for _ in range(temporal_layers):
            blocks.append(_time_block(cin, self.embed_dim, temporal_kernel))
            cin = self.embed_dim
        self.temporal = nn.Sequential(*blocks)
        if weights_path is not None:
            _load_state_dict(self, weights_path, "backbone 'mobilenetv3_small_tconv'")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = _per_frame(self.frames, _apply_stem(x, self.stem))  # (B, T', 576)
        return self.temporal(f.transpose(1, 2)).unsqueeze(2)  # (B, 576, T') -> (B, D, T') -> (B, D, 1, T')


@BACKBONES.register(
    "video_gru",
    modality="image",
    input_kind="video",
    embed_dim=128,
    source="edgeav (per-frame CNN + GRU; frame='mobilenetv3_small' from torchvision)",
)
def video_gru(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return VideoGRU(pretrained=pretrained, weights_path=weights_path, **kwargs)


@BACKBONES.register(
    "mobilenetv3_small_tconv",
    modality="image",
    input_kind="video",
    embed_dim=256,
    source="torchvision MobileNetV3-small per frame + temporal convolutions",
)
def mobilenetv3_small_tconv(
    pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any
) -> Backbone:
    return FrameTConv(pretrained=pretrained, weights_path=weights_path, **kwargs)


__all__ = ["FrameTConv", "TSMBackbone", "TemporalShift", "TorchvisionVideoBackbone", "VideoGRU"]
