"""`train:` section: optimizer, schedule, modes, augmentation, distributed set-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeav.schema.base import Section


class MixupConfig(Section):
    enabled: bool = Field(True, description="Joint audio-visual mixup: one lambda for both modalities.")
    alpha: float = Field(0.4, gt=0.0, le=10.0, description="Beta(alpha, alpha) parameter of the mixing weight.")
    batch_fraction: float = Field(0.2, ge=0.0, le=1.0, description="Share of each batch that is mixed (0..1).")


class SpecAugmentConfig(Section):
    enabled: bool = Field(True, description="Mask time and mel bands of the log-mel spectrogram while training.")
    time_masks: int = Field(2, ge=0, le=10, description="Number of time masks per example.")
    time_mask_frames: int = Field(20, ge=1, le=500, description="Largest time mask, STFT frames.")
    freq_masks: int = Field(2, ge=0, le=10, description="Number of mel-band masks per example.")
    freq_mask_bands: int = Field(8, ge=1, le=128, description="Largest mel-band mask, bands.")


class WaveAugConfig(Section):
    enabled: bool = Field(True, description="Waveform augmentation on/off (gain, noise, time shift).")
    gain_db: float = Field(6.0, ge=0.0, le=40.0, description="Random gain drawn from +-gain_db, dB (0 = off).")
    noise_snr_db: float | None = Field(
        30.0,
        ge=-10.0,
        le=100.0,
        description="Add white (sensor) noise at this SNR, dB (null = off); recorded field noise is train.augment.noise.",
    )
    noise_prob: float = Field(0.3, ge=0.0, le=1.0, description="Probability of adding noise to an example.")
    time_shift_s: float = Field(
        0.5, ge=0.0, le=30.0, description="Random circular shift of the window up to this, seconds."
    )


class NoiseAugConfig(Section):
    enabled: bool = Field(
        False,
        description=(
            "Mix recorded background noise (wind, rain, traffic, other birds) into the training sound. "
            "two_phase: phase I (the audio model) mixes it on the fly; phase II caches the frozen features "
            "of `phase2_variants` noisy copies of each training window beside the clean ones."
        ),
    )
    path: str | None = Field(
        None,
        description=(
            "Noise recordings: one audio file, or a folder searched recursively for audio and video files "
            "(any PyAV decodes). Decoded once per run, mono, resampled to the model's sample rate; a "
            "recording shorter than the window is looped. A missing, empty or undecodable path stops the "
            "run at its start. Required when enabled."
        ),
    )
    snr_db_min: float = Field(0.0, ge=-30.0, le=60.0, description="Lowest signal-to-noise ratio drawn, dB.")
    snr_db_max: float = Field(
        20.0,
        ge=-30.0,
        le=60.0,
        description="Highest signal-to-noise ratio drawn, dB (uniform in dB between min and max).",
    )
    prob: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability that an example gets noise, per example per epoch (0..1)."
    )
    curriculum_epochs: int = Field(
        0,
        ge=0,
        le=10_000,
        description=(
            "Noise curriculum: over a phase's first N epochs the lowest SNR drawn falls linearly from "
            "snr_db_max to snr_db_min (0 = the full range from the start). From-scratch audio models "
            "given hard noise at once may never find the classes."
        ),
    )
    phase2_variants: int = Field(
        8,
        ge=0,
        le=64,
        description=(
            "two_phase: noisy copies of each training window whose frozen audio features phase II caches "
            "beside the clean ones (each at its own drawn SNR and noise segment); every epoch an example "
            "takes a noisy copy with probability `prob`, so the fusion learns to lean on the picture when "
            "the sound is poor. 0 = phase II sees clean sound only (logged as a warning)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> NoiseAugConfig:
        if self.enabled and not self.path:
            raise ValueError(
                "train.augment.noise.enabled=true needs train.augment.noise.path (a folder or file of noise recordings)"
            )
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min={self.snr_db_min} is above snr_db_max={self.snr_db_max}")
        return self


RANDAUGMENT_OPS = Literal[
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
]


class ImageAugConfig(Section):
    enabled: bool = Field(True, description="Image augmentation on/off (rotation, flip, RandAugment).")
    rotation_deg: float = Field(15.0, ge=0.0, le=180.0, description="Random rotation range +-deg, degrees (0 = off).")
    hflip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip.")
    translate_frac: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description=(
            "Random shift up to this fraction of the width / height (0 = off): the jitter a fixed region "
            "of interest needs to learn a mouth or a feeder that sits a little elsewhere."
        ),
    )
    randaugment_ops: list[RANDAUGMENT_OPS] = Field(
        default_factory=lambda: ["Sharpness", "Contrast", "Identity"],
        description="RandAugment operations allowed (torchvision names; the scene papers found the others hurt; [] = off).",
    )
    randaugment_num_ops: int = Field(2, ge=1, le=8, description="RandAugment operations applied in a row, count.")
    randaugment_magnitude: float = Field(
        0.3, ge=0.0, le=1.0, description="Strength of each RandAugment op, 0..1 of torchvision's range."
    )
    randaugment_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability of applying RandAugment to an image (0 = off)."
    )
    codec_prob: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Probability of sending a window's frames through H.264 (libx264) and back (0 = off): the "
            "artifacts of a camera's compressed stream, which a temporal branch otherwise reads as motion."
        ),
    )
    codec_crf_min: int = Field(23, ge=0, le=51, description="Lowest H.264 constant rate factor drawn (finer).")
    codec_crf_max: int = Field(40, ge=0, le=51, description="Highest H.264 constant rate factor drawn (coarser).")
    codec_camera_scale: float = Field(
        1.0,
        ge=1.0,
        le=8.0,
        description=(
            "The camera's frame width over the model's, ratio: H.264 codes 16-pixel blocks of the camera's "
            "frame, so frames are scaled up by this before the encoder (GRID: 360 px / 160 px = 2.25)."
        ),
    )

    @model_validator(mode="after")
    def _crf_range(self) -> ImageAugConfig:
        if self.codec_crf_min > self.codec_crf_max:
            raise ValueError(f"codec_crf_min {self.codec_crf_min} > codec_crf_max {self.codec_crf_max}")
        return self


class AugmentConfig(Section):
    mixup: MixupConfig = Field(default_factory=MixupConfig, description="Joint audio-visual mixup.")
    spec_augment: SpecAugmentConfig = Field(
        default_factory=SpecAugmentConfig, description="SpecAugment on the log-mel."
    )
    wave: WaveAugConfig = Field(default_factory=WaveAugConfig, description="Waveform augmentation.")
    noise: NoiseAugConfig = Field(
        default_factory=NoiseAugConfig, description="Recorded field noise mixed in at a random SNR."
    )
    image: ImageAugConfig = Field(default_factory=ImageAugConfig, description="Image augmentation.")
    modality_dropout: bool = Field(
        True, description="Drop one modality of an example (mask=0) with the model section's modality_dropout_*_p."
    )


class TrainConfig(Section):
    mode: Literal["joint", "two_phase"] = Field(
        "joint", description="joint: all trained together; two_phase: unimodal, then fusion on cached embeddings."
    )
    phase1_from: str | None = Field(
        None,
        description=(
            "two_phase: folder of an earlier two_phase run of the same backbones; its best_audio.pt and "
            "best_image.pt stand in for phase I (train several fusion heads on one pair of unimodal models)."
        ),
    )
    init_from: str | None = Field(
        None,
        description=(
            "edgeav checkpoint to start from (`edgeav train --init`): its backbones and fusion are loaded, the "
            "classifier layers are rebuilt for this data set's labels (kept when the labels are the same); "
            "the architecture must match. Transfer from a base model to your own classes."
        ),
    )
    epochs: int = Field(30, ge=1, le=10_000, description="Epochs (joint mode, or phase II in two_phase mode).")
    phase1_audio_epochs: int = Field(
        20, ge=1, le=10_000, description="Epochs of the audio model in phase I (two_phase)."
    )
    phase1_image_epochs: int = Field(
        20, ge=1, le=10_000, description="Epochs of the image model in phase I (two_phase)."
    )
    phase1_lr: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Phase I learning rate of the whole unimodal model (backbones from scratch); null = lr_backbone / lr_fusion.",
    )
    batch_size: int = Field(
        16, ge=1, le=4096, description="Global batch size, examples (split across ranks under torchrun)."
    )
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="Optimizer.")
    lr_backbone: float = Field(3e-4, gt=0.0, le=1.0, description="Learning rate of the backbones.")
    lr_fusion: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate of the fusion head and classifiers.")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="Weight decay.")
    lr_schedule: Literal["plateau", "cosine"] = Field(
        "plateau",
        description=(
            "plateau: ReduceLROnPlateau on validation accuracy (the HD-MF paper's); cosine: linear warm-up "
            "over warmup_epochs, then cosine decay to 0 over the phase's epochs (steady on small, noisy "
            "validation splits, where a plateau rule reacts to one clip)."
        ),
    )
    warmup_epochs: int = Field(3, ge=0, le=1000, description="cosine: epochs of linear learning-rate warm-up.")
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0, description="ReduceLROnPlateau factor on validation accuracy.")
    plateau_patience: int = Field(5, ge=0, le=1000, description="ReduceLROnPlateau patience, epochs.")
    early_stop_patience: int = Field(
        12, ge=1, le=10_000, description="Stop after this many epochs without a better validation accuracy."
    )
    bn_momentum: float | None = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description=(
            "BatchNorm running-statistics momentum while training (torchvision's MobileNetV3 ships 0.01, too "
            "slow for short from-scratch runs: evaluation would use statistics still near their start); "
            "null = keep each layer's own."
        ),
    )
    bn_warmup_batches: int = Field(
        4,
        ge=0,
        le=1000,
        description=(
            "At the start of a phase, estimate the trainable BatchNorm layers' running statistics afresh on "
            "this many training batches (no weight update): from-scratch networks evaluated with their "
            "initial statistics output near-zero features. 0 = off."
        ),
    )
    aux_loss_weight: float = Field(
        0.5, ge=0.0, le=10.0, description="Weight of the audio-only and image-only auxiliary losses."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the soft-label loss.")
    seed: int = Field(0, ge=0, description="Seed of everything random in training.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    amp: bool = Field(True, description="Automatic mixed precision on CUDA (ignored on CPU).")
    eval_batch_size: int = Field(32, ge=1, le=4096, description="Batch size of validation and evaluation, examples.")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch CPU threads of training, overriding threads.intra_op (null = threads.intra_op), threads.",
    )
    max_minutes: float | None = Field(
        None,
        gt=0.0,
        description="Stop a phase after this wall time since the start of training, minutes (null = no limit).",
    )
    val_split: Literal["val", "train"] = Field(
        "val",
        description=(
            "Split that picks the best epoch and drives the schedule. 'train' only for smoke runs on data too "
            "small to hold out a validation split (logged as a warning; the figures are training figures)."
        ),
    )
    eval_test: bool = Field(True, description="After training, evaluate best.pt on the test split (eval_test/ in OUT).")
    prepare_data: bool = Field(True, description="Decode every file into the cache before the first epoch.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation, each part switchable.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_backbone > self.lr_fusion * 10:
            raise ValueError(
                f"lr_backbone={self.lr_backbone} is more than 10x lr_fusion={self.lr_fusion}; backbones learn slower"
            )
        return self
