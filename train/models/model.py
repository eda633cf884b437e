"""The fused audio+image classifier, built from architecture keys.

    model(audio (B, T) float32, image (B, 3, H, W) uint8, mask (B, 2) float32) -> AVOutput(logits, logits_audio, logits_image)

(image (B, T, 3, H, W) uint8 when the contract carries T > 1 frames per window; the image backbone is then a
temporal one, `input_kind="video"`, and still gives a (B, D, h, w) map and a (B, D) embedding.)

each (B, C). `mask` is [audio_present, image_present] per sample (1 = present).

Missing modalities. A missing modality's feature map and embedding are multiplied by 0 before fusion, its auxiliary
logits are 0 (uniform probabilities), and the fused output falls back to the present modality's auxiliary head:

    logits = m_a m_i * fused + m_a (1 - m_i) * logits_audio + (1 - m_a) m_i * logits_image

so with mask [1, 0] the outputs do not depend on the image input at all (and `logits == logits_audio`), with [0, 1]
they do not depend on the audio, and with [0, 0] every logit is 0. Train with `modality_dropout` so that the
auxiliary heads are good on their own.

Submodule names are part of the export contract: `frontend` (kept out of INT8, ONNX names /frontend/...),
`audio_backbone`, `image_backbone`, `fusion`, `aux_audio`, `aux_image`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from edgeav.contract import InputContract
from edgeav.errors import ModelError, UnknownNameError
from edgeav.train.models.backbones import BACKBONES, Backbone, backbone_names
from edgeav.train.models.frontend import Frontend
from edgeav.train.models.heads import HEADS, Branches, create_head
from edgeav.train.models.weights import create_branch, plan_weights

log = logging.getLogger(__name__)

OUTPUT_NAMES: tuple[str, str, str] = ("logits", "logits_audio", "logits_image")

DEFAULT_AUDIO_BACKBONE = "audio_cnn"
DEFAULT_IMAGE_BACKBONE = "mobilenetv3_small"
DEFAULT_HEAD = "hdmf"
DEFAULT_TEMPORAL_BACKBONE = "video_tcn"  # the temporal picture branch the representative set runs over every head
INPUT_NAMES: tuple[str, str, str] = ("audio", "image", "mask")


class AVOutput(NamedTuple):
    logits: torch.Tensor  # (B, C) fused
    logits_audio: torch.Tensor  # (B, C) audio-only auxiliary head
    logits_image: torch.Tensor  # (B, C) image-only auxiliary head


class Arch(BaseModel):
    """Architecture keys: what a checkpoint stores to rebuild its model (with the labels)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Named model this came from (informational).")
    audio_backbone: str | None = Field(
        DEFAULT_AUDIO_BACKBONE, description="Audio backbone; null for a shared-encoder head."
    )
    image_backbone: str = Field(
        DEFAULT_IMAGE_BACKBONE, description="Image backbone (the shared encoder for shared_2d)."
    )
    head: str = Field(DEFAULT_HEAD, description="Fusion head.")
    audio_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the audio backbone.")
    image_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the image backbone.")
    head_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the fusion head.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the auxiliary classifiers.")
    pretrained: bool = Field(False, description="Load library weights into the backbones when built for training.")
    contract: InputContract = Field(default_factory=InputContract, description="Input contract.")


