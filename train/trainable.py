"""What a run trains: the model built with its starting weights, which parameters each phase trains (freezing), the
optimizer with its two parameter groups, the learning-rate schedule, and the BatchNorm warm-up of a phase.

Optimizer: Adam/AdamW with two parameter groups (`edgeav.train.models.param_groups`): backbones at `lr_backbone`,
fusion and classifier heads at `lr_fusion` (both at `phase1_lr` in phase I when set). Schedule (`train.lr_schedule`):
ReduceLROnPlateau on validation accuracy, or linear warm-up then cosine decay, stepped once per epoch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn as nn

from edgeav.errors import ConfigError
from edgeav.schema import EdgeAVConfig
from edgeav.schema.train import TrainConfig
from edgeav.train.seeds import STREAM_BN_WARMUP, epoch_seed
from edgeav.train.task import PhaseNet
from edgeav.train.window_batches import WindowBatches

log = logging.getLogger(__name__)


def build_run_model(cfg: EdgeAVConfig, labels: list[str], device: torch.device) -> tuple[nn.Module, dict, dict]:
    """(model on `device`, arch, weights record): the architecture the config resolves to, with its starting
    weights (pretrained backbones, `train.init_from`, the audio head from the backbone) and `train.bn_momentum`."""
    from edgeav.train.models import build_model_from_config, resolve_arch
    from edgeav.train.models.transfer import audio_head_from_backbone, init_from_checkpoint
    from edgeav.train.models.weights import weights_record

    tc = cfg.train
    torch.manual_seed(tc.seed)
    model, _, _ = build_model_from_config(cfg, labels)
    arch = resolve_arch(cfg.model, cfg.data)  # as the config says it (checkpoints record this, not the normalized spec)
    weights = weights_record(cfg.model.pretrained, cfg.model.audio_weights_path, cfg.model.image_weights_path)
    if tc.init_from:
        weights["init"] = init_from_checkpoint(model, tc.init_from)
    if cfg.model.audio_head_from_backbone:
        weights["audio_head"] = audio_head_from_backbone(model, labels)
    if tc.mode == "two_phase" and model.audio_backbone is None:
        raise ConfigError(
            f"train.mode=two_phase needs two unimodal backbones; head {arch['head']!r} runs one "
            f"shared encoder: use train.mode=joint"
        )
    if tc.bn_momentum is not None:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.momentum = tc.bn_momentum
    return model.to(device), arch, weights


def freeze_for_phase(model: nn.Module, phase: str) -> None:
    """Only what `phase` trains requires a gradient; phase II's frozen parts go to eval mode (BatchNorm statistics,
    dropout). A backbone's own frozen part stays frozen (birdnet_v24: all but `trainable_blocks`)."""
    from edgeav.train.models import freeze_backbones

    for p in model.parameters():
        p.requires_grad_(phase == "joint")
    if phase == "phase1_audio":
        for mod in (model.audio_backbone, model.aux_audio, model.frontend):
            mod.requires_grad_(True)
    elif phase == "phase1_image":
        for mod in (model.image_backbone, model.aux_image):
            mod.requires_grad_(True)
    elif phase == "phase2_fusion":
        freeze_backbones(model)
        model.aux_audio.eval()
        model.aux_image.eval()
        model.fusion.requires_grad_(True)
    for bb in model.backbones():
        if hasattr(bb, "restrict_trainable"):
            bb.restrict_trainable()


def build_optimizer(model: nn.Module, phase: str, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam/AdamW over the parameters that require a gradient, in the "backbones" and "fusion" groups."""
    from edgeav.train.models import param_groups

    lr_backbone, lr_fusion = tc.lr_backbone, tc.lr_fusion
    if phase.startswith("phase1") and tc.phase1_lr is not None:
        lr_backbone = lr_fusion = tc.phase1_lr
    groups = [g for g in param_groups(model, lr_backbone, lr_fusion, tc.weight_decay) if g["params"]]
    if not groups:
        raise ConfigError(f"phase {phase}: nothing to train")
    cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=tc.lr_fusion)


def lr_schedule(opt: torch.optim.Optimizer, tc: TrainConfig, epochs: int) -> Any:
    """The phase's learning-rate schedule, stepped once per epoch (`train.lr_schedule`)."""
    if tc.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=tc.plateau_factor, patience=tc.plateau_patience
        )
    warm = min(tc.warmup_epochs, max(epochs - 1, 0))

    def factor(epoch: int) -> float:  # epoch: epochs completed; the factor for the next one
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - warm) / max(epochs - warm, 1))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def phase_optimizer(
    model: nn.Module,
    phase: str,
    tc: TrainConfig,
    epochs: int,
    device: torch.device,
    resume_state: dict[str, Any] | None,
) -> tuple[Any, Any, Any]:
    """(optimizer, schedule, AMP grad scaler or None) of a phase that trains, restored from `resume_state` (a
    checkpoint's optimizer_state) when resuming."""
    opt = build_optimizer(model, phase, tc)
    sched = lr_schedule(opt, tc, epochs)
    scaler = torch.amp.GradScaler("cuda") if (tc.amp and device.type == "cuda") else None
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
    return opt, sched, scaler


def group_lr(opt: torch.optim.Optimizer | None, name: str) -> float:
    """The learning rate of the parameter group `name` ("backbones" or "fusion"); 0 without an optimizer, NaN when
    the optimizer has no such group."""
    if opt is None:
        return 0.0
    for g in opt.param_groups:
        if g.get("name") == name:
            return float(g["lr"])
    return float("nan")


@torch.no_grad()
def warm_up_batchnorm(
    model: nn.Module, phase: str, windows: WindowBatches, seed: int, rank: int, max_batches: int
) -> None:
    """Running statistics of the trainable BatchNorm layers re-estimated (cumulative average) on the first
    `max_batches` training batches of the phase, without augmentation and without a weight update."""
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())
    ]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    torch.manual_seed(epoch_seed(seed, 0, rank, STREAM_BN_WARMUP))
    task = PhaseNet(model, phase)
    task.train()
    loader, _ = windows.train_loader(phase, 0)
    n = 0
    for batch in loader:
        if n >= max_batches:
            break
        inputs, _, _ = windows.inputs(batch, phase, torch.Generator(), train=False)
        task(*inputs)
        n += 1
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    log.info("%s: BatchNorm statistics of %d layers estimated on %d batches", phase, len(bns), n)


__all__ = [
    "build_optimizer",
    "build_run_model",
    "freeze_for_phase",
    "group_lr",
    "lr_schedule",
    "phase_optimizer",
    "warm_up_batchnorm",
]
