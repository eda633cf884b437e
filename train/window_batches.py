"""The raw-window data path (joint training and phase I): the examples a phase trains on, this rank's batches of
them, and what one batch of windows becomes for the phase (augmented when training, on the device).

Phase I trains on each unimodal example once per epoch (`UnimodalDataset`: species-paired data gives every audio
window, or every photo, not the re-paired pairs); joint training on the (re-)paired examples of `TorchAVDataset`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from edgeav.errors import DataError
from edgeav.schema import EdgeAVConfig
from edgeav.train.augment import FieldNoise, augment_image, augment_wave, build_image_transform, joint_mixup
from edgeav.train.codec import codec_augment
from edgeav.train.data.torch_dataset import TorchAVDataset, model_image
from edgeav.train.distributed import DistInfo, rank_batches
from edgeav.train.phase2_cache import Batch

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """The data set of a run and its train and validation splits."""

    data: Any  # the loaded data set (edgeav.train.data)
    path: str  # its folder, as checkpoints and the report name it
    labels: list[str]
    train_ds: TorchAVDataset
    val_ds: TorchAVDataset
    val_split: str
    decodes_before: int  # media decoded into the cache before the run prepared the data (cache misses)
    decodes_prepare: int  # ... and after preparing it


def open_run_data(cfg: EdgeAVConfig, data_path: str | Path | None) -> RunData:
    """The data set (prepared: decoded once into its cache when `train.prepare_data`) and its train and
    validation splits; DataError when either is empty."""
    from edgeav.train.data import load_dataset

    tc = cfg.train
    data = load_dataset(cfg.data, data_path if data_path is not None else cfg.data.path)
    path = str(data.root if data_path is None else data_path)
    decodes_before = data.cache.misses
    if tc.prepare_data:
        t = time.monotonic()
        failed = data.prepare()
        log.info(
            "data prepared in %.1f s (%d decoded, %d from cache, %d failed)",
            time.monotonic() - t,
            data.cache.misses,
            data.cache.hits,
            failed,
        )
    decodes_prepare = data.cache.misses
    train_ds = TorchAVDataset(data, "train", seed=tc.seed)
    if tc.val_split == "train":
        log.warning(
            "train.val_split=train: the best epoch is picked on the TRAINING split (a smoke run); its "
            "'validation' figures are training figures"
        )
    val_ds = TorchAVDataset(data, tc.val_split, seed=tc.seed)
    if len(train_ds) == 0:
        raise DataError(f"{path}: the train split is empty")
    if len(val_ds) == 0:
        raise DataError(
            f"{path}: the validation split is empty; raise data.val_fraction (or, for a smoke run on a "
            f"handful of clips, set train.val_split=train)"
        )
    return RunData(data, path, list(data.classes), train_ds, val_ds, tc.val_split, decodes_before, decodes_prepare)


class UnimodalDataset(Dataset):
    """The examples of one split that carry `modality` ("audio" or "image"), each once, as TorchAVDataset items
    (the other modality zero, mask [1, 0] or [0, 1]); a video example gives its middle frame."""

    def __init__(self, data: Any, split: str, modality: str) -> None:
        self.data, self.modality = data, modality
        self.samples = [
            s
            for s in data.samples(split)
            if (s.audio is not None if modality == "audio" else (s.image is not None or s.video is not None))
        ]
        size = data.cfg.image_size_px
        self.clip_frames = data.cfg.frames_per_window
        self._zero_image = torch.zeros(
            (3, size, size) if self.clip_frames == 1 else (self.clip_frames, 3, size, size), dtype=torch.uint8
        )
        self._zero_audio = torch.zeros(data.window_samples, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        audio, image = self._zero_audio, self._zero_image
        present = 0.0
        if self.modality == "audio":
            a = self.data.load_audio(s.audio)
            if a is not None:
                audio, present = torch.from_numpy(np.array(a, dtype=np.float32)), 1.0
            mask = torch.tensor([present, 0.0])
        else:
            v = self.data.load_image(s.image) if s.image is not None else self.data.load_frames(s.video)
            if v is not None:  # (3, H, W) the middle frame, or (T, 3, H, W) a clip, as TorchAVDataset
                image, present = torch.from_numpy(np.array(model_image(v, self.clip_frames))), 1.0
            mask = torch.tensor([0.0, present])
        return {"audio": audio, "image": image, "mask": mask, "label": int(s.label)}


class WindowBatches:
    """Batches of raw windows for a phase: `train_batches(phase, epoch, gen)` for an epoch of training,
    `val_batches(phase, split)` for validation."""

    def __init__(
        self,
        cfg: EdgeAVConfig,
        run_data: RunData,
        dist_info: DistInfo,
        field_noise: FieldNoise,
        contract: Any,
        device: torch.device,
    ) -> None:
        self.cfg, self.data = cfg, run_data.data
        self.train_ds, self.val_ds, self.n_classes = run_data.train_ds, run_data.val_ds, len(run_data.labels)
        self.dist, self.field_noise, self.contract, self.device = dist_info, field_noise, contract, device
        self.image_tf = build_image_transform(cfg.train.augment.image)

    def train_set(self, phase: str) -> Dataset:
        if phase == "phase1_audio":
            return UnimodalDataset(self.data, "train", "audio")
        if phase == "phase1_image":
            return UnimodalDataset(self.data, "train", "image")
        return self.train_ds

    def train_loader(self, phase: str, epoch: int) -> tuple[DataLoader, list[list[int]]]:
        """This rank's loader of the epoch and the example indices of each of its batches."""
        tc = self.cfg.train
        ds = self.train_set(phase)
        if isinstance(ds, TorchAVDataset):
            ds.set_epoch(epoch)
        batches = rank_batches(len(ds), epoch, tc.seed, tc.batch_size, self.dist)
        return DataLoader(ds, batch_sampler=batches, num_workers=tc.num_workers), batches

    def train_batches(self, phase: str, epoch: int, gen: torch.Generator) -> tuple[Iterator[Batch], list[list[int]]]:
        """The epoch's augmented training batches and the example indices of each."""
        loader, batches = self.train_loader(phase, epoch)

        def generate() -> Iterator[Batch]:
            for item in loader:
                inputs, target, mask = self.inputs(item, phase, gen, train=True)
                yield inputs, target, mask, item["label"]

        return generate(), batches

    def val_batches(self, phase: str, split: str) -> Iterator[tuple[tuple, torch.Tensor]]:
        """(inputs on the device, label (B,)) over every example of the validation split, in order, unaugmented:
        phase I's unimodal examples, or the data set's pairs."""
        if phase.startswith("phase1"):
            val_set: Dataset = UnimodalDataset(self.data, split, "audio" if phase == "phase1_audio" else "image")
        else:
            self.val_ds.set_epoch(0)
            val_set = self.val_ds
        loader = DataLoader(
            val_set, batch_size=self.cfg.train.eval_batch_size, shuffle=False, num_workers=self.cfg.train.num_workers
        )
        for item in loader:
            inputs, _, _ = self.inputs(item, phase, torch.Generator(), train=False)
            yield inputs, item["label"]

    def inputs(
        self, batch: dict[str, torch.Tensor], phase: str, gen: torch.Generator, train: bool
    ) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """(network inputs, soft target (B, C), mask used (B, 2)) of a batch of windows for `phase`."""
        from edgeav.train.models import modality_dropout

        audio, image, mask, label = batch["audio"], batch["image"], batch["mask"], batch["label"]
        target = F.one_hot(label, self.n_classes).float()  # (B, C)
        if train:
            aug, rate_hz = self.cfg.train.augment, self.contract.audio.sample_rate_hz
            if phase != "phase1_image":
                audio = augment_wave(self.field_noise(audio, gen, mask[:, 0]), aug.wave, rate_hz, gen)
            if phase != "phase1_audio":
                if aug.image.enabled:  # the camera's codec first, then the geometry
                    image = codec_augment(
                        image,
                        aug.image.codec_prob,
                        (aug.image.codec_crf_min, aug.image.codec_crf_max),
                        gen,
                        camera_scale=aug.image.codec_camera_scale,
                        roi=self.contract.image.roi,
                    )
                image = augment_image(image, self.image_tf)
            if phase == "joint":
                audio, image, target = joint_mixup(audio, image, target, aug.mixup, gen)
                if aug.modality_dropout:
                    mask = modality_dropout(
                        mask,
                        self.cfg.model.modality_dropout_audio_p,
                        self.cfg.model.modality_dropout_image_p,
                        generator=gen,
                    )
            elif aug.mixup.enabled:  # phase I: mixup of the one modality
                if phase == "phase1_audio":
                    audio, _, target = joint_mixup(audio, audio[:, :0], target, aug.mixup, gen)
                else:
                    image, _, target = joint_mixup(image, image[:, :0], target, aug.mixup, gen)
        d = self.device
        if phase == "phase1_audio":
            return (audio.to(d),), target.to(d), torch.stack([mask[:, 0], torch.zeros_like(mask[:, 0])], 1).to(d)
        if phase == "phase1_image":
            return (image.to(d),), target.to(d), torch.stack([torch.zeros_like(mask[:, 1]), mask[:, 1]], 1).to(d)
        return (audio.to(d), image.to(d), mask.to(d)), target.to(d), mask.to(d)


__all__ = ["RunData", "UnimodalDataset", "WindowBatches", "open_run_data"]
