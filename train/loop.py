"""`edgeav train`: the training loop (joint and two-phase), checkpoints, exact resume, DDP.

    edgeav train --config train/grid.yaml --data ../shared/data/grid --out runs/grid [--set train.epochs=5] [--resume]

Modes (`train.mode`):

- `joint`: backbones, fusion head and the auxiliary unimodal heads trained together; loss = soft-label CE of the
  fused logits + `aux_loss_weight` x (CE of the audio-only logits where audio is present + CE of the image-only
  logits where the image is present).
- `two_phase`: phase I trains each unimodal model alone (audio backbone + its auxiliary head, then image backbone +
  its auxiliary head), keeping the best epoch of each by its own validation accuracy (`best_audio.pt`,
  `best_image.pt`); phase II freezes them, computes their maps and embeddings ONCE for every train and validation
  example (`Phase2Cache`; with field noise also for noisy copies of each training window), and trains only the
  fusion head on that cache (mixup acts on the cached features), which costs milliseconds per epoch. Its loss is
  the fused output's on examples with both modalities: elsewhere the output is a frozen auxiliary head's, which
  phase II cannot change (so modality dropout, which only moves examples there, is off in phase II).

Optimizer: Adam/AdamW with two parameter groups (`edgeav.train.models.param_groups`): backbones at
`lr_backbone`, fusion and classifier heads at `lr_fusion`. ReduceLROnPlateau on validation accuracy (or a cosine
schedule with warm-up, `train.lr_schedule`); early stop after
`early_stop_patience` epochs without a better one (ties broken by a lower validation loss).

Exact resume: every epoch is a pure function of (seed, epoch, rank) and the state at its start: the data order
(DistributedSampler's permutation, also used with one process), the pairing of species-paired data, the
augmentation and dropout are all seeded at the start of the epoch; `last.pt` holds weights, optimizer, scheduler,
scaler and the loop's state. Killed after epoch k and resumed with `--resume`, a run ends with the same weights as
the run that was never stopped.

DDP: under `torchrun --nproc_per_node=N` each rank takes a disjoint shard of every epoch (DistributedSampler) with
`batch_size / N` examples per step; DDP averages gradients (NCCL on GPUs, gloo on CPU); only rank 0 writes
checkpoints, metrics, TensorBoard and the report.

Starting weights: `model.pretrained` / `model.*_weights_path` (`edgeav.train.models.weights`) and `--init
CHECKPOINT` (`train.init_from`, `edgeav.train.models.transfer`: a base model's backbones and fusion, the classifier
rebuilt for this data set's labels); what the run started from (paths + sha256) is in every checkpoint's
extra["weights"] and in train_report.json.

Outputs in OUT: best.pt (and best_audio.pt / best_image.pt in two_phase), last.pt, metrics.csv (one row per epoch),
steps.csv (loss of every optimizer step), tensorboard/, train_report.json, report.md, and eval_test/ (`edgeav eval`
of best.pt on the test split, when the data has one).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgeav.train.data.torch_dataset import TorchAVDataset as TorchAVDatasetT, model_image

from edgeav.errors import ConfigError, DataError
from edgeav.result import CommandResult
from edgeav.schema import EdgeAVConfig, load_config
from edgeav.train.augment import (
    SpecAugmentHook,
    augment_image,
    augment_wave,
    build_field_noise,
    build_image_transform,
    joint_mixup,
    mixup_tensors,
    soft_cross_entropy,
)
from edgeav.train.codec import codec_augment
from edgeav.train.distributed import DistInfo, all_reduce_sum, plan_from_environment
from edgeav.train.distributed import init_distributed as _init_distributed

log = logging.getLogger(__name__)

METRIC_FIELDS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "val_acc_audio", "val_acc_image",
                 "lr_backbone", "lr_fusion", "seconds", "samples_per_s", "decoded"]
PHASES_TWO = ("phase1_audio", "phase1_image", "phase2_fusion")
BEST_FILE = {"joint": "best.pt", "phase1_audio": "best_audio.pt", "phase1_image": "best_image.pt",
             "phase2_fusion": "best.pt"}


# ---------------------------------------------------------------- distributed


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); see edgeav.train.distributed."""
    return _init_distributed(plan_from_environment("cuda" if device_kind == "cuda" else "cpu", os.environ))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    env = {**os.environ, "LOCAL_RANK": str(local_rank)}
    return torch.device(plan_from_environment(name, env).device)


# ---------------------------------------------------------------- seeds


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """One integer per (seed, epoch, rank, stream): what makes an epoch repeatable on its own."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """Seed torch's global RNG (dropout, torchvision transforms, mixup lambdas) for this epoch and return the
    generator for the loop's own draws (waveform augmentation, mixup partners, modality dropout)."""
    torch.manual_seed(epoch_seed(seed, epoch, rank, 0))
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank, 1))


# ---------------------------------------------------------------- what DDP wraps


class TaskNet(nn.Module):
    """The trainable computation of one phase, as one module (so DDP can wrap it).

    joint:          (audio (B,T), image (B,3,H,W) uint8, mask (B,2)) -> AVOutput of the model
    phase1_audio:   (audio,) -> (B, C) logits of the audio backbone + auxiliary audio head
    phase1_image:   (image,) -> (B, C) logits of the image backbone + auxiliary image head
    phase2_fusion:  (audio_map, image_map, audio_emb, image_emb, mask) -> AVOutput of the head over cached features
    """

    def __init__(self, model: nn.Module, phase: str) -> None:
        super().__init__()
        self.model = model
        self.phase = phase

    def forward(self, *x: torch.Tensor) -> Any:
        m = self.model
        if self.phase == "joint":
            return m(*x)
        if self.phase == "phase1_audio":
            return m.aux_audio(audio_embedding(m, x[0]))
        if self.phase == "phase1_image":
            return m.aux_image(image_embedding(m, x[0]))
        from edgeav.train.models import Branches

        fa, fi, za, zi, mask = x
        m_a, m_i = mask[:, 0:1], mask[:, 1:2]  # (B, 1) each
        empty = mask[:, :0]  # (B, 0)
        b = Branches(fa * m_a.view(-1, 1, 1, 1), fi * m_i.view(-1, 1, 1, 1), za * m_a, zi * m_i, empty, empty, mask)
        return m.forward_head(b)


