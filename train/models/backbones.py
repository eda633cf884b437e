"""Backbone registry: image CNNs from torchvision, a log-mel CNN trained from scratch, image CNNs on spectrograms,
and optional transformer audio encoders from `transformers`.

Interface (every entry):

- `modality`: "audio" or "image".
- `input_kind`: what `forward_features` takes:
  "image"   (B, 3, H, W) float32, already normalized by the model's front end;
  "logmel"  (B, 1, n_mels, n_frames) float32 in dB, from the model's front end;
  "waveform" (B, T) float32 at the contract sample rate (wav2vec2 only).
- `embed_dim`: channels of the feature map and size of the pooled embedding.
- `forward_features(x) -> (B, embed_dim, h, w)`: the last spatial map. Audio maps are (frequency, time); encoders
  without a spatial grid (transformers) give (B, D, 1, tokens). Fusion heads that need maps (csim, hdmf, cfnsr) use it.
- `forward_head(feature_map) -> (B, embed_dim)`: the pooled embedding (global average pool, plus the library's own
  pre-classifier norm where it has one).
- `forward(x) -> BackboneOutput(map, emb)`: both at once. The model calls the backbone itself (not its methods), so
  hooks, FLOP counting per branch and ONNX node names (/audio_backbone/..., /image_backbone/...) see the whole branch.

Weights: `pretrained=True` loads the library's own weights (torchvision weights API / `from_pretrained`), which needs
the network or a filled cache; `weights_path` loads a local state dict of the *library* model (what
`torch.save(torchvision.models.resnet18(...).state_dict(), path)` writes) with no network. Asking for both is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from edgeav.errors import ModelError
from edgeav.registry import Registry

log = logging.getLogger(__name__)

BACKBONES: Registry[Backbone] = Registry("backbone")

TRANSFORMERS_EXTRA = "transformers"
"""The pip extra that provides `transformers` for the wav2vec2 / AST entries: pip install 'edgeav[transformers]'."""


class BackboneOutput(NamedTuple):
    map: torch.Tensor  # (B, D, h, w) last feature map
    emb: torch.Tensor  # (B, D) pooled embedding


class Backbone(nn.Module):
    modality: str = "image"
    input_kind: str = "image"
    embed_dim: int = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, h, w)
        raise NotImplementedError

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))  # (B, D, h, w) -> (B, D)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        fmap = self.forward_features(x)  # (B, D, h, w)
        return BackboneOutput(fmap, self.forward_head(fmap))  # (B, D, h, w), (B, D)


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Create a backbone by registry name; unknown names raise `UnknownNameError` listing the valid ones."""
    return BACKBONES.create(name, **kwargs)


def backbone_names(modality: str | None = None) -> list[str]:
    return [n for n in BACKBONES.names() if modality is None or BACKBONES.meta(n)["modality"] == modality]


def _load_state_dict(module: nn.Module, weights_path: str | Path, what: str) -> None:
    """Strict load with a one-line error naming the file and the first mismatched key (`weights.load_strict`)."""
    from edgeav.train.models.weights import load_strict, read_state_dict

    load_strict(module, read_state_dict(weights_path, what), weights_path, what)
    log.info("%s: loaded weights from %s", what, weights_path)


def _check_weights_args(name: str, pretrained: bool, weights_path: str | Path | None) -> None:
    if pretrained and weights_path is not None:
        raise ModelError(f"backbone {name!r}: give pretrained=True or weights_path, not both")


# --------------------------------------------------------------------------------------------------------------------
# torchvision image CNNs
# --------------------------------------------------------------------------------------------------------------------

# registry name -> (torchvision builder, embed dim)
_TORCHVISION: dict[str, tuple[str, int]] = {
    "mobilenetv3_small": ("mobilenet_v3_small", 576),
    "mobilenetv3_large": ("mobilenet_v3_large", 960),
    "efficientnet_b0": ("efficientnet_b0", 1280),
    "resnet18": ("resnet18", 512),
    "resnet50": ("resnet50", 2048),
    "convnext_tiny": ("convnext_tiny", 768),
}