def parse_arch(arch: dict[str, Any] | Arch) -> Arch:
    """Validated architecture keys. An unknown backbone or head name raises `UnknownNameError` (exit 2) listing the
    valid names; a combination the registries do not allow, or a bad key, raises `ModelError`."""
    try:
        spec = arch if isinstance(arch, Arch) else Arch.model_validate(arch)
    except ValidationError as e:
        first = e.errors()[0]
        raise ModelError(f"bad architecture keys: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def known(kind: str) -> list[str]:  # the names that fit this key, not every registry entry
        return HEADS.names() if kind == "fusion head" else backbone_names(kind.split()[0])

    for kind, reg, value in (
        ("audio backbone", BACKBONES, spec.audio_backbone),
        ("image backbone", BACKBONES, spec.image_backbone),
        ("fusion head", HEADS, spec.head),
    ):
        if value is not None and value not in reg:
            raise UnknownNameError(
                f"unknown {kind} {value!r} in the architecture keys; this edgeav knows: {', '.join(known(kind))}"
            )
    shared = bool(HEADS.meta(spec.head).get("shared_encoder"))
    if shared and spec.audio_backbone is not None:
        raise ModelError(
            f"head {spec.head!r} runs one shared encoder (image_backbone={spec.image_backbone!r}) over "
            f"both modalities; set audio_backbone to null"
        )
    if not shared and spec.audio_backbone is None:
        raise ModelError(f"head {spec.head!r} needs an audio backbone")
    if spec.audio_backbone is not None and BACKBONES.meta(spec.audio_backbone)["modality"] != "audio":
        raise ModelError(
            f"audio_backbone {spec.audio_backbone!r} is an image backbone; audio ones: "
            f"{', '.join(n for n in BACKBONES.names() if BACKBONES.meta(n)['modality'] == 'audio')}"
        )
    if BACKBONES.meta(spec.image_backbone)["modality"] != "image":
        raise ModelError(f"image_backbone {spec.image_backbone!r} is an audio backbone")
    _check_clip(spec, shared)
    check_audio_frontend(spec)
    return spec


def check_audio_frontend(spec: Arch) -> None:
    """An audio backbone with its own front end (registry meta `audio_frontend`: BirdNET takes 48 kHz, 3 s) needs a
    contract with exactly that sample rate and window; anything else is a one-line `ModelError`, never a resample."""
    fixed = BACKBONES.meta(spec.audio_backbone).get("audio_frontend") if spec.audio_backbone is not None else None
    a = spec.contract.audio
    if fixed and (a.sample_rate_hz, a.window_s) != (fixed["sample_rate_hz"], fixed["window_s"]):
        raise ModelError(
            f"audio_backbone {spec.audio_backbone!r} takes {fixed['sample_rate_hz']} Hz mono in "
            f"{fixed['window_s']:g} s windows (its own front end), the contract gives {a.sample_rate_hz} "
            f"Hz, {a.window_s:g} s: set data.sample_rate_hz: {fixed['sample_rate_hz']} and data.window_s: "
            f"{fixed['window_s']:g}"
        )


def _check_clip(spec: Arch, shared: bool) -> None:
    """A temporal image backbone needs T >= 2 frames per window, a still one exactly 1."""
    temporal, T = is_temporal(spec.image_backbone), spec.contract.image.n_frames
    if shared and temporal:
        raise ModelError(
            f"head {spec.head!r} runs one 2D encoder over a canvas; {spec.image_backbone!r} is a "
            f"temporal backbone (clips of frames): give a still-image backbone"
        )
    if temporal and T < 2:
        raise ModelError(
            f"image_backbone {spec.image_backbone!r} reads motion over a window's frames, the contract "
            f"gives {T}: set data.frames_per_window >= 2 and data.frame_rate_hz"
        )
    if not temporal and T > 1:
        raise ModelError(
            f"image_backbone {spec.image_backbone!r} takes one frame, the contract gives {T} per window; "
            f"temporal backbones: {', '.join(temporal_backbone_names())}"
        )


def is_temporal(image_backbone: str) -> bool:
    """True for backbones that take a clip (B, T, 3, H, W) (`input_kind="video"`), False for stills."""
    return BACKBONES.meta(image_backbone).get("input_kind") == "video"


def temporal_backbone_names() -> list[str]:
    return [n for n in BACKBONES.names() if BACKBONES.meta(n).get("input_kind") == "video"]


ArchTriple = tuple[str | None, str, str]
"""(audio backbone or None, image backbone, fusion head): the registry part of the architecture keys."""


def allowed_archs(scope: Literal["representative", "full"] = "representative") -> list[ArchTriple]:
    """The (audio backbone, image backbone, head) combinations the registries allow, in a stable order.

    "full": every fusion head over every (audio, image) backbone pair, and every shared-encoder head (shared_2d)
    with every still-image backbone as its encoder (audio None). Triples with a temporal image backbone
    (`is_temporal`) need a contract with T > 1 frames per window. These are exactly the triples `parse_arch` accepts.
    "representative": every registry entry at least once, each beside the defaults: every head with the default
    pair (a shared-encoder head with the default image backbone as its encoder), every audio backbone with the
    default image backbone and head, every image backbone (still or temporal) with the default audio backbone and
    head, and the default temporal backbone (`DEFAULT_TEMPORAL_BACKBONE`) with every fused head, which then meets a
    clip's map (time as its width).
    """
    audio = [n for n in BACKBONES.names() if BACKBONES.meta(n)["modality"] == "audio"]
    image = [n for n in BACKBONES.names() if BACKBONES.meta(n)["modality"] == "image"]
    shared = [h for h in HEADS.names() if HEADS.meta(h).get("shared_encoder")]
    fused = [h for h in HEADS.names() if h not in shared]
    stills = [i for i in image if not is_temporal(i)]  # a shared 2D encoder takes stills only
    if scope == "full":
        out: list[ArchTriple] = [(a, i, h) for h in fused for a in audio for i in image]
        return out + [(None, i, h) for h in shared for i in stills]
    if scope != "representative":
        raise ValueError(f"scope must be 'representative' or 'full', got {scope!r}")
    out = [(DEFAULT_AUDIO_BACKBONE, DEFAULT_IMAGE_BACKBONE, h) for h in fused]
    out += [(None, DEFAULT_IMAGE_BACKBONE, h) for h in shared]
    out += [(a, DEFAULT_IMAGE_BACKBONE, DEFAULT_HEAD) for a in audio]
    out += [(DEFAULT_AUDIO_BACKBONE, i, DEFAULT_HEAD) for i in image]
    out += [(DEFAULT_AUDIO_BACKBONE, DEFAULT_TEMPORAL_BACKBONE, h) for h in fused]
    return list(dict.fromkeys(out))  # drop the repeats of the default triple, keep the order


def _aux(dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))


