"""Named models: a name -> architecture keys (backbones, head, input contract) and a default class count.

`create_model(name, labels)` builds one; `named_arch(name)` gives its architecture keys (what `build_model` and a
checkpoint take). `resolve_arch(model_cfg, data_cfg)` turns the `model:` config section into architecture keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ConfigError
from edgeav.registry import Registry

if TYPE_CHECKING:
    from edgeav.schema import EdgeAVConfig
    from edgeav.schema.data import DataConfig
    from edgeav.schema.model import ModelConfig

NAMED_MODELS: Registry[dict[str, Any]] = Registry("named model")
"""Meta of each entry: num_classes (default class count), target, summary; optionally budget_params and
budget_flops, the size a model must keep to run on its target (per window, FLOPs as in `stats.FLOP_CONVENTION`)."""

DEFAULT_MODEL = "edgeav-small"


def _arch(name: str, audio: str | None, image: str, head: str, contract: InputContract, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "audio_backbone": audio,
        "image_backbone": image,
        "head": head,
        "contract": contract.model_dump(mode="json"),
    }
    out.update(kw)
    return out


@NAMED_MODELS.register(
    "edgeav-small",
    num_classes=61,
    target="Jetson Nano",
    budget_params=5_000_000,
    budget_flops=600_000_000,
    summary="default edge model: log-mel CNN + MobileNetV3-small, HD-MF fusion; 5 s / 224 px",
)
def edgeav_small() -> dict[str, Any]:
    return _arch("edgeav-small", "audio_cnn", "mobilenetv3_small", "hdmf", InputContract())


@NAMED_MODELS.register(
    "birds-hdmf",
    num_classes=61,
    target="Jetson Orin / x86",
    summary="HD-MF paper setting (AViS birds): large log-mel CNN + ResNet18, HD-MF; 5 s / 224 px",
)
def birds_hdmf() -> dict[str, Any]:
    return _arch("birds-hdmf", "audio_cnn_large", "resnet18", "hdmf", InputContract())


@NAMED_MODELS.register(
    "scenes-f4",
    num_classes=10,
    target="Jetson Orin / x86",
    summary="two-phase scenes (DCASE 2021 1B): log-mel CNN + EfficientNet-B0, f4 logit fusion; 1 s",
)
def scenes_f4() -> dict[str, Any]:
    return _arch(
        "scenes-f4", "audio_cnn_large", "efficientnet_b0", "linear_f4", InputContract(audio=AudioContract(window_s=1.0))
    )


@NAMED_MODELS.register(
    "scenes-joint",
    num_classes=10,
    target="Jetson Orin / x86",
    summary="joint modeling scenes: log-mel CNN + EfficientNet-B0, concat + MLP 512-128-64; 1 s",
)
def scenes_joint() -> dict[str, Any]:
    return _arch(
        "scenes-joint", "audio_cnn_large", "efficientnet_b0", "concat", InputContract(audio=AudioContract(window_s=1.0))
    )


@NAMED_MODELS.register(
    "emotion-cfnsr",
    num_classes=8,
    target="Jetson Orin / x86",
    summary="CFN-SR (RAVDESS emotion): log-mel CNN + self-attention, ResNet18 faces; 3 s / 112 px",
)
def emotion_cfnsr() -> dict[str, Any]:
    return _arch(
        "emotion-cfnsr",
        "audio_cnn",
        "resnet18",
        "cfnsr",
        InputContract(audio=AudioContract(window_s=3.0), image=ImageContract(height_px=112, width_px=112)),
    )


@NAMED_MODELS.register(
    "emotion-shared2d",
    num_classes=6,
    target="Jetson Orin / x86",
    summary="shared 2D encoder (CREMA-D emotion): ResNet18 over [log-mel | face]; 3 s / 112 px",
)
def emotion_shared2d() -> dict[str, Any]:
    return _arch(
        "emotion-shared2d",
        None,
        "resnet18",
        "shared_2d",
        InputContract(audio=AudioContract(window_s=3.0), image=ImageContract(height_px=112, width_px=112)),
    )


@NAMED_MODELS.register(
    "edgeav-motion",
    num_classes=4,
    target="Jetson Orin Nano",
    budget_params=8_000_000,
    budget_flops=1_500_000_000,
    summary=(
        "edge model for moving pictures: log-mel CNN + video_tcn (40 frames at 25 Hz, frame "
        "differences), HD-MF fusion; 3 s / 112 px"
    ),
)
def edgeav_motion() -> dict[str, Any]:
    return _arch(
        "edgeav-motion",
        "audio_cnn",
        "video_tcn",
        "hdmf",
        InputContract(
            audio=AudioContract(window_s=3.0),
            image=ImageContract(height_px=112, width_px=112, n_frames=40, frame_rate_hz=25.0),
        ),
    )


def named_arch(name: str) -> dict[str, Any]:
    """Architecture keys of a named model; unknown names raise `UnknownNameError` with the valid names."""
    return NAMED_MODELS.create(name)


def create_model(name: str, labels: Sequence[str] | int | None = None, **kwargs: Any) -> Any:
    """Build a named model; `labels` defaults to the model's default class count (placeholder labels)."""
    from edgeav.train.models.model import build_model

    arch = named_arch(name)
    if labels is None:
        labels = int(NAMED_MODELS.meta(name)["num_classes"])
    return build_model(arch, labels, **kwargs)


