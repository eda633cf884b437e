"""`model:` section: which architecture to build (a named model, or backbones + fusion head), its weights, and the
modality dropout it trains with. Turned into architecture keys by `edgeav.train.models.resolve_arch`."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edgeav.contract import InputContract
from edgeav.schema.base import Section


class ModelConfig(Section):
    name: str | None = Field(
        "edgeav-small",
        description="Named model to start from (`edgeav model list`); null to give backbones and head yourself.",
    )
    audio_backbone: str | None = Field(
        None, description="Audio backbone registry name; replaces the named model's. 'none' for a shared-encoder head."
    )
    image_backbone: str | None = Field(None, description="Image backbone registry name; replaces the named model's.")
    head: str | None = Field(None, description="Fusion head registry name; replaces the named model's.")
    audio_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the audio backbone.")
    image_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the image backbone.")
    head_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the fusion head.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the auxiliary classifiers (fraction).")
    pretrained: bool | str = Field(
        True,
        description=(
            "Starting weights of both backbones: true = the library's (torchvision/transformers; needs network "
            "or its cache), false = random init, or a local PATH: a torch hub cache folder copied from a "
            "workstation (read offline), or a state dict file of the backbones (audio_backbone.*, "
            "image_backbone.*; an edgeav checkpoint's backbones). A *_weights_path below wins for its branch."
        ),
    )
    audio_weights_path: str | None = Field(
        None,
        description="Local state dict of the audio backbone (its own or its library model's); wins over pretrained.",
    )
    audio_head_from_backbone: bool = Field(
        False,
        description=(
            "Start the audio-only head as the audio backbone's own classifier restricted to the data set's "
            "classes (birdnet_v24: BirdNET's rows for the species, matched by name): a frozen BirdNET then "
            "hears as well as BirdNET alone from the first step. A backbone without a classifier, or a class "
            "it does not know, is an error."
        ),
    )
    image_weights_path: str | None = Field(
        None,
        description="Local state dict of the image backbone (its own or its library model's); wins over pretrained.",
    )
    contract: InputContract | None = Field(
        None, description="Input contract; default: the named model's, with the data section's rate, window and size."
    )
    image_roi: tuple[float, float, float, float] | None = Field(
        None,
        description=(
            "Region of interest (x0, y0, x1, y1) in fractions of the frame, cropped inside the model (so the "
            "runtime crops exactly as training did); null = the whole frame."
        ),
    )
    modality_dropout_audio_p: float = Field(
        0.15, ge=0.0, le=1.0, description="Training: probability of dropping a sample's audio (fraction)."
    )
    modality_dropout_image_p: float = Field(
        0.15, ge=0.0, le=1.0, description="Training: probability of dropping a sample's image (fraction)."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.modality_dropout_audio_p + self.modality_dropout_image_p > 1.0:
            raise ValueError("modality_dropout_audio_p + modality_dropout_image_p must be at most 1")
        if self.name is None and (self.image_backbone is None or self.head is None):
            raise ValueError("without a named model, give image_backbone and head (and audio_backbone)")
        if isinstance(self.pretrained, str) and not self.pretrained.strip():
            raise ValueError("pretrained: give true, false or a path")
        return self