class AVClassifier(nn.Module):
    """Two backbones, a fusion head, and one auxiliary classifier per modality. See the module docstring.

    `forward_features` calls each submodule itself (`self.frontend(...)`, `self.audio_backbone(...)`, ...), never
    only its methods: the ONNX node names (/frontend/..., /audio_backbone/..., /image_backbone/..., /fusion/...),
    forward hooks and the per-branch FLOP count all rely on it.
    """

    def __init__(
        self,
        audio_backbone: Backbone | None,
        image_backbone: Backbone,
        fusion: nn.Module,
        num_classes: int,
        contract: InputContract,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        audio_dim = (audio_backbone if audio_backbone is not None else image_backbone).embed_dim
        audio_input = "waveform" if audio_backbone is not None and audio_backbone.input_kind == "waveform" else "logmel"
        self.contract = contract
        self.num_classes = num_classes
        self.frontend = Frontend(contract, audio_input=audio_input)
        self.audio_backbone = audio_backbone
        self.image_backbone = image_backbone
        self.fusion = fusion
        self.aux_audio = _aux(audio_dim, num_classes, dropout)
        self.aux_image = _aux(image_backbone.embed_dim, num_classes, dropout)
        self.arch: dict[str, Any] = {}
        self.labels: list[str] = []

    def forward_features(self, audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> Branches:
        """Per-modality maps and embeddings, the missing modality zeroed; logits fields are left empty (B, 0)."""
        a_in, i_in = self.frontend(audio, image)  # (B, 1, M, frames) log-mel (or (B, T) waveform), (B, [T,] 3, h, w)
        fa, za = self.audio_backbone(a_in)  # (B, Da, f, t), (B, Da)
        fi, zi = self.image_backbone(i_in)  # (B, Di, h, w), (B, Di)
        return Branches.masked(fa, fi, za, zi, mask)

    def forward_head(self, b: Branches) -> AVOutput:
        m_a, m_i = b.mask[:, 0:1], b.mask[:, 1:2]  # (B, 1) each
        la = self.aux_audio(b.audio_emb) * m_a  # (B, C)
        li = self.aux_image(b.image_emb) * m_i  # (B, C)
        fused = self.fusion(b._replace(audio_logits=la, image_logits=li))  # (B, C)
        logits = m_a * m_i * fused + m_a * (1.0 - m_i) * la + (1.0 - m_a) * m_i * li  # (B, C)
        return AVOutput(logits, la, li)

    def forward(self, audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> AVOutput:
        return self.forward_head(self.forward_features(audio, image, mask))

    def backbones(self) -> list[nn.Module]:
        return [m for m in (self.audio_backbone, self.image_backbone) if m is not None]


class SharedAVClassifier(AVClassifier):
    """One 2D encoder over a canvas: the log-mel (input BN, resized to H x W, repeated to RGB) left, the image right:
    (B, 3, H, 2W). The encoder's map splits into an audio half and an image half; the auxiliary heads read the
    halves, the fused head the whole. A missing modality's half of the canvas is zero, so it cannot leak. With both
    present, the halves meet at the seam, so `logits_audio` sees a little of the image through the receptive field."""

    def __init__(
        self, encoder: Backbone, fusion: nn.Module, num_classes: int, contract: InputContract, dropout: float = 0.2
    ) -> None:
        super().__init__(None, encoder, fusion, num_classes, contract, dropout)
        self.spec_norm = nn.BatchNorm2d(1)

    def forward_features(self, audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> Branches:
        m_a, m_i = mask[:, 0:1], mask[:, 1:2]  # (B, 1) each
        spec, img = self.frontend(audio, image)  # (B, 1, M, frames), (B, 3, H, W)
        img = img * m_i.view(-1, 1, 1, 1)  # (B, 3, H, W)
        H, W = int(img.shape[2]), int(img.shape[3])
        spec = self.spec_norm(spec)  # (B, 1, M, frames)
        spec = F.interpolate(spec, size=(H, W), mode="bilinear", align_corners=False)  # (B, 1, H, W)
        spec = spec.expand(-1, 3, -1, -1) * m_a.view(-1, 1, 1, 1)  # (B, 3, H, W)
        canvas = torch.cat([spec, img], dim=3)  # (B, 3, H, 2W)
        fmap, _ = self.image_backbone(canvas)  # (B, D, h, w2)
        half = int(fmap.shape[3]) // 2
        fa = fmap[:, :, :, :half] * m_a.view(-1, 1, 1, 1)  # (B, D, h, w2/2)
        fi = fmap[:, :, :, half:] * m_i.view(-1, 1, 1, 1)  # (B, D, h, w2/2)
        za = self.image_backbone.forward_head(fa) * m_a  # (B, D)
        zi = self.image_backbone.forward_head(fi) * m_i  # (B, D)
        empty = mask[:, :0]
        return Branches(fa, fi, za, zi, empty, empty, mask)

    def backbones(self) -> list[nn.Module]:
        return [self.image_backbone, self.spec_norm]  # the spectrogram's input norm belongs to the encoder's input


def build_model(
    arch: dict[str, Any] | Arch,
    labels: Sequence[str] | int,
    *,
    contract: InputContract | None = None,
    pretrained: bool | str | Path | None = None,
    audio_weights_path: str | Path | None = None,
    image_weights_path: str | Path | None = None,
) -> AVClassifier:
    """Build a model from architecture keys (the dict a checkpoint stores) and labels (or a class count).

    `contract` overrides arch["contract"]; `pretrained` overrides arch["pretrained"] (a checkpoint rebuild passes
    False: its weights come from the file) and may be a local folder or file; the weights paths load local state
    dicts into one backbone each (`edgeav.train.models.weights`: the rule when both are given, the errors).
    """
    spec = parse_arch(arch)
    if contract is not None:
        spec = spec.model_copy(update={"contract": contract})
        _check_clip(spec, bool(HEADS.meta(spec.head).get("shared_encoder")))
        check_audio_frontend(spec)
    use_pretrained = spec.pretrained if pretrained is None else pretrained
    label_list = [f"class_{i}" for i in range(labels)] if isinstance(labels, int) else [str(x) for x in labels]
    if not label_list:
        raise ModelError("a model needs at least one label")
    C = len(label_list)
    plan = plan_weights(
        use_pretrained,
        ["image"] if spec.audio_backbone is None else ["audio", "image"],
        audio_weights_path,
        image_weights_path,
    )
    try:
        image = create_branch(spec.image_backbone, "image", plan["image"], **spec.image_kwargs)
        if spec.audio_backbone is None:
            fusion = create_head(spec.head, image.embed_dim, image.embed_dim, C, **spec.head_kwargs)
            model: AVClassifier = SharedAVClassifier(image, fusion, C, spec.contract, spec.dropout)
        else:
            audio_kwargs = dict(spec.audio_kwargs)
            if BACKBONES.meta(spec.audio_backbone).get("logmel_shape_kwargs"):  # input size fixed at build time
                audio_kwargs.setdefault("n_mels", spec.contract.audio.n_mels)
                audio_kwargs.setdefault("max_frames", spec.contract.audio.n_frames)
            audio = create_branch(spec.audio_backbone, "audio", plan["audio"], **audio_kwargs)
            fusion = create_head(spec.head, audio.embed_dim, image.embed_dim, C, **spec.head_kwargs)
            model = AVClassifier(audio, image, fusion, C, spec.contract, spec.dropout)
    except TypeError as e:  # bad *_kwargs
        raise ModelError(f"bad architecture arguments: {e}") from None
    model.arch = spec.model_dump(mode="json")
    model.labels = label_list
    log.debug(
        "built %s (%s + %s -> %s, %d classes)",
        spec.name or "model",
        spec.audio_backbone,
        spec.image_backbone,
        spec.head,
        C,
    )
    return model


def modality_dropout(
    mask: torch.Tensor, p_audio: float = 0.15, p_image: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training augmentation: drop the audio of a sample with probability p_audio, else its image with probability
    p_image (never both; samples already missing a modality keep their other one). Returns a new (B, 2) mask."""
    if p_audio < 0 or p_image < 0 or p_audio + p_image > 1:
        raise ModelError(
            f"modality dropout: need p_audio, p_image >= 0 and p_audio + p_image <= 1, got {p_audio}, {p_image}"
        )
    u = torch.rand(mask.shape[0], generator=generator, device="cpu").to(mask.device)  # (B,)
    both = (mask[:, 0] > 0) & (mask[:, 1] > 0)  # (B,) only fully present samples can lose one
    out = mask.clone()
    out[:, 0] = torch.where(both & (u < p_audio), torch.zeros_like(out[:, 0]), out[:, 0])
    out[:, 1] = torch.where(both & (u >= p_audio) & (u < p_audio + p_image), torch.zeros_like(out[:, 1]), out[:, 1])
    return out


class ExportWrapper(nn.Module):
    """Thin wrapper for ONNX export: plain 3-tuple output in `OUTPUT_NAMES` order.

    It runs the classifier's `forward` directly (not `self.model(...)`), so the exporter opens no "/model" scope:
    the ONNX node names are those of the classifier's own submodules, /frontend/... for the front end
    (`FRONTEND_NODE_PREFIX`), /audio_backbone/..., /image_backbone/..., /fusion/...

    The wrapper takes the model's mode (eval or train): torch.onnx.export puts the wrapper back in the mode it
    found after exporting, which would otherwise switch an eval model to training (BatchNorm, dropout)."""

    def __init__(self, model: AVClassifier) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward(audio, image, mask)  # no __call__: keeps node names rooted at the classifier
        return out.logits, out.logits_audio, out.logits_image


def example_inputs(
    contract: InputContract, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the contract's shapes: audio (B, T) float32 in [-0.5, 0.5], image (B, 3, H, W) uint8, mask ones."""
    g = torch.Generator().manual_seed(seed)
    shapes = contract.shapes(batch)
    audio = torch.rand(shapes["audio"], generator=g) - 0.5  # (B, T)
    image = torch.randint(0, 256, shapes["image"], generator=g, dtype=torch.uint8)  # (B, 3, H, W)
    return audio, image, torch.ones(shapes["mask"])  # mask (B, 2)


def param_groups(
    model: AVClassifier, backbone_lr: float, head_lr: float, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Differential learning rates (HD-MF): backbones at `backbone_lr`, fusion + auxiliary heads at `head_lr`."""
    backbone_ids = {id(p) for m in model.backbones() for p in m.parameters()}
    bb = [p for p in model.parameters() if id(p) in backbone_ids and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    return [
        {"params": bb, "lr": backbone_lr, "weight_decay": weight_decay, "name": "backbones"},
        {"params": rest, "lr": head_lr, "weight_decay": weight_decay, "name": "fusion"},
    ]


def freeze_backbones(model: AVClassifier, frozen: bool = True) -> None:
    """Two-phase training, phase II: freeze the unimodal backbones (and their BatchNorm statistics: call
    `model.train()` then this, it puts them in eval mode) and train only fusion + dense layers."""
    for m in model.backbones():
        for p in m.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            m.eval()