def audio_map(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """audio (B, T) -> the audio backbone's map (B, Da, f, t), through the model's log-mel front end when the
    backbone takes log-mel."""
    bb = model.audio_backbone
    x = audio if bb.input_kind == "waveform" else model.frontend.audio(audio)  # (B, T) or (B, 1, M, frames)
    return bb.forward_features(x)


def audio_embedding(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    return model.audio_backbone.forward_head(audio_map(model, audio))  # (B, Da)


def image_map(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model.image_backbone.forward_features(model.frontend.image(image))  # (B, Di, h, w)


def image_embedding(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model.image_backbone.forward_head(image_map(model, image))  # (B, Di)


def _logits_of(out: Any, phase: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logits the phase is judged on, audio-only logits, image-only logits)."""
    if isinstance(out, torch.Tensor):
        return out, (out if phase == "phase1_audio" else None), (out if phase == "phase1_image" else None)
    return out.logits, out.logits_audio, out.logits_image


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _scheduler(opt: torch.optim.Optimizer, tc: Any, epochs: int) -> Any:
    """The phase's learning-rate schedule, stepped once per epoch (`train.lr_schedule`)."""
    if tc.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=tc.plateau_factor,
                                                          patience=tc.plateau_patience)
    warm = min(tc.warmup_epochs, max(epochs - 1, 0))

    def factor(epoch: int) -> float:  # epoch: epochs completed; the factor for the next one
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - warm) / max(epochs - warm, 1))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------- phase I data


class UnimodalDataset(Dataset):
    """The examples of one split that carry `modality` ("audio" or "image"), each once, as TorchAVDataset items
    (the other modality zero, mask [1, 0] or [0, 1]); a video example gives its middle frame."""

    def __init__(self, data: Any, split: str, modality: str) -> None:
        self.data, self.modality = data, modality
        self.samples = [s for s in data.samples(split)
                        if (s.audio is not None if modality == "audio" else (s.image is not None or s.video is not None))]
        size = data.cfg.image_size_px
        self.clip_frames = data.cfg.frames_per_window
        self._zero_image = torch.zeros((3, size, size) if self.clip_frames == 1 else (self.clip_frames, 3, size, size),
                                       dtype=torch.uint8)
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


# ---------------------------------------------------------------- phase II cache


class Phase2Cache:
    """Frozen unimodal features of every example of one split, computed once.

    Audio: map (Na, Da, f, t) and embedding (Na, Da) per audio sample - and, with field noise and
    `noise_variants` V > 0, the same for V noisy copies of each window (stacked: copy c of sample i at c * Na + i,
    each epoch an example takes a noisy copy with the noise's probability); visual: map (Nv, Di, h, w) and embedding
    (Nv, Di) per visual sample (a photo, or the middle frame of a video window). `epoch_items(epoch)` pairs them as
    the data set pairs its samples for that epoch (species-paired data is re-paired every epoch)."""

    def __init__(self, model: nn.Module, data: Any, split: str, seed: int, device: torch.device,
                 batch_size: int = 32, noise: Any = None, noise_variants: int = 0) -> None:
        self.data, self.split, self.seed = data, split, seed
        self.noise = noise if noise is not None and noise.bank is not None and noise_variants > 0 else None
        self.variants = 1 + (noise_variants if self.noise is not None else 0)  # clean + noisy copies per window
        samples = data.samples(split)
        self.audio_ids = {s.id: i for i, s in enumerate([s for s in samples if s.audio is not None])}
        self.visual_ids = {s.id: i for i, s in enumerate([s for s in samples if s.image is not None or s.video is not None])}
        a_samples = [s for s in samples if s.audio is not None]
        v_samples = [s for s in samples if s.image is not None or s.video is not None]
        model.eval()
        with torch.no_grad():
            runs = [self._run(a_samples, batch_size, device, self._audio_loader(v), lambda x: audio_map(model, x),
                              model.audio_backbone) for v in range(self.variants)]
            self.a_map, self.a_emb, self.a_ok = (torch.cat([r[k] for r in runs]) for k in range(3))  # (V*Na, ...)
            self.v_map, self.v_emb, self.v_ok = self._run(v_samples, batch_size, device, self._load_visual,
                                                          lambda x: image_map(model, x), model.image_backbone)
        self.n_audio = len(a_samples)
        log.info("phase II cache (%s): %d audio (x%d: clean + %d noisy), %d visual examples", split, len(a_samples),
                 self.variants, self.variants - 1, len(v_samples))

    def _audio_loader(self, variant: int) -> Callable:
        """Variant 0: the clean window; variant v > 0: the window with the run's field noise mixed in, each window
        at its own SNR and noise segment, drawn from (seed, v) - the same copies on every rank and every resume."""
        if variant == 0:
            return lambda s: self.data.load_audio(s.audio)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, variant, 0, 5))
        mix = type(self.noise)(self.noise.cfg.model_copy(update={"prob": 1.0}), self.noise.bank)  # always noisy

        def load(s: Any) -> np.ndarray | None:
            a = self.data.load_audio(s.audio)
            if a is None:
                return None
            mixed = mix(torch.from_numpy(np.array(a, dtype=np.float32))[None], gen)
            return mixed[0].numpy()
        return load

    def _load_visual(self, s: Any) -> np.ndarray | None:
        if s.image is not None:
            photo = self.data.load_image(s.image)
            return None if photo is None else model_image(photo, self.data.cfg.frames_per_window)
        frames = self.data.load_frames(s.video)
        return None if frames is None else model_image(frames, self.data.cfg.frames_per_window)  # as TorchAVDataset

    @staticmethod
    def _run(samples: list, batch_size: int, device: torch.device, load: Callable, fmap: Callable,
             backbone: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps, embs, oks = [], [], []
        for j in range(0, len(samples), batch_size):
            arrays = [load(s) for s in samples[j:j + batch_size]]
            ok = torch.tensor([a is not None for a in arrays])
            ref = next((a for a in arrays if a is not None), None)
            if ref is None:
                raise DataError(f"phase II cache: no file of {len(arrays)} could be loaded")
            x = torch.from_numpy(np.stack([np.asarray(a if a is not None else np.zeros_like(ref)) for a in arrays]))
            m = fmap(x.to(device)).float()  # (b, D, h, w)
            maps.append(m.cpu())
            embs.append(backbone.forward_head(m).float().cpu())  # (b, D)
            oks.append(ok)
        if not maps:
            return torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        return torch.cat(maps), torch.cat(embs), torch.cat(oks)

    def epoch_items(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio index (N,), visual index (N,), label (N,)); -1 where the example lacks that modality."""
        ai, vi, y = [], [], []
        rng = np.random.default_rng([self.seed, int(epoch), 7])  # which copy (clean or noisy) each example takes
        p_noisy = self.noise.cfg.prob if self.noise is not None else 0.0
        for a, v in self.data.pairs(self.split, epoch, self.seed):
            copy = int(rng.integers(1, self.variants)) if self.variants > 1 and rng.random() < p_noisy else 0
            ai.append(copy * self.n_audio + self.audio_ids[a.id] if a is not None and a.id in self.audio_ids else -1)
            vi.append(self.visual_ids[v.id] if v is not None and v.id in self.visual_ids else -1)
            y.append((a or v).label)
        return torch.tensor(ai), torch.tensor(vi), torch.tensor(y)

    def batch(self, ai: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of the examples (ai, vi): (audio_map, image_map, audio_emb, image_emb, mask)."""
        has_a = (ai >= 0) & self.a_ok[ai.clamp_min(0)] if len(self.a_ok) else torch.zeros_like(ai, dtype=torch.bool)
        has_v = (vi >= 0) & self.v_ok[vi.clamp_min(0)] if len(self.v_ok) else torch.zeros_like(vi, dtype=torch.bool)
        mask = torch.stack([has_a, has_v], 1).float()  # (B, 2)
        return (self.a_map[ai.clamp_min(0)], self.v_map[vi.clamp_min(0)], self.a_emb[ai.clamp_min(0)],
                self.v_emb[vi.clamp_min(0)], mask)


# ---------------------------------------------------------------- the trainer


@dataclass
class TrainState:
    phase: str = "joint"
    epoch: int = 0  # epochs of this phase completed
    best_acc: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    done_phases: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # metric rows of every phase so far
    phase_best: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> its best validation metrics


class Trainer:
    """Trains the model a config describes on a data set; writes OUT/best.pt, OUT/last.pt, metrics and a report."""

    def __init__(self, cfg: EdgeAVConfig, data_path: str | Path | None, out_dir: str | Path) -> None:
        from edgeav.train.data import load_dataset
        from edgeav.train.data.torch_dataset import TorchAVDataset
        from edgeav.train.models import build_model, resolve_arch
        from edgeav.train.models.transfer import audio_head_from_backbone, init_from_checkpoint
        from edgeav.train.models.weights import weights_record

        self.t0 = time.monotonic()
        self.cfg = cfg
        tc = cfg.train
        self.out = Path(out_dir)
        plan = plan_from_environment(tc.device, os.environ)  # NCCL on cuda:LOCAL_RANK, gloo on the CPU
        self.dist = _init_distributed(plan)  # torch.cuda.set_device(local_rank) before the group is joined
        self.device = self.dist.device
        if tc.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {self.dist.world} ranks")
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.field_noise = build_field_noise(tc, cfg.data.sample_rate_hz)  # noise bank decoded once, before the data
        self.data = load_dataset(cfg.data, data_path if data_path is not None else cfg.data.path)
        self.data_path = str(self.data.root if data_path is None else data_path)
        self.labels = list(self.data.classes)
        self.decodes_before = self.data.cache.misses
        if tc.prepare_data:
            t = time.monotonic()
            failed = self.data.prepare()
            log.info("data prepared in %.1f s (%d decoded, %d from cache, %d failed)", time.monotonic() - t,
                     self.data.cache.misses, self.data.cache.hits, failed)
        self.decodes_prepare = self.data.cache.misses
        self.train_ds = TorchAVDataset(self.data, "train", seed=tc.seed)
        self.val_split = tc.val_split
        if self.val_split == "train":
            log.warning("train.val_split=train: the best epoch is picked on the TRAINING split (a smoke run); its "
                        "'validation' figures are training figures")
        self.val_ds = TorchAVDataset(self.data, self.val_split, seed=tc.seed)
        if len(self.train_ds) == 0:
            raise DataError(f"{self.data_path}: the train split is empty")
        if len(self.val_ds) == 0:
            raise DataError(f"{self.data_path}: the validation split is empty; raise data.val_fraction (or, for a smoke "
                            f"run on a handful of clips, set train.val_split=train)")
        self.arch = resolve_arch(cfg.model, cfg.data)
        torch.manual_seed(tc.seed)
        self.model = build_model(self.arch, self.labels, pretrained=cfg.model.pretrained,
                                 audio_weights_path=cfg.model.audio_weights_path,
                                 image_weights_path=cfg.model.image_weights_path)
        self.weights = weights_record(cfg.model.pretrained, cfg.model.audio_weights_path, cfg.model.image_weights_path)
        if tc.init_from:
            self.weights["init"] = init_from_checkpoint(self.model, tc.init_from)
        if cfg.model.audio_head_from_backbone:
            self.weights["audio_head"] = audio_head_from_backbone(self.model, self.labels)
        self.contract = self.model.contract
        if tc.mode == "two_phase" and self.model.audio_backbone is None:
            raise ConfigError(f"train.mode=two_phase needs two unimodal backbones; head {self.arch['head']!r} runs one "
                              f"shared encoder: use train.mode=joint")
        if tc.bn_momentum is not None:
            for mod in self.model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.momentum = tc.bn_momentum
        self.model.to(self.device)
        self.image_tf = build_image_transform(tc.augment.image)
        self.spec_aug = SpecAugmentHook(tc.augment.spec_augment)
        self._hook = self.model.frontend.audio.register_forward_hook(self.spec_aug) if tc.augment.spec_augment.enabled else None
        self.state = TrainState(phase="joint" if tc.mode == "joint" else PHASES_TWO[0])
        self._tb: Any = None
        self.scaler: Any = None
        self.step_rows: list[dict[str, Any]] = []
        self.ddp_shards: dict[str, Any] = {}
        self.samples_seen = 0
        self.train_seconds = 0.0
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    # -- data

    def _sampler(self, n: int, epoch: int) -> list[int]:
        """This rank's example indices for `epoch`: DistributedSampler's seeded permutation, also with one process
        (so a single-process run sees, batch by batch, the union of what the ranks see)."""
        s = DistributedSampler(range(n), num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                               seed=self.cfg.train.seed, drop_last=False)
        s.set_epoch(epoch)
        return list(s)

    def _batches(self, indices: list[int]) -> list[list[int]]:
        per_rank = self.cfg.train.batch_size // self.dist.world
        out = [indices[j:j + per_rank] for j in range(0, len(indices), per_rank)]
        if len(out) > 1 and len(out[-1]) < 2:
            out = out[:-1]  # a last batch of one example: BatchNorm cannot normalize over it
        return out

    def _train_set(self) -> Dataset:
        """Phase I trains on each unimodal example once per epoch (species-paired data: every audio window, or
        every photo, not the re-paired pairs); joint training on the (re-)paired examples."""
        phase = self.state.phase
        if phase == "phase1_audio":
            return UnimodalDataset(self.data, "train", "audio")
        if phase == "phase1_image":
            return UnimodalDataset(self.data, "train", "image")
        return self.train_ds

    def _train_loader(self, epoch: int) -> tuple[DataLoader, list[int]]:
        ds = self._train_set()
        if isinstance(ds, TorchAVDatasetT):
            ds.set_epoch(epoch)
        idx = self._sampler(len(ds), epoch)
        batches = self._batches(idx)
        loader = DataLoader(ds, batch_sampler=batches, num_workers=self.cfg.train.num_workers)
        return loader, [i for b in batches for i in b]

    # -- one batch

    def _inputs(self, batch: dict[str, torch.Tensor], gen: torch.Generator, train: bool) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """(network inputs, soft target (B, C), mask used (B, 2)) for the current phase."""
        from edgeav.train.models import modality_dropout

        tc, phase = self.cfg.train, self.state.phase
        audio, image, mask, label = batch["audio"], batch["image"], batch["mask"], batch["label"]
        target = F.one_hot(label, len(self.labels)).float()  # (B, C)
        if train:
            aug = tc.augment
            if phase != "phase1_image":
                audio = augment_wave(self.field_noise(audio, gen, mask[:, 0]), aug.wave, self.contract.audio.sample_rate_hz, gen)
            if phase != "phase1_audio":
                if aug.image.enabled:  # the camera's codec first, then the geometry
                    image = codec_augment(image, aug.image.codec_prob, (aug.image.codec_crf_min, aug.image.codec_crf_max),
                                          gen, camera_scale=aug.image.codec_camera_scale, roi=self.contract.image.roi)
                image = augment_image(image, self.image_tf)
            if phase == "joint":
                audio, image, target = joint_mixup(audio, image, target, aug.mixup, gen)
                if aug.modality_dropout:
                    mask = modality_dropout(mask, self.cfg.model.modality_dropout_audio_p,
                                            self.cfg.model.modality_dropout_image_p, generator=gen)
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

    def _loss(self, out: Any, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tc, phase = self.cfg.train, self.state.phase
        logits, la, li = _logits_of(out, phase)
        if phase == "phase1_audio":
            return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 0]), logits
        if phase == "phase1_image":
            return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 1]), logits
        if phase == "phase2_fusion":  # what phase II trains: the fusion, reached only where both are present
            return soft_cross_entropy(logits, target, tc.label_smoothing, mask[:, 0] * mask[:, 1]), logits
        loss = soft_cross_entropy(logits, target, tc.label_smoothing)
        if phase == "joint" and tc.aux_loss_weight > 0:
            aux = (soft_cross_entropy(la, target, tc.label_smoothing, mask[:, 0])
                   + soft_cross_entropy(li, target, tc.label_smoothing, mask[:, 1]))
            loss = loss + tc.aux_loss_weight * aux
        return loss, logits

    def _step(self, net: nn.Module, opt: torch.optim.Optimizer, scaler: Any, inputs: tuple, target: torch.Tensor,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
            out = net(*inputs)
            loss, logits = self._loss(out, target, mask)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach(), logits.detach()

    # -- epochs

    def _train_epoch(self, net: nn.Module, opt: torch.optim.Optimizer, scaler: Any, epoch: int,
                     cache: Phase2Cache | None) -> dict[str, float]:
        tc = self.cfg.train
        gen = seed_epoch(tc.seed, epoch, self.dist.rank)
        self.spec_aug.gen = torch.Generator().manual_seed(epoch_seed(tc.seed, epoch, self.dist.rank, 2))
        self.field_noise.epoch = epoch  # the noise curriculum follows the phase's epochs
        net.train()
        if self.state.phase == "phase2_fusion":
            self._freeze_for(self.state.phase)  # frozen parts stay in eval mode (BatchNorm statistics, dropout)
        if cache is not None:
            ai_all, vi_all, y_all = cache.epoch_items(epoch)
            idx = self._sampler(len(y_all), epoch)
            batches = self._batches(idx)

            def gen_batches():
                for b in batches:
                    t = torch.tensor(b)
                    yield cache.batch(ai_all[t], vi_all[t]), y_all[t]
            iterator: Any = gen_batches()
            n_batches = len(batches)
            seen = [i for b in batches for i in b]
        else:
            loader, seen = self._train_loader(epoch)
            iterator, n_batches = loader, len(loader)
        if epoch == self.state.epoch and self.dist.world > 1 and "first_epoch" not in self.ddp_shards:
            self.ddp_shards["first_epoch"] = self._gather_shards(seen)
        bar = None
        if self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=n_batches, desc=f"{self.state.phase} epoch {epoch + 1}", leave=False,
                       dynamic_ncols=True, disable=None)
        total, correct, loss_sum = 0, 0, 0.0
        t0 = time.monotonic()
        misses0 = self.data.cache.misses
        for k, item in enumerate(iterator):
            if cache is not None:
                (fa, fi, za, zi, mask), label = item
                target = F.one_hot(label, len(self.labels)).float()
                if tc.augment.mixup.enabled:
                    (fa, fi, za, zi), target = mixup_tensors([fa, fi, za, zi], target, tc.augment.mixup, gen)
                # No modality dropout here: a dropped example's output is a frozen auxiliary head's (no gradient
                # reaches the fusion), so it only added noise to the loss - a chance-level picture head's confident
                # mistakes swung phase II's training loss between 1.5 and 9.3 while its accuracy sat near 0.87.
                d = self.device
                inputs, target, mask = (fa.to(d), fi.to(d), za.to(d), zi.to(d), mask.to(d)), target.to(d), mask.to(d)
            else:
                label = item["label"]
                inputs, target, mask = self._inputs(item, gen, train=True)
            loss, logits = self._step(net, opt, None if self.scaler is None else self.scaler, inputs, target, mask)
            b = int(label.numel())
            step_loss = float(loss)
            if self.dist.world > 1:  # the global batch's loss (equal shards: mean of the ranks' means)
                step_loss = all_reduce_sum([step_loss], self.dist)[0] / self.dist.world
            self.step_rows.append({"phase": self.state.phase, "epoch": epoch + 1, "step": k + 1, "loss": step_loss})
            total += b
            loss_sum += float(loss) * b
            correct += int((logits.argmax(1).cpu() == label).sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(total, 1):.3f}")
        if bar is not None:
            bar.close()
        seconds = time.monotonic() - t0
        if self.dist.world > 1:  # on the collective's device: CUDA tensors for NCCL
            loss_sum, correct, total = all_reduce_sum([loss_sum, float(correct), float(total)], self.dist)
        self.samples_seen += int(total)
        self.train_seconds += seconds
        return {"train_loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1),
                "samples_per_s": round(total / max(seconds, 1e-9), 2), "train_seconds": seconds,
                "decoded": self.data.cache.misses - misses0}

    def _gather_shards(self, seen: list[int]) -> dict[str, Any]:
        gathered: list[Any] = [None] * self.dist.world
        dist.all_gather_object(gathered, seen)
        sets = [set(g) for g in gathered]
        overlap = sum(len(sets[i] & sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets)))
        return {"examples_per_rank": [len(g) for g in gathered], "overlap": overlap,
                "union": len(set().union(*sets))}

    @torch.no_grad()
    def _validate(self, net: nn.Module, cache: Phase2Cache | None) -> dict[str, float]:
        """Validation loss and accuracy of the phase's logits, and of the audio-only / image-only heads."""
        model = _unwrap(net)
        task = TaskNet(model.model if isinstance(model, TaskNet) else model, self.state.phase)
        task.eval()
        n = 0
        loss_sum = 0.0
        hits = {"acc": 0, "acc_audio": 0, "acc_image": 0}
        have = {"acc_audio": False, "acc_image": False}
        bs = self.cfg.train.eval_batch_size
        if cache is not None:
            ai, vi, y = cache.epoch_items(0)
            chunks: Any = ((cache.batch(ai[j:j + bs], vi[j:j + bs]), y[j:j + bs]) for j in range(0, len(y), bs))
        else:
            phase = self.state.phase
            if phase.startswith("phase1"):
                val_set: Dataset = UnimodalDataset(self.data, self.val_split, "audio" if phase == "phase1_audio" else "image")
            else:
                self.val_ds.set_epoch(0)
                val_set = self.val_ds
            chunks = DataLoader(val_set, batch_size=bs, shuffle=False, num_workers=self.cfg.train.num_workers)
        for item in chunks:
            if cache is not None:
                inputs, label = item
                inputs = tuple(t.to(self.device) for t in inputs)
            else:
                label = item["label"]
                inputs, _, _ = self._inputs(item, torch.Generator(), train=False)
            logits, la, li = _logits_of(task(*inputs), self.state.phase)
            label_d = label.to(self.device)
            loss_sum += float(F.cross_entropy(logits.float(), label_d, reduction="sum"))
            hits["acc"] += int((logits.argmax(1) == label_d).sum())
            for key, lg in (("acc_audio", la), ("acc_image", li)):
                if lg is not None:
                    have[key] = True
                    hits[key] += int((lg.argmax(1) == label_d).sum())
            n += int(label.numel())
        out = {"val_loss": loss_sum / max(n, 1), "val_acc": hits["acc"] / max(n, 1)}
        for key in ("acc_audio", "acc_image"):
            out[f"val_{key}"] = hits[key] / max(n, 1) if have[key] else float("nan")
        return out

    # -- parameters per phase

    def _freeze_for(self, phase: str) -> None:
        from edgeav.train.models import freeze_backbones

        m = self.model
        for p in m.parameters():
            p.requires_grad_(phase == "joint")
        if phase == "phase1_audio":
            for mod in (m.audio_backbone, m.aux_audio, m.frontend):
                mod.requires_grad_(True)
        elif phase == "phase1_image":
            for mod in (m.image_backbone, m.aux_image):
                mod.requires_grad_(True)
        elif phase == "phase2_fusion":
            freeze_backbones(m)
            m.aux_audio.eval()
            m.aux_image.eval()
            m.fusion.requires_grad_(True)
        for bb in m.backbones():  # a backbone's own frozen part stays frozen (birdnet_v24: all but trainable_blocks)
            if hasattr(bb, "restrict_trainable"):
                bb.restrict_trainable()

    def _optimizer(self) -> torch.optim.Optimizer:
        from edgeav.train.models import param_groups

        tc = self.cfg.train
        lr_b, lr_f = tc.lr_backbone, tc.lr_fusion
        if self.state.phase.startswith("phase1") and tc.phase1_lr is not None:
            lr_b = lr_f = tc.phase1_lr
        groups = [g for g in param_groups(self.model, lr_b, lr_f, tc.weight_decay) if g["params"]]
        if not groups:
            raise ConfigError(f"phase {self.state.phase}: nothing to train")
        cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=tc.lr_fusion)

    # -- checkpoints

    def _train_state_dict(self) -> dict[str, Any]:
        st = asdict(self.state)
        st["history_json"] = json.dumps(st.pop("history"))
        st["phase_best_json"] = json.dumps(st.pop("phase_best"))
        st["best_loss"] = None if math.isinf(self.state.best_loss) else self.state.best_loss
        return st

    def _save(self, name: str, metrics: dict[str, Any], opt: Any = None, sched: Any = None) -> Path:
        from edgeav.train.models import save_checkpoint

        opt_state = None
        if opt is not None:
            opt_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        return save_checkpoint(self.out / name, self.model, labels=self.labels, arch=self.arch, contract=self.contract,
                               train_config=self.cfg.model_dump(mode="json"), metrics=_finite(metrics),
                               optimizer_state=opt_state,
                               extra={"train_state": self._train_state_dict(), "phase": self.state.phase,
                                      "seed": self.cfg.train.seed, "data": self.data_path, "weights": self.weights})

    def _load_weights(self, path: Path) -> dict[str, Any]:
        from edgeav.train.models import read_checkpoint

        payload = read_checkpoint(path)
        self.model.load_state_dict(payload["state_dict"])
        return payload

    def _read_resume(self) -> dict[str, Any] | None:
        last = self.out / "last.pt"
        if not last.is_file():
            log.warning("--resume: %s does not exist; starting from scratch", last)
            return None
        from edgeav.train.models import read_checkpoint

        payload = read_checkpoint(last)
        st = dict(payload["extra"]["train_state"])
        mode_phases = ("joint",) if self.cfg.train.mode == "joint" else PHASES_TWO
        if st["phase"] not in mode_phases:
            raise ConfigError(f"--resume: {last} was written in phase {st['phase']!r}, which train.mode="
                              f"{self.cfg.train.mode} does not have")
        return payload

    # -- metrics

    def _record(self, row: dict[str, Any]) -> None:
        self.state.history.append(row)
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            if f.tell() == 0:
                w.writeheader()
            w.writerow(row)
        with open(self.out / "steps.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["phase", "epoch", "step", "loss"])
            if f.tell() == 0:
                w.writeheader()
            w.writerows(self.step_rows)
        self.step_rows = []
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"))
        step = len(self.state.history)
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_audio", "val_acc_image", "lr_backbone",
                  "lr_fusion", "samples_per_s"):
            v = row.get(k)
            if isinstance(v, (int, float)) and not math.isnan(v):
                self._tb.add_scalar(f"{row['phase']}/{k}", v, step)
        self._tb.flush()

    def _rewrite_metrics(self) -> None:
        """On resume: metrics.csv is rewritten from the checkpoint's history (a kill may have left a row that the
        checkpoint does not have); steps.csv keeps only the steps of the epochs in that history."""
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.state.history)
        steps = self.out / "steps.csv"
        if steps.is_file():
            keep = {(r["phase"], int(r["epoch"])) for r in self.state.history}
            with open(steps, newline="") as f:
                rows = [r for r in csv.DictReader(f) if (r["phase"], int(r["epoch"])) in keep]
            with open(steps, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["phase", "epoch", "step", "loss"])
                w.writeheader()
                w.writerows(rows)

    @torch.no_grad()
    def _bn_warmup(self, phase: str) -> None:
        """Running statistics of the trainable BatchNorm layers re-estimated (cumulative average) on the first
        `bn_warmup_batches` training batches of the phase, without augmentation and without a weight update."""
        tc = self.cfg.train
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and any(p.requires_grad for p in m.parameters())]
        if not bns:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        torch.manual_seed(epoch_seed(tc.seed, 0, self.dist.rank, 3))
        task = TaskNet(self.model, phase)
        task.train()
        loader, _ = self._train_loader(0)
        n = 0
        for batch in loader:
            if n >= tc.bn_warmup_batches:
                break
            inputs, _, _ = self._inputs(batch, torch.Generator(), train=False)
            task(*inputs)
            n += 1
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        log.info("%s: BatchNorm statistics of %d layers estimated on %d batches", phase, len(bns), n)

    # -- one phase

    def _run_phase(self, phase: str, epochs: int, resume_payload: dict[str, Any] | None) -> None:
        tc = self.cfg.train
        self._freeze_for(phase)
        # a fusion without parameters (late_prod, late_avg) has nothing to learn in phase II: one pass scores it
        fixed = phase == "phase2_fusion" and not any(p.requires_grad for p in self.model.parameters())
        if fixed:
            log.info("phase II: head %r has no parameters; the fused output combines the phase I heads: scored once, "
                     "nothing trained", self.arch["head"])
            epochs = min(epochs, self.state.epoch + 1)
        opt = None if fixed else self._optimizer()
        sched = None if fixed else _scheduler(opt, tc, epochs)
        self.scaler = torch.amp.GradScaler("cuda") if (tc.amp and self.device.type == "cuda") else None
        if resume_payload is not None and opt is not None:
            o = resume_payload["optimizer_state"]
            opt.load_state_dict(o["optimizer"])
            sched.load_state_dict(o["scheduler"])
            if self.scaler is not None and o.get("scaler"):
                self.scaler.load_state_dict(o["scaler"])
        cache_train = cache_val = None
        if phase == "phase2_fusion":
            t = time.monotonic()
            cache_train = Phase2Cache(self.model, self.data, "train", tc.seed, self.device, tc.eval_batch_size,
                                      self.field_noise, tc.augment.noise.phase2_variants)
            cache_val = Phase2Cache(self.model, self.data, self.val_split, tc.seed, self.device, tc.eval_batch_size)
            self.cache_seconds = time.monotonic() - t
            log.info("phase II: frozen features of train and val computed once in %.1f s", self.cache_seconds)
        if resume_payload is None and cache_train is None and tc.bn_warmup_batches > 0:
            self._bn_warmup(phase)
        net: nn.Module = TaskNet(self.model, phase)
        if self.dist.world > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        best_file = BEST_FILE[phase]
        for epoch in range(self.state.epoch, epochs):
            t_epoch = time.monotonic()
            misses0 = self.data.cache.misses
            tr = (self._train_epoch(net, opt, self.scaler, epoch, cache_train) if not fixed
                  else {"train_loss": math.nan, "train_acc": math.nan, "samples_per_s": 0.0, "train_seconds": 0.0})
            va = self._validate(net, cache_val)
            tr["decoded"] = self.data.cache.misses - misses0  # media decoded this epoch (training + validation)
            if sched is not None:
                sched.step(va["val_acc"]) if tc.lr_schedule == "plateau" else sched.step()
            self.state.epoch = epoch + 1
            row = {"epoch": epoch + 1, "phase": phase, **tr, **va,
                   "lr_backbone": _lr(opt, "backbones") if opt else 0.0, "lr_fusion": _lr(opt, "fusion") if opt else 0.0,
                   "seconds": round(time.monotonic() - t_epoch, 2)}
            improved = va["val_acc"] > self.state.best_acc or (
                va["val_acc"] == self.state.best_acc and va["val_loss"] < self.state.best_loss)
            if improved:
                self.state.best_acc, self.state.best_loss = va["val_acc"], va["val_loss"]
                self.state.best_epoch, self.state.bad_epochs = epoch + 1, 0
                self.state.phase_best[phase] = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "val_acc_audio",
                                                                      "val_acc_image")}
            else:
                self.state.bad_epochs += 1
            self.state.history.append(row)  # (re-appended by _record below; keep the checkpoint's copy complete)
            metrics = {"phase": phase, "epoch": epoch + 1, **{k: va[k] for k in va}}
            if self.dist.is_main:
                if improved:
                    self._save(best_file, metrics)
                self._save("last.pt", metrics, opt, sched)
            self.state.history.pop()
            self._record(row)
            if self.dist.is_main:
                log.info("%s epoch %d/%d: loss %.4f, train acc %.3f, val acc %.3f (audio %.3f, image %.3f), "
                         "%.1f s, %.1f samples/s", phase, epoch + 1, epochs, tr["train_loss"], tr["train_acc"],
                         va["val_acc"], va["val_acc_audio"], va["val_acc_image"], row["seconds"], tr["samples_per_s"])
            if self.dist.world > 1:
                dist.barrier()
            if self.state.bad_epochs >= tc.early_stop_patience:
                log.info("%s: early stop after epoch %d (no better validation accuracy for %d epochs)", phase,
                         epoch + 1, self.state.bad_epochs)
                break
            if tc.max_minutes and (time.monotonic() - self.t0) / 60 > tc.max_minutes:
                log.warning("%s: stopping after epoch %d: train.max_minutes=%s reached", phase, epoch + 1,
                            tc.max_minutes)
                break
        if self.dist.world > 1:
            dist.barrier()

    # -- the whole run

    def fit(self, resume: bool = False) -> dict[str, Any]:
        tc = self.cfg.train
        phases = [("joint", tc.epochs)] if tc.mode == "joint" else [
            ("phase1_audio", tc.phase1_audio_epochs), ("phase1_image", tc.phase1_image_epochs), ("phase2_fusion", tc.epochs)]
        payload = self._read_resume() if resume else None
        resume_phase = None
        if payload is not None:
            st = dict(payload["extra"]["train_state"])
            self.state = TrainState(
                phase=st["phase"], epoch=int(st["epoch"]), best_acc=float(st["best_acc"]),
                best_loss=math.inf if st["best_loss"] is None else float(st["best_loss"]),
                best_epoch=int(st["best_epoch"]), bad_epochs=int(st["bad_epochs"]),
                done_phases=list(st["done_phases"]), history=json.loads(st["history_json"]),
                phase_best=json.loads(st["phase_best_json"]))
            self.model.load_state_dict(payload["state_dict"])
            resume_phase = st["phase"]
            self._rewrite_metrics()
            log.info("resuming from %s: phase %s after epoch %d", self.out / "last.pt", resume_phase, self.state.epoch)
        if tc.mode == "two_phase" and tc.phase1_from and "phase1_audio" not in self.state.done_phases:
            self._take_phase1(Path(tc.phase1_from))
        for phase, epochs in phases:
            if phase in self.state.done_phases:
                continue
            if phase == resume_phase:
                self._run_phase(phase, epochs, payload)
            else:
                self.state.phase, self.state.epoch = phase, 0
                self.state.best_acc, self.state.best_loss, self.state.best_epoch, self.state.bad_epochs = -1.0, math.inf, -1, 0
                self._run_phase(phase, epochs, None)
            self.state.done_phases.append(phase)
            if phase.startswith("phase1"):
                # keep the best epoch of this unimodal model (its branch only) for the next phases
                best = self._best_branch(phase)
                self.model.load_state_dict(best)
        return self._finish()

    def _take_phase1(self, src: Path) -> None:
        """Phase I from an earlier run: both unimodal branches from src/best_audio.pt and src/best_image.pt."""
        from edgeav.errors import ModelError
        from edgeav.train.models import read_checkpoint

        for phase in ("phase1_audio", "phase1_image"):
            path = src / BEST_FILE[phase]
            payload = read_checkpoint(path)
            keys = {k: payload["arch"].get(k) for k in ("audio_backbone", "image_backbone")}
            mine = {k: self.arch.get(k) for k in keys}
            if keys != mine or payload["labels"] != self.labels:
                raise ModelError(f"train.phase1_from: {path} has {keys} and labels {payload['labels']}; this run "
                                 f"needs {mine} and {self.labels}")
            self.model.load_state_dict(self._best_branch(phase, path))
            self.state.done_phases.append(phase)
            best = json.loads(payload["extra"]["train_state"]["phase_best_json"]).get(phase)
            if best:
                self.state.phase_best[phase] = best
            self.state.history += [r for r in json.loads(payload["extra"]["train_state"]["history_json"])
                                   if r["phase"] == phase]
        self._rewrite_metrics()
        log.info("phase I taken from %s (best_audio.pt, best_image.pt)", src)

    def _best_branch(self, phase: str, path: Path | None = None) -> dict[str, torch.Tensor]:
        """The current state dict with the trained branch (backbone + auxiliary head) of `phase` replaced by its
        best epoch's weights."""
        from edgeav.train.models import read_checkpoint

        if self.dist.world > 1:
            dist.barrier()
        path = path if path is not None else self.out / BEST_FILE[phase]
        current = self.model.state_dict()
        if not path.is_file():
            return current
        best = read_checkpoint(path)["state_dict"]
        prefixes = ("audio_backbone.", "aux_audio.", "frontend.") if phase == "phase1_audio" else ("image_backbone.", "aux_image.")
        return {k: (best[k] if k.startswith(prefixes) else v) for k, v in current.items()}

    def _finish(self) -> dict[str, Any]:
        if self._hook is not None:
            self._hook.remove()
        if self._tb:
            self._tb.close()
        report: dict[str, Any] = {
            "mode": self.cfg.train.mode,
            "model": self.arch.get("name"),
            "arch": {k: self.arch.get(k) for k in ("audio_backbone", "image_backbone", "head")},
            "labels": self.labels,
            "data": self.data_path,
            "splits": {s: len(self.data.samples(s)) for s in ("train", "val", "test")},
            "best": self.state.phase_best,
            "epochs_run": {p: sum(1 for r in self.state.history if r["phase"] == p) for p in
                           dict.fromkeys(r["phase"] for r in self.state.history)},
            "minutes": round((time.monotonic() - self.t0) / 60, 3),  # this process (a resumed run: since resuming)
            "train_minutes": round(sum(float(r.get("seconds") or 0) for r in self.state.history) / 60, 3),
            "train_samples_per_s": round(self.samples_seen / max(self.train_seconds, 1e-9), 2),
            "decodes": {"prepare": self.decodes_prepare - self.decodes_before,
                        "training": self.data.cache.misses - self.decodes_prepare},
            "world_size": self.dist.world,
            "out": str(self.out),
            "checkpoint": str(self.out / "best.pt"),
            "weights": self.weights,  # what the run started from: pretrained source, --init (path + sha256)
        }
        if self.ddp_shards:
            report["ddp_shards"] = self.ddp_shards
        if self.cfg.train.mode == "two_phase":
            report["phase2_cache_seconds"] = round(getattr(self, "cache_seconds", 0.0), 2)
        if self.dist.is_main and self.data.samples("test") and self.cfg.train.eval_test:
            from edgeav.train.evaluate import evaluate_checkpoint

            ev = evaluate_checkpoint(self.out / "best.pt", self.data_path, "test", self.out / "eval_test",
                                     data=self.data)
            report["test"] = {k: {"accuracy": ev[k]["accuracy"], "macro_f1": ev[k]["macro_f1"]} for k in
                              ("both", "audio_only", "image_only")}
            report["test"]["n"] = ev["both"]["n"]
            self._stamp_test_metrics(ev)
        if self.dist.is_main:
            (self.out / "train_report.json").write_text(json.dumps(_finite(report), indent=2))
            (self.out / "report.md").write_text(_report_md(report))
        return report

    def _stamp_test_metrics(self, ev: dict[str, Any]) -> None:
        """best.pt carries the test figures it was validated with (what export copies into its manifests)."""
        from edgeav.train.models import read_checkpoint, save_checkpoint

        path = self.out / "best.pt"
        payload = read_checkpoint(path)
        metrics = dict(payload.get("metrics") or {})
        metrics.update({"test_accuracy": ev["both"]["accuracy"], "test_macro_f1": ev["both"]["macro_f1"],
                        "test_accuracy_audio_only": ev["audio_only"]["accuracy"],
                        "test_accuracy_image_only": ev["image_only"]["accuracy"], "test_n": ev["both"]["n"]})
        model = self.model
        backup = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(payload["state_dict"])
        save_checkpoint(path, model, labels=payload["labels"], arch=payload["arch"], contract=payload["contract"],
                        train_config=payload["train_config"], metrics=_finite(metrics), optimizer_state=None,
                        extra=payload.get("extra") or {})
        model.load_state_dict(backup)