def _torchvision_model(name: str, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    return build_torchvision(name, "torchvision.models", _TORCHVISION[name][0], pretrained, weights_path)


def build_torchvision(
    name: str, module: str, builder_name: str, pretrained: bool, weights_path: str | Path | None
) -> nn.Module:
    """torchvision's `module.builder_name` (e.g. torchvision.models.video.r3d_18) with its DEFAULT weights, none, or
    a local state dict of that library model; a failed download is a one-line `ModelError`."""
    import importlib

    _check_weights_args(name, pretrained, weights_path)
    builder = getattr(importlib.import_module(module), builder_name)
    if pretrained:
        try:
            net = builder(weights="DEFAULT")
        except Exception as e:  # no network and no cache, or a broken download
            raise ModelError(
                f"backbone {name!r}: cannot load torchvision's pretrained weights ({type(e).__name__}: {e}); "
                f"without network, pass weights_path= a local state dict of {module}.{builder_name}"
            ) from None
        log.info("backbone %s: torchvision pretrained weights (DEFAULT)", name)
    else:
        net = builder(weights=None)
    if weights_path is not None:
        _load_state_dict(net, weights_path, f"backbone {name!r}")
    return net


def _adapt_first_conv_to_mono(net: nn.Module) -> None:
    """Replace the first 3-channel Conv2d by a 1-channel one whose kernel is the sum over RGB (keeps pretrained use)."""
    for parent in net.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                mono = nn.Conv2d(
                    1,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                )
                with torch.no_grad():
                    mono.weight.copy_(child.weight.sum(dim=1, keepdim=True))
                    if child.bias is not None:
                        mono.bias.copy_(child.bias)
                setattr(parent, child_name, mono)
                return
    raise ModelError(f"{type(net).__name__}: no 3-channel first convolution to adapt")  # pragma: no cover


class TorchvisionBackbone(Backbone):
    """A torchvision classifier cut before its pooling; `mono=True` takes a 1-channel log-mel instead of RGB."""

    def __init__(
        self, name: str, pretrained: bool = False, weights_path: str | Path | None = None, mono: bool = False
    ) -> None:
        super().__init__()
        net = _torchvision_model(name, pretrained, weights_path)
        if mono:
            _adapt_first_conv_to_mono(net)
        self.embed_dim = _TORCHVISION[name][1]
        self.modality = "audio" if mono else "image"
        self.input_kind = "logmel" if mono else "image"
        # log-mel in dB is far from ImageNet statistics: one learned affine brings it near zero mean, unit scale
        self.input_norm = nn.BatchNorm2d(1) if mono else nn.Identity()
        self.norm: nn.Module = nn.Identity()
        if name.startswith("resnet"):
            self.features = nn.Sequential(
                net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
            )
        else:
            self.features = net.features
            if name.startswith("convnext"):
                self.norm = net.classifier[0]  # LayerNorm2d before the classifier, applied to the pooled map

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.input_norm(x))  # (B, C_in, H, W) -> (B, D, h, w)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = fmap.mean(dim=(2, 3), keepdim=True)  # (B, D, 1, 1)
        return self.norm(pooled).flatten(1)  # (B, D)


def _register_torchvision(name: str) -> None:
    def image_factory(pretrained: bool = False, weights_path: str | Path | None = None) -> Backbone:
        return TorchvisionBackbone(name, pretrained, weights_path)

    def audio_factory(pretrained: bool = False, weights_path: str | Path | None = None) -> Backbone:
        return TorchvisionBackbone(name, pretrained, weights_path, mono=True)

    dim = _TORCHVISION[name][1]
    BACKBONES.register(name, modality="image", input_kind="image", embed_dim=dim, source="torchvision")(image_factory)
    BACKBONES.register(
        f"audio_{name}",
        modality="audio",
        input_kind="logmel",
        embed_dim=dim,
        source="torchvision, first conv summed to 1 channel",
    )(audio_factory)