def resolve_arch(model_cfg: ModelConfig, data_cfg: DataConfig | None = None) -> dict[str, Any]:
    """Architecture keys from the `model:` section and, optionally, the `data:` section.

    Start from the named model (`model.name`), then any backbone/head/kwargs set in the section replace its keys.
    Contract: `model.contract` when given; else the named model's, with the data section's sample rate, window
    and image size (the data section cuts the windows, so the model must take what it cuts).
    """
    base = named_arch(model_cfg.name) if model_cfg.name else {"name": None}
    arch = dict(base)
    for key in ("audio_backbone", "image_backbone", "head"):
        value = getattr(model_cfg, key)
        if value is not None:
            arch[key] = None if value == "none" else value
    for key in ("audio_kwargs", "image_kwargs", "head_kwargs"):
        if getattr(model_cfg, key):
            arch[key] = dict(getattr(model_cfg, key))
    arch["dropout"] = model_cfg.dropout
    arch["pretrained"] = model_cfg.pretrained is True  # library weights; a local path is given to build_model
    if "image_backbone" not in arch or "head" not in arch:
        raise ConfigError("model: give a named model (model.name) or at least model.image_backbone and model.head")
    if model_cfg.contract is not None:
        contract = InputContract.model_validate(model_cfg.contract)
    else:
        contract = InputContract.model_validate(arch.get("contract", {}))
        if data_cfg is not None:
            try:
                contract = InputContract(
                    audio=contract.audio.model_copy(
                        update={"sample_rate_hz": data_cfg.sample_rate_hz, "window_s": data_cfg.window_s}
                    ),
                    image=type(contract.image).model_validate(
                        {
                            **contract.image.model_dump(exclude={"layout"}),
                            "height_px": data_cfg.image_size_px,
                            "width_px": data_cfg.image_size_px,
                            "n_frames": data_cfg.frames_per_window,
                            "frame_rate_hz": data_cfg.frame_rate_hz if data_cfg.frames_per_window > 1 else None,
                        }
                    ),
                )
                InputContract.model_validate(contract.model_dump())  # re-run the cross-field checks
            except ValueError as e:
                raise ConfigError(f"model/data: the data section does not fit the model's contract: {e}") from None
    if model_cfg.image_roi is not None:
        try:
            contract = InputContract.model_validate(
                {**contract.model_dump(), "image": {**contract.image.model_dump(), "roi": model_cfg.image_roi}}
            )
        except ValueError as e:
            raise ConfigError(f"model.image_roi: {e}") from None
    arch["contract"] = contract.model_dump(mode="json")
    return arch


def build_model_from_config(
    cfg: EdgeAVConfig, labels: Sequence[str] | int
) -> tuple[Any, dict[str, Any], InputContract]:
    """The model a whole config asks for: `resolve_arch(cfg.model, cfg.data)`, built with the `model:`
    section's local weights paths. Returns (model, its architecture keys, its input contract)."""
    from edgeav.train.models.model import build_model

    arch = resolve_arch(cfg.model, cfg.data)
    model = build_model(
        arch,
        labels,
        pretrained=cfg.model.pretrained,
        audio_weights_path=cfg.model.audio_weights_path,
        image_weights_path=cfg.model.image_weights_path,
    )
    return model, dict(model.arch), model.contract