def _lr(opt: torch.optim.Optimizer, name: str) -> float:
    for g in opt.param_groups:
        if g.get("name") == name:
            return float(g["lr"])
    return float("nan")


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively (JSON and checkpoint metrics stay valid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _report_md(r: dict[str, Any]) -> str:
    lines = [f"# Training report: {r.get('model') or r['arch']['head']} ({r['mode']})", "",
             f"- data: `{r['data']}` ({', '.join(f'{k} {v}' for k, v in r['splits'].items())})",
             f"- minutes: {r['minutes']} (epochs of all phases, resumes included: {r['train_minutes']}); training throughput {r['train_samples_per_s']} samples/s; "
             f"world size {r['world_size']}",
             f"- media decoded: {r['decodes']['prepare']} while preparing, {r['decodes']['training']} while training"]
    init = (r.get("weights") or {}).get("init")
    if init:
        lines.append(f"- started from `{init['path']}` (sha256 {init['sha256'][:12]}, {init['labels_there']} classes): "
                     f"{init['loaded_tensors']} tensors loaded, new: {', '.join(init['new_modules']) or 'none'}")
    lines.append("")
    lines += ["| phase | best epoch | val acc | val acc audio | val acc image |", "|---|---|---|---|---|"]
    for phase, b in r["best"].items():
        lines.append(f"| {phase} | {b['epoch']} | {_f(b['val_acc'])} | {_f(b['val_acc_audio'])} | {_f(b['val_acc_image'])} |")
    if "test" in r:
        t = r["test"]
        lines += ["", f"Test split ({t['n']} examples), best.pt:", "", "| input | accuracy | macro-F1 |", "|---|---|---|"]
        for k in ("both", "audio_only", "image_only"):
            lines.append(f"| {k.replace('_', ' ')} | {_f(t[k]['accuracy'])} | {_f(t[k]['macro_f1'])} |")
    return "\n".join(lines) + "\n"


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def train(cfg: EdgeAVConfig, data_path: str | Path | None, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train from a config (library entry point of `edgeav train`)."""
    trainer = Trainer(cfg, data_path, out_dir)
    try:
        return trainer.fit(resume=resume)
    finally:
        if trainer.dist.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def cmd_train(args: argparse.Namespace) -> CommandResult:
    cfg = load_config(args.config, list(args.overrides or []))
    if getattr(args, "init", None):
        cfg.train.init_from = args.init
    report = train(cfg, args.data, args.out, resume=args.resume)
    best = report["best"].get("phase2_fusion") or report["best"].get("joint") or {}
    text = (f"trained ({report['mode']}) in {report['minutes']:.1f} min; best validation accuracy "
            f"{_f(best.get('val_acc'))} at epoch {best.get('epoch')}")
    if "test" in report:
        t = report["test"]
        text += (f"; test accuracy {_f(t['both']['accuracy'])} (audio only {_f(t['audio_only']['accuracy'])}, "
                 f"image only {_f(t['image_only']['accuracy'])}, n={t['n']})")
    text += f"; wrote {report['checkpoint']}"
    return CommandResult(_finite(report), text)


__all__ = ["METRIC_FIELDS", "Phase2Cache", "TaskNet", "TrainState", "Trainer", "cmd_train", "epoch_seed",
           "init_distributed", "pick_device", "seed_epoch", "train"]
