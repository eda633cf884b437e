"""`edgeav train`: the training loop (joint and two-phase), checkpoints, exact resume, DDP.

One epoch is a pure function of (seed, epoch): the data order, the pairing of species-paired data, the
augmentation and the model's own randomness are all seeded from them at the start of the epoch, so resuming
from `last.pt` after a kill continues exactly where the run would have gone.

Under `torchrun --nproc_per_node=N` each rank takes a disjoint shard of every epoch (DistributedSampler) with
batch_size / N examples per step; gradients are averaged by DDP (NCCL on GPUs, gloo on CPU); only rank 0 writes
checkpoints, metrics and logs.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from edgeav.errors import ConfigError, DataError
from edgeav.result import CommandResult
from edgeav.schema import EdgeAVConfig, load_config
from edgeav.train.augment import (
    SpecAugmentHook,
    augment_image,
    augment_wave,
    joint_mixup,
    modality_dropout,
    soft_cross_entropy,
)

log = logging.getLogger(__name__)

METRIC_FIELDS = ["epoch", "phase", "train_loss", "train_acc", "val_acc", "val_acc_audio", "val_acc_image", "lr_backbone", "lr_fusion", "seconds"]


# ---------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    log.info("distributed: rank %d of %d (%s)", info.rank, info.world, dist.get_backend())
    return info


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# ---------------------------------------------------------------- helpers


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed torch's global RNG (dropout etc.) and return a generator for data order and augmentation."""
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s + 7)


def param_groups(model: nn.Module, lr_backbone: float, lr_fusion: float) -> list[dict[str, Any]]:
    """Differential learning rates: parameters of the backbones low, everything else (fusion, heads) high."""
    backbone, fusion = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if "backbone" in name else fusion).append(p)
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr_backbone, "name": "backbone"})
    if fusion:
        groups.append({"params": fusion, "lr": lr_fusion, "name": "fusion"})
    return groups


def make_optimizer(cfg: EdgeAVConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.train.lr_backbone, cfg.train.lr_fusion)
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=cfg.train.weight_decay)


def _lr(opt: torch.optim.Optimizer, name: str) -> float:
    for g in opt.param_groups:
        if g.get("name") == name:
            return float(g["lr"])
    return float("nan")


