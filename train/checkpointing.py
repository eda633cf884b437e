"""The loop's state and its checkpoints: best.pt (best_audio.pt / best_image.pt in phase I), last.pt for an exact
resume (weights, optimizer, scheduler, scaler and `TrainState`), and the best unimodal branches phase I keeps.

Exact resume: every epoch is a pure function of (seed, epoch, rank) and the state at its start (`edgeav.train.seeds`);
killed after epoch k and resumed with `--resume`, a run ends with the same weights as the run that was never stopped.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgeav.errors import ConfigError, ModelError
from edgeav.schema import EdgeAVConfig
from edgeav.train.distributed import DistInfo, barrier
from edgeav.train.task import BEST_FILE, PHASES_TWO

log = logging.getLogger(__name__)


def finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively (JSON and checkpoint metrics stay valid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


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

    def start_phase(self, phase: str) -> None:
        self.phase, self.epoch = phase, 0
        self.best_acc, self.best_loss, self.best_epoch, self.bad_epochs = -1.0, math.inf, -1, 0

    def judge_epoch(self, row: dict[str, Any]) -> bool:
        """Whether the epoch's validation (row) is the phase's best so far: a higher accuracy, ties broken by a
        lower loss; counts the epochs without one (early stop)."""
        improved = row["val_acc"] > self.best_acc or (
            row["val_acc"] == self.best_acc and row["val_loss"] < self.best_loss
        )
        if improved:
            self.best_acc, self.best_loss = row["val_acc"], row["val_loss"]
            self.best_epoch, self.bad_epochs = row["epoch"], 0
            self.phase_best[row["phase"]] = {
                k: row[k] for k in ("epoch", "val_acc", "val_loss", "val_acc_audio", "val_acc_image")
            }
        else:
            self.bad_epochs += 1
        return improved

    def to_checkpoint(self) -> dict[str, Any]:
        st = asdict(self)
        st["history_json"] = json.dumps(st.pop("history"))
        st["phase_best_json"] = json.dumps(st.pop("phase_best"))
        st["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return st

    @classmethod
    def from_checkpoint(cls, st: dict[str, Any]) -> TrainState:
        return cls(
            phase=st["phase"],
            epoch=int(st["epoch"]),
            best_acc=float(st["best_acc"]),
            best_loss=math.inf if st["best_loss"] is None else float(st["best_loss"]),
            best_epoch=int(st["best_epoch"]),
            bad_epochs=int(st["bad_epochs"]),
            done_phases=list(st["done_phases"]),
            history=json.loads(st["history_json"]),
            phase_best=json.loads(st["phase_best_json"]),
        )


class RunCheckpoints:
    """The checkpoints of one run in `out`: what they carry beside the weights (labels, arch, contract, config,
    data, starting weights) is fixed for the run."""

    def __init__(
        self,
        out: Path,
        model: nn.Module,
        cfg: EdgeAVConfig,
        labels: list[str],
        arch: dict[str, Any],
        data_path: str,
        weights: dict[str, Any],
        dist_info: DistInfo,
    ) -> None:
        self.out, self.model, self.cfg, self.labels, self.arch = out, model, cfg, labels, arch
        self.data_path, self.weights, self.dist = data_path, weights, dist_info

    def save(
        self,
        name: str,
        state: TrainState,
        metrics: dict[str, Any],
        opt: Any = None,
        sched: Any = None,
        scaler: Any = None,
    ) -> Path:
        """OUT/name with the model's weights and the loop's state; with `opt`, also optimizer, schedule and scaler
        (last.pt, what --resume continues from)."""
        from edgeav.train.models import save_checkpoint

        opt_state = None
        if opt is not None:
            opt_state = {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            }
        return save_checkpoint(
            self.out / name,
            self.model,
            labels=self.labels,
            arch=self.arch,
            contract=self.model.contract,
            train_config=self.cfg.model_dump(mode="json"),
            metrics=finite(metrics),
            optimizer_state=opt_state,
            extra={
                "train_state": state.to_checkpoint(),
                "phase": state.phase,
                "seed": self.cfg.train.seed,
                "data": self.data_path,
                "weights": self.weights,
            },
        )

    def read_resume(self) -> dict[str, Any] | None:
        """last.pt's payload, or None (logged) when the run has none yet."""
        last = self.out / "last.pt"
        if not last.is_file():
            log.warning("--resume: %s does not exist; starting from scratch", last)
            return None
        from edgeav.train.models import read_checkpoint

        payload = read_checkpoint(last)
        st = dict(payload["extra"]["train_state"])
        mode_phases = ("joint",) if self.cfg.train.mode == "joint" else PHASES_TWO
        if st["phase"] not in mode_phases:
            raise ConfigError(
                f"--resume: {last} was written in phase {st['phase']!r}, which train.mode="
                f"{self.cfg.train.mode} does not have"
            )
        return payload

    def best_branch(self, phase: str, path: Path | None = None) -> dict[str, torch.Tensor]:
        """The current state dict with the trained branch (backbone + auxiliary head) of `phase` replaced by its
        best epoch's weights."""
        from edgeav.train.models import read_checkpoint

        barrier(self.dist)
        path = path if path is not None else self.out / BEST_FILE[phase]
        current = self.model.state_dict()
        if not path.is_file():
            return current
        best = read_checkpoint(path)["state_dict"]
        prefixes = (
            ("audio_backbone.", "aux_audio.", "frontend.")
            if phase == "phase1_audio"
            else ("image_backbone.", "aux_image.")
        )
        return {k: (best[k] if k.startswith(prefixes) else v) for k, v in current.items()}

    def take_phase1(self, src: Path, state: TrainState) -> None:
        """Phase I from an earlier run: both unimodal branches from src/best_audio.pt and src/best_image.pt, with
        their best metrics and history rows."""
        from edgeav.train.models import read_checkpoint

        for phase in ("phase1_audio", "phase1_image"):
            path = src / BEST_FILE[phase]
            payload = read_checkpoint(path)
            keys = {k: payload["arch"].get(k) for k in ("audio_backbone", "image_backbone")}
            mine = {k: self.arch.get(k) for k in keys}
            if keys != mine or payload["labels"] != self.labels:
                raise ModelError(
                    f"train.phase1_from: {path} has {keys} and labels {payload['labels']}; this run "
                    f"needs {mine} and {self.labels}"
                )
            self.model.load_state_dict(self.best_branch(phase, path))
            state.done_phases.append(phase)
            best = json.loads(payload["extra"]["train_state"]["phase_best_json"]).get(phase)
            if best:
                state.phase_best[phase] = best
            state.history += [
                r for r in json.loads(payload["extra"]["train_state"]["history_json"]) if r["phase"] == phase
            ]
        log.info("phase I taken from %s (best_audio.pt, best_image.pt)", src)


__all__ = ["RunCheckpoints", "TrainState", "finite"]
