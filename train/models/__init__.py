"""edgeav.train.models: backbones, fusion heads, the fused classifier, named models, checkpoints.

    from edgeav.train.models import build_model, create_model, load_checkpoint
    model = create_model("edgeav-small", labels)                  # or build_model(arch_dict, labels)
    out = model(audio, image, mask)   # (B, T) float32, (B, 3, H, W) uint8 (or (B, T, 3, H, W)), (B, 2) float32
    out.logits, out.logits_audio, out.logits_image                # (B, C) each

The in-model front end's ONNX nodes are named /frontend/... (`FRONTEND_NODE_PREFIX`): keep them out of INT8.
"""

from edgeav.train.models import (
    birdnet,  # noqa: F401  (registers birdnet_v24: BirdNET V2.4, converted locally)
    cfnsr,  # noqa: F401  (registers the cfnsr fusion head)
    temporal,  # noqa: F401  (registers the temporal picture backbones: video_tcn)
    video,  # noqa: F401  (torchvision video CNNs, temporal shift, per-frame + GRU / tconv)
)
from edgeav.train.models.backbones import BACKBONES, Backbone, BackboneOutput, backbone_names, create_backbone
from edgeav.train.models.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from edgeav.train.models.frontend import FRONTEND_NODE_PREFIX, Frontend, ImageNormalize, LogMel, mel_filterbank
from edgeav.train.models.heads import HEADS, Branches, create_head
from edgeav.train.models.model import (
    DEFAULT_AUDIO_BACKBONE,
    DEFAULT_HEAD,
    DEFAULT_IMAGE_BACKBONE,
    INPUT_NAMES,
    OUTPUT_NAMES,
    Arch,
    ArchTriple,
    AVClassifier,
    AVOutput,
    ExportWrapper,
    SharedAVClassifier,
    allowed_archs,
    build_model,
    example_inputs,
    freeze_backbones,
    modality_dropout,
    param_groups,
    parse_arch,
)
from edgeav.train.models.named import (
    DEFAULT_MODEL,
    NAMED_MODELS,
    build_model_from_config,
    create_model,
    named_arch,
    resolve_arch,
)
from edgeav.train.models.stats import FLOP_CONVENTION, model_stats

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneOutput",
    "backbone_names",
    "create_backbone",
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointInfo",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "FRONTEND_NODE_PREFIX",
    "Frontend",
    "ImageNormalize",
    "LogMel",
    "mel_filterbank",
    "HEADS",
    "Branches",
    "create_head",
    "DEFAULT_AUDIO_BACKBONE",
    "DEFAULT_HEAD",
    "DEFAULT_IMAGE_BACKBONE",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "Arch",
    "ArchTriple",
    "allowed_archs",
    "AVClassifier",
    "AVOutput",
    "ExportWrapper",
    "SharedAVClassifier",
    "build_model",
    "example_inputs",
    "freeze_backbones",
    "modality_dropout",
    "param_groups",
    "parse_arch",
    "DEFAULT_MODEL",
    "NAMED_MODELS",
    "build_model_from_config",
    "create_model",
    "named_arch",
    "resolve_arch",
    "FLOP_CONVENTION",
    "model_stats",
]