for _name in _TORCHVISION:
    _register_torchvision(_name)


# --------------------------------------------------------------------------------------------------------------------
# log-mel CNN trained from scratch (FCNN style: conv blocks with channel attention)
# --------------------------------------------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Channel attention: s = sigmoid(W2 relu(W1 GAP(x))), x * s."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))  # (B, C, 1, 1)
        return x * s  # (B, C, F, T)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvSEBlock(nn.Module):
    """conv3x3-BN-ReLU x2, squeeze-excitation, 2x2 average pool (halves frequency and time)."""

    def __init__(self, cin: int, cout: int, pool: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout)
        self.conv2 = _conv_bn_relu(cout, cout)
        self.se = SqueezeExcite(cout)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.se(self.conv2(self.conv1(x))))  # (B, Cin, F, T) -> (B, Cout, F/2, T/2)


class AudioCNN(Backbone):
    """Log-mel CNN from scratch in the style of the scene papers' FCNN: input BN, strided stem, conv blocks each
    with squeeze-excitation channel attention, a 1x1 conv to `embed_dim`. Each block halves frequency and time,
    so n_mels >= 8 * 2**len(channels) keeps the last map non-empty (64 mels, 3 blocks: 4 x frames/16)."""

    modality = "audio"
    input_kind = "logmel"

    def __init__(
        self,
        channels: tuple[int, ...] = (24, 48, 96),
        stem_channels: int = 16,
        embed_dim: int = 256,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if pretrained:
            raise ModelError(
                "backbone 'audio_cnn' is trained from scratch: there are no library weights "
                "(pretrained=False; weights_path= loads your own)"
            )
        self.embed_dim = int(embed_dim)
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(_conv_bn_relu(1, stem_channels, 3, stride=2), nn.AvgPool2d(2))
        blocks, cin = [], stem_channels
        for cout in channels:
            blocks.append(ConvSEBlock(cin, cout))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.proj = _conv_bn_relu(cin, self.embed_dim, k=1)
        if weights_path is not None:
            _load_state_dict(self, weights_path, "backbone 'audio_cnn'")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x)  # (B, 1, M, T)
        x = self.stem(x)  # (B, S, M/4, T/4)
        x = self.blocks(x)  # (B, C_last, M/4/2^n, T/4/2^n)
        return self.proj(x)  # (B, D, f, t)


