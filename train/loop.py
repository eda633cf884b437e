"""`edgeav train`: the training loop (joint and two-phase).

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

An epoch (`Trainer._train_epoch`): forward, loss, backward, step, log, over batches of raw windows (joint, phase I:
`window_batches`) or of cached features (phase II: `phase2_cache`). Early stop after `early_stop_patience` epochs
without a better validation accuracy (ties broken by a lower validation loss). Beside the loop:

- `seeds`: every epoch a pure function of (seed, epoch, rank) - what makes `--resume` exact (`checkpointing`).
- `trainable`: the model with its starting weights (`model.pretrained`, `--init CHECKPOINT`), freezing per phase,
  the optimizer's two parameter groups, the learning-rate schedule, the BatchNorm warm-up.
- `distributed`: under `torchrun --nproc_per_node=N` each rank takes a disjoint shard of every epoch with
  `batch_size / N` examples per step; DDP averages gradients (NCCL on GPUs, gloo on CPU); only rank 0 writes.
- `reporting`: metrics.csv, steps.csv, TensorBoard, train_report.json, report.md, the test figures in best.pt.

Outputs in OUT: best.pt (and best_audio.pt / best_image.pt in two_phase), last.pt, metrics.csv (one row per epoch),
steps.csv (loss of every optimizer step), tensorboard/, train_report.json, report.md, and eval_test/ (`edgeav eval`
of best.pt on the test split, when the data has one).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from edgeav.errors import ConfigError
from edgeav.result import CommandResult
from edgeav.schema import EdgeAVConfig, load_config
from edgeav.threads import applied_plan
from edgeav.train.augment import SpecAugmentHook, build_field_noise
from edgeav.train.checkpointing import RunCheckpoints, TrainState, finite
from edgeav.train.distributed import (
    all_reduce_sum,
    barrier,
    gather_shards,
    init_distributed,
    mean_over_ranks,
    plan_from_environment,
    rank_batches,
    unwrap_ddp,
    wrap_ddp,
)
from edgeav.train.phase2_cache import Batch, Phase2Cache, phase2_caches
from edgeav.train.reporting import METRIC_FIELDS, EpochProgress, MetricsLog, format_metric, run_report, write_report
from edgeav.train.seeds import STREAM_SPEC_AUGMENT, epoch_seed, seed_epoch
from edgeav.train.task import BEST_FILE, PHASES_TWO, PhaseNet, logits_of, phase_loss
from edgeav.train.trainable import build_run_model, freeze_for_phase, group_lr, phase_optimizer, warm_up_batchnorm
from edgeav.train.window_batches import WindowBatches, open_run_data

log = logging.getLogger(__name__)

NOT_TRAINED = {"train_loss": math.nan, "train_acc": math.nan, "samples_per_s": 0.0, "train_seconds": 0.0}


class Trainer:
    """Trains the model a config describes on a data set; writes OUT/best.pt, OUT/last.pt, metrics and a report."""

    def __init__(self, cfg: EdgeAVConfig, data_path: str | Path | None, out_dir: str | Path) -> None:
        self.t0 = time.monotonic()
        self.cfg = cfg
        tc = cfg.train
        self.out = Path(out_dir)
        plan = plan_from_environment(tc.device, os.environ)  # NCCL on cuda:LOCAL_RANK, gloo on the CPU
        self.dist = init_distributed(plan)  # torch.cuda.set_device(local_rank) before the group is joined
        self.device = self.dist.device
        if tc.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {self.dist.world} ranks")
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.field_noise = build_field_noise(tc, cfg.data.sample_rate_hz)  # noise bank decoded once, before the data
        self.run_data = open_run_data(cfg, data_path)
        self.data, self.data_path, self.labels = self.run_data.data, self.run_data.path, self.run_data.labels
        self.val_split = self.run_data.val_split
        self.model, self.arch, self.weights = build_run_model(cfg, self.labels, self.device)
        self.contract = self.model.contract
        self.windows = WindowBatches(cfg, self.run_data, self.dist, self.field_noise, self.contract, self.device)
        self.spec_aug = SpecAugmentHook(tc.augment.spec_augment)
        self._hook = (
            self.model.frontend.audio.register_forward_hook(self.spec_aug) if tc.augment.spec_augment.enabled else None
        )
        self.state = TrainState(phase="joint" if tc.mode == "joint" else PHASES_TWO[0])
        self.checkpoints = RunCheckpoints(
            self.out, self.model, cfg, self.labels, self.arch, self.data_path, self.weights, self.dist
        )
        self.metrics = MetricsLog(self.out, self.dist.is_main)
        self.scaler: Any = None
        self.ddp_shards: dict[str, Any] = {}
        self.samples_seen, self.train_seconds, self.cache_seconds = 0, 0.0, 0.0
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    # -- the epoch

    def _train_epoch(
        self, net: nn.Module, opt: torch.optim.Optimizer, epoch: int, cache: Phase2Cache | None
    ) -> dict[str, float]:
        """One epoch of the phase: forward, loss, backward, step, log."""
        tc, phase, rank = self.cfg.train, self.state.phase, self.dist.rank
        gen = seed_epoch(tc.seed, epoch, rank)
        self.spec_aug.gen = torch.Generator().manual_seed(epoch_seed(tc.seed, epoch, rank, STREAM_SPEC_AUGMENT))
        self.field_noise.epoch = epoch  # the noise curriculum follows the phase's epochs
        net.train()
        if phase == "phase2_fusion":
            freeze_for_phase(self.model, phase)  # frozen parts stay in eval mode (BatchNorm statistics, dropout)
        batches, batch_indices = (
            self._cached_feature_batches(cache, epoch, gen) if cache is not None else self._window_batches(epoch, gen)
        )
        if epoch == self.state.epoch and self.dist.world > 1 and "first_epoch" not in self.ddp_shards:
            self.ddp_shards["first_epoch"] = gather_shards(batch_indices, self.dist)
        progress = EpochProgress(len(batch_indices), f"{phase} epoch {epoch + 1}", self.dist.is_main)
        total, correct, loss_sum = 0, 0, 0.0
        t0, misses0 = time.monotonic(), self.data.cache.misses
        for step, (inputs, target, mask, label) in enumerate(batches):
            loss, logits = self._step(net, opt, inputs, target, mask)
            self.metrics.step(phase, epoch + 1, step + 1, mean_over_ranks(float(loss), self.dist))  # global batch
            total += int(label.numel())
            loss_sum += float(loss) * int(label.numel())
            correct += int((logits.argmax(1).cpu() == label).sum())
            progress.update(loss_sum / max(total, 1))
        progress.close()
        seconds = time.monotonic() - t0
        if self.dist.world > 1:  # on the collective's device: CUDA tensors for NCCL
            loss_sum, correct, total = all_reduce_sum([loss_sum, float(correct), float(total)], self.dist)
        self.samples_seen += int(total)
        self.train_seconds += seconds
        return {
            "train_loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
            "samples_per_s": round(total / max(seconds, 1e-9), 2),
            "train_seconds": seconds,
            "decoded": self.data.cache.misses - misses0,
        }

    def _step(
        self, net: nn.Module, opt: torch.optim.Optimizer, inputs: tuple, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, optimizer step: (loss, logits), detached."""
        use_amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
            loss, logits = phase_loss(net(*inputs), target, mask, self.state.phase, self.cfg.train)
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach(), logits.detach()

    def _window_batches(self, epoch: int, gen: torch.Generator) -> tuple[Iterator[Batch], list[list[int]]]:
        """Joint training and phase I: augmented batches of raw windows (audio, images) from the data set."""
        return self.windows.train_batches(self.state.phase, epoch, gen)

    def _cached_feature_batches(
        self, cache: Phase2Cache, epoch: int, gen: torch.Generator
    ) -> tuple[Iterator[Batch], list[list[int]]]:
        """Phase II: batches of the frozen unimodal features, computed once; mixup acts on them."""
        tc = self.cfg.train
        return cache.train_batches(
            epoch,
            lambda n: rank_batches(n, epoch, tc.seed, tc.batch_size, self.dist),
            len(self.labels),
            tc.augment.mixup,
            gen,
            self.device,
        )

    @torch.no_grad()
    def _validate(self, net: nn.Module, cache: Phase2Cache | None) -> dict[str, float]:
        """Validation loss and accuracy of the phase's logits, and of the audio-only / image-only heads."""
        phase = self.state.phase
        model = unwrap_ddp(net)
        task = PhaseNet(model.model if isinstance(model, PhaseNet) else model, phase)
        task.eval()
        n, loss_sum = 0, 0.0
        hits = {"acc": 0, "acc_audio": 0, "acc_image": 0}
        have = {"acc_audio": False, "acc_image": False}
        batches = (
            cache.val_batches(self.cfg.train.eval_batch_size, self.device)
            if cache is not None
            else self.windows.val_batches(phase, self.val_split)
        )
        for inputs, label in batches:
            logits, logits_audio, logits_image = logits_of(task(*inputs), phase)
            label_d = label.to(self.device)
            loss_sum += float(F.cross_entropy(logits.float(), label_d, reduction="sum"))
            hits["acc"] += int((logits.argmax(1) == label_d).sum())
            for key, lg in (("acc_audio", logits_audio), ("acc_image", logits_image)):
                if lg is not None:
                    have[key] = True
                    hits[key] += int((lg.argmax(1) == label_d).sum())
            n += int(label.numel())
        out = {"val_loss": loss_sum / max(n, 1), "val_acc": hits["acc"] / max(n, 1)}
        for key in ("acc_audio", "acc_image"):
            out[f"val_{key}"] = hits[key] / max(n, 1) if have[key] else float("nan")
        return out

    # -- one phase

    def _run_phase(self, phase: str, epochs: int, resume_payload: dict[str, Any] | None) -> None:
        tc = self.cfg.train
        freeze_for_phase(self.model, phase)
        # a fusion without parameters (late_prod, late_avg) has nothing to learn in phase II: one pass scores it
        fixed = phase == "phase2_fusion" and not any(p.requires_grad for p in self.model.parameters())
        opt = sched = None
        self.scaler = None
        if fixed:
            log.info(
                "phase II: head %r has no parameters; the fused output combines the phase I heads: scored once, "
                "nothing trained",
                self.arch["head"],
            )
            epochs = min(epochs, self.state.epoch + 1)
        else:
            resume_state = resume_payload["optimizer_state"] if resume_payload is not None else None
            opt, sched, self.scaler = phase_optimizer(self.model, phase, tc, epochs, self.device, resume_state)
        cache_train = cache_val = None
        if phase == "phase2_fusion":
            t = time.monotonic()
            cache_train, cache_val = phase2_caches(
                self.model, self.data, self.val_split, tc, self.device, self.field_noise
            )
            self.cache_seconds = time.monotonic() - t
        if resume_payload is None and cache_train is None and tc.bn_warmup_batches > 0:
            warm_up_batchnorm(self.model, phase, self.windows, tc.seed, self.dist.rank, tc.bn_warmup_batches)
        net = wrap_ddp(PhaseNet(self.model, phase), self.dist)
        for epoch in range(self.state.epoch, epochs):
            t_epoch, misses0 = time.monotonic(), self.data.cache.misses
            tr = self._train_epoch(net, opt, epoch, cache_train) if not fixed else dict(NOT_TRAINED)
            va = self._validate(net, cache_val)
            tr["decoded"] = self.data.cache.misses - misses0  # media decoded this epoch (training + validation)
            if sched is not None:
                sched.step(va["val_acc"]) if tc.lr_schedule == "plateau" else sched.step()
            self.state.epoch = epoch + 1
            row = {
                "epoch": epoch + 1,
                "phase": phase,
                **tr,
                **va,
                "lr_backbone": group_lr(opt, "backbones"),
                "lr_fusion": group_lr(opt, "fusion"),
                "seconds": round(time.monotonic() - t_epoch, 2),
            }
            self._keep_epoch(row, {"phase": phase, "epoch": epoch + 1, **va}, opt, sched)
            self.metrics.log_epoch(row, epochs)
            barrier(self.dist)
            if self.state.bad_epochs >= tc.early_stop_patience:
                log.info(
                    "%s: early stop after epoch %d (no better validation accuracy for %d epochs)",
                    phase,
                    epoch + 1,
                    self.state.bad_epochs,
                )
                break
            if tc.max_minutes and (time.monotonic() - self.t0) / 60 > tc.max_minutes:
                log.warning(
                    "%s: stopping after epoch %d: train.max_minutes=%s reached", phase, epoch + 1, tc.max_minutes
                )
                break
        barrier(self.dist)

    def _keep_epoch(self, row: dict[str, Any], metrics: dict[str, Any], opt: Any, sched: Any) -> None:
        """The epoch judged (best so far?), checkpointed (its best file when it is, last.pt always) and recorded."""
        improved = self.state.judge_epoch(row)
        self.state.history.append(row)
        if self.dist.is_main:
            if improved:
                self.checkpoints.save(BEST_FILE[row["phase"]], self.state, metrics)
            self.checkpoints.save("last.pt", self.state, metrics, opt, sched, self.scaler)
        self.metrics.epoch(row, len(self.state.history))

    # -- the whole run

    def fit(self, resume: bool = False) -> dict[str, Any]:
        tc = self.cfg.train
        if (plan := applied_plan()) is not None:
            log.info("%s", plan.describe())
        phases = (
            [("joint", tc.epochs)]
            if tc.mode == "joint"
            else [
                ("phase1_audio", tc.phase1_audio_epochs),
                ("phase1_image", tc.phase1_image_epochs),
                ("phase2_fusion", tc.epochs),
            ]
        )
        payload = self.checkpoints.read_resume() if resume else None
        resume_phase = None
        if payload is not None:
            self.state = TrainState.from_checkpoint(dict(payload["extra"]["train_state"]))
            self.model.load_state_dict(payload["state_dict"])
            resume_phase = self.state.phase
            self.metrics.rewrite(self.state.history)
            log.info("resuming from %s: phase %s after epoch %d", self.out / "last.pt", resume_phase, self.state.epoch)
        if tc.mode == "two_phase" and tc.phase1_from and "phase1_audio" not in self.state.done_phases:
            self.checkpoints.take_phase1(Path(tc.phase1_from), self.state)
            self.metrics.rewrite(self.state.history)
        for phase, epochs in phases:
            if phase in self.state.done_phases:
                continue
            if phase == resume_phase:
                self._run_phase(phase, epochs, payload)
            else:
                self.state.start_phase(phase)
                self._run_phase(phase, epochs, None)
            self.state.done_phases.append(phase)
            if phase.startswith("phase1"):  # keep the best epoch of this unimodal model (its branch only)
                self.model.load_state_dict(self.checkpoints.best_branch(phase))
        if self._hook is not None:
            self._hook.remove()
        self.metrics.close()
        report = run_report(self)
        if self.dist.is_main:
            write_report(self.out, report)
        return report


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
    fm = format_metric
    text = (
        f"trained ({report['mode']}) in {report['minutes']:.1f} min; best validation accuracy "
        f"{fm(best.get('val_acc'))} at epoch {best.get('epoch')}"
    )
    if "test" in report:
        t = report["test"]
        text += (
            f"; test accuracy {fm(t['both']['accuracy'])} (audio only {fm(t['audio_only']['accuracy'])}, "
            f"image only {fm(t['image_only']['accuracy'])}, n={t['n']})"
        )
    text += f"; wrote {report['checkpoint']}"
    return CommandResult(finite(report), text)


__all__ = ["METRIC_FIELDS", "Phase2Cache", "TrainState", "Trainer", "cmd_train", "epoch_seed", "seed_epoch", "train"]