def _outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model returns (logits, logits_audio, logits_image), each (B, C), as a tuple or a dict."""
    if isinstance(out, dict):
        return out["logits"], out["logits_audio"], out["logits_image"]
    return out[0], out[1], out[2]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "audio": torch.stack([torch.as_tensor(b["audio"]) for b in batch]),  # (B, T) float32
        "image": torch.stack([torch.as_tensor(b["image"]) for b in batch]),  # (B, 3, H, W) uint8
        "mask": torch.stack([torch.as_tensor(b["mask"]) for b in batch]).float(),  # (B, 2)
        "label": torch.as_tensor([int(b["label"]) for b in batch]),  # (B,)
    }


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], device: torch.device) -> dict[str, Any]:
    """Accuracy of the fused output and of each modality alone (through the mask) on a loader."""
    model.eval()
    n = 0
    correct = {"both": 0, "audio": 0, "image": 0}
    for batch in loader:
        audio, image, label = batch["audio"].to(device), batch["image"].to(device), batch["label"].to(device)
        mask = batch["mask"].to(device)
        logits, la, li = _outputs(model(audio, image, mask))
        correct["both"] += int((logits.argmax(1) == label).sum())
        correct["audio"] += int((la.argmax(1) == label).sum())
        correct["image"] += int((li.argmax(1) == label).sum())
        n += label.numel()
    if n == 0:
        return {"n": 0, "acc": float("nan"), "acc_audio": float("nan"), "acc_image": float("nan")}
    return {"n": n, "acc": correct["both"] / n, "acc_audio": correct["audio"] / n, "acc_image": correct["image"] / n}


# ---------------------------------------------------------------- the trainer


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    phase: str = "joint"
    best_acc: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains one model from a config on a data set; writes OUT/best.pt, OUT/last.pt, metrics and a report."""

    def __init__(self, cfg: EdgeAVConfig, data_path: str | Path | None, out_dir: str | Path) -> None:
        from edgeav.train.data import load_dataset
        from edgeav.train.models import build_model_from_config

        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        path = data_path or cfg.data.path
        if path is None:
            raise ConfigError("no data: pass --data PATH or set data.path")
        self.data = load_dataset(cfg.data, path)
        self.labels = list(self.data.classes)
        torch.manual_seed(cfg.train.seed)
        self.model, self.arch, self.contract = build_model_from_config(cfg, self.labels)
        self.model.to(self.device)
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.state = TrainState(phase="joint" if cfg.train.mode == "joint" else "phase1_audio")
        self.t0 = time.monotonic()
        self._spec_hook = None
        frontend = getattr(self.model, "frontend", None)
        if frontend is not None and cfg.train.augment.spec_augment.enabled:
            self._spec_aug = SpecAugmentHook(cfg.train.augment.spec_augment, self.gen)
            self._spec_hook = frontend.register_forward_hook(self._spec_aug)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._tb = None

    # -- data

    def _split_dataset(self, split: str, epoch: int):
        from edgeav.train.data.torch_dataset import TorchAVDataset

        return TorchAVDataset(self.data, split, epoch=epoch, seed=self.cfg.train.seed)

    def _loader(self, split: str, epoch: int, train: bool, gen: torch.Generator) -> DataLoader:
        ds = self._split_dataset(split, epoch)
        if len(ds) == 0:
            raise DataError(f"the {split!r} split is empty; check the data set's split column or data.val_fraction")
        per_rank = max(1, self.cfg.train.batch_size // self.dist.world)
        if self.dist.world > 1 and train:
            sampler = DistributedSampler(ds, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                         seed=self.cfg.train.seed, drop_last=True)
            sampler.set_epoch(epoch)
            return DataLoader(ds, batch_size=per_rank, sampler=sampler, collate_fn=collate,
                              num_workers=self.cfg.train.num_workers, drop_last=True)
        return DataLoader(ds, batch_size=per_rank if train else 32, shuffle=train, generator=gen if train else None,
                          collate_fn=collate, num_workers=self.cfg.train.num_workers, drop_last=False)

    # -- steps

    def _augment(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        aug = self.cfg.train.augment
        audio, image, mask, label = batch["audio"], batch["image"], batch["mask"], batch["label"]
        audio = augment_wave(audio, aug.wave, self.contract.audio.sample_rate_hz, gen)
        image = augment_image(image, aug.image, gen)
        target = torch.nn.functional.one_hot(label, len(self.labels)).float()  # (B, C)
        if aug.mixup.enabled:
            audio, image, target = joint_mixup(audio, image, target, aug.mixup.alpha, aug.mixup.batch_fraction, gen)
        mask = modality_dropout(mask, aug.modality_dropout, gen)
        return audio, image, mask, target, label

    def _loss(self, out: Any, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, la, li = _outputs(out)
        tc = self.cfg.train
        phase = self.state.phase
        if phase == "phase1_audio":
            return soft_cross_entropy(la, target, tc.label_smoothing), la
        if phase == "phase1_image":
            return soft_cross_entropy(li, target, tc.label_smoothing), li
        loss = soft_cross_entropy(logits, target, tc.label_smoothing)
        if phase == "joint" and tc.aux_loss_weight > 0:
            # auxiliary unimodal losses only where that modality is present
            wa, wi = mask[:, 0], mask[:, 1]
            la_loss = -(target * torch.log_softmax(la, 1)).sum(1)
            li_loss = -(target * torch.log_softmax(li, 1)).sum(1)
            aux = (wa * la_loss).sum() / wa.sum().clamp_min(1) + (wi * li_loss).sum() / wi.sum().clamp_min(1)
            loss = loss + tc.aux_loss_weight * aux
        return loss, logits

    def _train_epoch(self, model: nn.Module, opt: torch.optim.Optimizer, scaler, epoch: int) -> dict[str, float]:
        gen = seed_epoch(self.cfg.train.seed, epoch)
        self._spec_aug_gen(gen)
        loader = self._loader("train", epoch, True, gen)
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        use_amp = self.cfg.train.amp and self.device.type == "cuda"
        bar = None
        if self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1} {self.state.phase}", leave=False, dynamic_ncols=True,
                       disable=None)
        for batch in loader:
            audio, image, mask, target, label = self._augment(batch, gen)
            if self.state.phase == "phase1_audio":
                mask = torch.stack([torch.ones_like(mask[:, 0]), torch.zeros_like(mask[:, 1])], 1)
            elif self.state.phase == "phase1_image":
                mask = torch.stack([torch.zeros_like(mask[:, 0]), torch.ones_like(mask[:, 1])], 1)
            audio, image, mask = audio.to(self.device), image.to(self.device), mask.to(self.device)
            target, label = target.to(self.device), label.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
                out = model(audio, image, mask)
                loss, logits = self._loss(out, target, mask)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            b = label.numel()
            total += b
            loss_sum += float(loss.detach()) * b
            correct += int((logits.detach().argmax(1) == label).sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / total:.3f}")
        if bar is not None:
            bar.close()
        stats = torch.tensor([loss_sum, float(correct), float(total)], dtype=torch.float64)
        if self.dist.world > 1:
            dist.all_reduce(stats)
        loss_sum, correct, total = stats.tolist()
        return {"train_loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1)}

    def _spec_aug_gen(self, gen: torch.Generator) -> None:
        if self._spec_hook is not None:
            self._spec_aug.gen = gen

    def _validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        loader = self._loader("val", epoch, False, torch.Generator())
        return evaluate_model(_unwrap(model), loader, self.device)

    # -- checkpoints

    def _save(self, name: str, model: nn.Module, opt, sched, metrics: dict[str, Any]) -> Path:
        from edgeav.train.models import save_checkpoint

        extra = {
            "train_state": {
                "epoch": self.state.epoch,
                "phase": self.state.phase,
                "best_acc": self.state.best_acc,
                "best_epoch": self.state.best_epoch,
                "bad_epochs": self.state.bad_epochs,
                "history_json": json.dumps(self.state.history),
            },
        }
        return save_checkpoint(
            self.out / name,
            _unwrap(model),
            labels=self.labels,
            arch=self.arch,
            contract=self.contract,
            train_config=self.cfg.model_dump(mode="json"),
            metrics=metrics,
            optimizer_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
            extra=extra,
        )

    def _try_resume(self, model: nn.Module, opt, sched) -> bool:
        last = self.out / "last.pt"
        if not last.is_file():
            log.warning("--resume: no %s; starting from scratch", last)
            return False
        ck = torch.load(last, map_location="cpu", weights_only=True)
        _unwrap(model).load_state_dict(ck["state_dict"])
        st = ck["extra"]["train_state"]
        if st["phase"] != self.state.phase and self.cfg.train.mode == "joint":
            raise ConfigError(f"{last} was written in phase {st['phase']!r}, not resumable as joint training")
        self.state = TrainState(epoch=int(st["epoch"]), phase=st["phase"], best_acc=float(st["best_acc"]),
                                best_epoch=int(st["best_epoch"]), bad_epochs=int(st["bad_epochs"]),
                                history=json.loads(st["history_json"]))
        opt.load_state_dict(ck["optimizer_state"]["optimizer"])
        sched.load_state_dict(ck["optimizer_state"]["scheduler"])
        log.info("resumed from %s after epoch %d (%s)", last, self.state.epoch, self.state.phase)
        return True

    # -- metrics

    def _record(self, row: dict[str, Any]) -> None:
        self.state.history.append(row)
        if not self.dist.is_main:
            return
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        try:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            step = len(self.state.history)
            for k in ("train_loss", "train_acc", "val_acc", "val_acc_audio", "val_acc_image", "lr_backbone", "lr_fusion"):
                v = row.get(k)
                if isinstance(v, (int, float)) and not math.isnan(v):
                    self._tb.add_scalar(f"{row['phase']}/{k}", v, step)
        except ImportError:  # tensorboard is in the train extra; metrics.csv has everything regardless
            log.warning("tensorboard is not installed: curves only in metrics.csv")
            self._tb = False  # type: ignore[assignment]

    # -- phases

    def _run_phase(self, epochs: int, resume: bool, trainable: str = "all") -> None:
        model = _unwrap(self.model)
        for name, p in model.named_parameters():
            if trainable == "all":
                p.requires_grad_(True)
            elif trainable == "audio":
                p.requires_grad_("audio" in name)
            elif trainable == "image":
                p.requires_grad_("image" in name)
            elif trainable == "fusion":
                p.requires_grad_("backbone" not in name and "frontend" not in name and "aux" not in name)
        opt = make_optimizer(self.cfg, model)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=self.cfg.train.plateau_factor,
                                                           patience=self.cfg.train.plateau_patience)
        if resume:
            self._try_resume(model, opt, sched)
        wrapped: nn.Module = model
        if self.dist.world > 1:
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=trainable != "all")
        scaler = torch.amp.GradScaler("cuda") if (self.cfg.train.amp and self.device.type == "cuda") else None
        tc = self.cfg.train
        start = self.state.epoch
        for epoch in range(start, epochs):
            t_epoch = time.monotonic()
            tr = self._train_epoch(wrapped, opt, scaler, epoch)
            va = self._validate(wrapped, epoch)
            key = {"phase1_audio": "acc_audio", "phase1_image": "acc_image"}.get(self.state.phase, "acc")
            acc = float(va[key])
            sched.step(acc)
            self.state.epoch = epoch + 1
            row = {"epoch": epoch + 1, "phase": self.state.phase, **tr, "val_acc": va["acc"],
                   "val_acc_audio": va["acc_audio"], "val_acc_image": va["acc_image"],
                   "lr_backbone": _lr(opt, "backbone"), "lr_fusion": _lr(opt, "fusion"),
                   "seconds": round(time.monotonic() - t_epoch, 2)}
            improved = acc > self.state.best_acc
            if improved:
                self.state.best_acc, self.state.best_epoch, self.state.bad_epochs = acc, epoch + 1, 0
            else:
                self.state.bad_epochs += 1
            self._record(row)
            if self.dist.is_main:
                log.info("%s epoch %d/%d: loss %.4f train acc %.3f val acc %.3f (audio %.3f, image %.3f) %.1fs",
                         self.state.phase, epoch + 1, epochs, tr["train_loss"], tr["train_acc"], va["acc"],
                         va["acc_audio"], va["acc_image"], row["seconds"])
                metrics = {"val_acc": va["acc"], "val_acc_audio": va["acc_audio"], "val_acc_image": va["acc_image"],
                           "epoch": epoch + 1, "phase": self.state.phase}
                if improved:
                    self._save(f"best_{self.state.phase}.pt" if self.state.phase.startswith("phase1") else "best.pt",
                               model, opt, sched, metrics)
                self._save("last.pt", model, opt, sched, metrics)
            if self.dist.world > 1:
                dist.barrier()
            if self.state.bad_epochs >= tc.early_stop_patience:
                log.info("early stop: no better validation accuracy for %d epochs", self.state.bad_epochs)
                break
            if tc.max_minutes and (time.monotonic() - self.t0) / 60 > tc.max_minutes:
                log.warning("stopping: train.max_minutes=%s reached", tc.max_minutes)
                break

    def _load_best_phase(self, phase: str) -> None:
        path = self.out / f"best_{phase}.pt"
        if self.dist.world > 1:
            dist.barrier()
        if path.is_file():
            ck = torch.load(path, map_location="cpu", weights_only=True)
            _unwrap(self.model).load_state_dict(ck["state_dict"])

    def fit(self, resume: bool = False) -> dict[str, Any]:
        tc = self.cfg.train
        if tc.mode == "joint":
            self._run_phase(tc.epochs, resume, "all")
        else:
            phases = [("phase1_audio", tc.phase1_epochs, "audio"), ("phase1_image", tc.phase1_epochs, "image"),
                      ("phase2_fusion", tc.epochs, "fusion")]
            done_phase = None
            if resume and (self.out / "last.pt").is_file():
                done_phase = torch.load(self.out / "last.pt", map_location="cpu", weights_only=True)["extra"]["train_state"]["phase"]
            names = [p[0] for p in phases]
            start = names.index(done_phase) if done_phase in names else 0
            for i, (phase, epochs, trainable) in enumerate(phases):
                if i < start:
                    if phase.startswith("phase1"):
                        continue
                self.state = TrainState(phase=phase)
                if i > 0 and phases[i - 1][0].startswith("phase1"):
                    self._load_best_phase(phases[i - 1][0])
                self._run_phase(epochs, resume and i == start, trainable)
        if self._spec_hook is not None:
            self._spec_hook.remove()
        if self._tb:
            self._tb.close()
        report = {
            "best_val_acc": self.state.best_acc,
            "best_epoch": self.state.best_epoch,
            "epochs_run": self.state.epoch,
            "minutes": round((time.monotonic() - self.t0) / 60, 2),
            "labels": self.labels,
            "out": str(self.out),
            "checkpoint": str(self.out / "best.pt"),
            "world_size": self.dist.world,
        }
        if self.dist.is_main:
            (self.out / "train_report.json").write_text(json.dumps(report, indent=2))
        return report


def cmd_train(args: argparse.Namespace) -> CommandResult:
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg, args.data, args.out)
    report = trainer.fit(resume=args.resume)
    text = (f"trained {report['epochs_run']} epochs in {report['minutes']} min; best validation accuracy "
            f"{report['best_val_acc']:.3f} at epoch {report['best_epoch']}; wrote {report['checkpoint']}")
    if trainer.dist.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return CommandResult(report, text)


__all__ = ["Trainer", "cmd_train", "evaluate_model", "collate", "init_distributed", "param_groups", "Subset"]