@BACKBONES.register("audio_cnn", modality="audio", input_kind="logmel", embed_dim=256, source="edgeav (from scratch)")
def audio_cnn(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return AudioCNN(pretrained=pretrained, weights_path=weights_path, **kwargs)


@BACKBONES.register(
    "audio_cnn_large", modality="audio", input_kind="logmel", embed_dim=512, source="edgeav (from scratch)"
)
def audio_cnn_large(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    kw: dict[str, Any] = dict(channels=(64, 128, 256), stem_channels=32, embed_dim=512)
    kw.update(kwargs)
    return AudioCNN(pretrained=pretrained, weights_path=weights_path, **kw)


# --------------------------------------------------------------------------------------------------------------------
# optional: transformer audio encoders through `transformers`
# --------------------------------------------------------------------------------------------------------------------


def _require_transformers(name: str) -> Any:
    try:
        import transformers
    except ModuleNotFoundError:
        raise ModelError(
            f"backbone {name!r} needs the Python package 'transformers', which is not installed; "
            f"install it with: pip install 'edgeav[{TRANSFORMERS_EXTRA}]'"
        ) from None
    return transformers


class Wav2Vec2Backbone(Backbone):
    """wav2vec 2.0 base on the raw waveform; tokens every 20 ms. Map: (B, 768, 1, tokens).

    LayerDrop is off (the library's config skips each transformer layer with p=0.1 in training): a skipped layer's
    parameters get no gradient in that step, which DDP refuses (every parameter must be in the graph) and which
    makes steps of one run differ in depth. Dropout and the feature-level masking stay as configured."""

    modality = "audio"
    input_kind = "waveform"

    def __init__(
        self, pretrained: bool = False, weights_path: str | Path | None = None, hub_id: str = "facebook/wav2vec2-base"
    ) -> None:
        super().__init__()
        tf = _require_transformers("wav2vec2_base")
        _check_weights_args("wav2vec2_base", pretrained, weights_path)
        if pretrained:
            self.encoder = tf.Wav2Vec2Model.from_pretrained(hub_id, layerdrop=0.0)
        else:
            self.encoder = tf.Wav2Vec2Model(tf.Wav2Vec2Config(layerdrop=0.0))
        if weights_path is not None:
            _load_state_dict(self.encoder, weights_path, "backbone 'wav2vec2_base'")
        self.embed_dim = int(self.encoder.config.hidden_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x).last_hidden_state  # (B, T/320, D)
        return h.transpose(1, 2).unsqueeze(2)  # (B, D, 1, tokens)


class ASTBackbone(Backbone):
    """Audio Spectrogram Transformer on our log-mel (B, 1, M, frames); patch tokens as (B, 768, 1, tokens).

    Its position embeddings fix the input size: `n_mels` bands and `max_frames` frames. The model builder passes the
    contract's (registry meta `logmel_shape_kwargs`), so the log-mel fits as it is. The pretrained AudioSet model
    was trained on 128 bands x 1024 frames with its own normalization: asking for it with another size is an error
    (use a contract with n_mels=128, or train from scratch)."""

    modality = "audio"
    input_kind = "logmel"
    PRETRAINED_SHAPE = (128, 1024)

    def __init__(
        self,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        hub_id: str = "MIT/ast-finetuned-audioset-10-10-0.4593",
        n_mels: int = 128,
        max_frames: int = 1024,
    ) -> None:
        super().__init__()
        tf = _require_transformers("ast")
        _check_weights_args("ast", pretrained, weights_path)
        if pretrained and (n_mels, max_frames) != self.PRETRAINED_SHAPE:
            raise ModelError(
                f"backbone 'ast': the pretrained model takes {self.PRETRAINED_SHAPE[0]} mel bands x "
                f"{self.PRETRAINED_SHAPE[1]} frames, the contract gives {n_mels} x {max_frames}"
            )
        if pretrained:
            self.encoder = tf.ASTModel.from_pretrained(hub_id)
        else:
            self.encoder = tf.ASTModel(tf.ASTConfig(num_mel_bins=n_mels, max_length=max_frames))
        if weights_path is not None:
            _load_state_dict(self.encoder, weights_path, "backbone 'ast'")
        self.embed_dim = int(self.encoder.config.hidden_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_values=x.squeeze(1).transpose(1, 2)).last_hidden_state  # (B, frames, M) -> (B, 2+N, D)
        return h[:, 2:].transpose(1, 2).unsqueeze(2)  # (B, D, 1, N) patch tokens


@BACKBONES.register(
    "wav2vec2_base",
    modality="audio",
    input_kind="waveform",
    embed_dim=768,
    source="transformers (optional extra)",
    extra=TRANSFORMERS_EXTRA,
)
def wav2vec2_base(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return Wav2Vec2Backbone(pretrained, weights_path, **kwargs)


@BACKBONES.register(
    "ast",
    modality="audio",
    input_kind="logmel",
    embed_dim=768,
    source="transformers (optional extra)",
    extra=TRANSFORMERS_EXTRA,
    logmel_shape_kwargs=True,
)
def ast(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return ASTBackbone(pretrained, weights_path, **kwargs)


BackboneFactory = Callable[..., Backbone]
