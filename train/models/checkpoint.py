"""Self-describing checkpoints: the file alone rebuilds its model.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads: tensors, and JSON-like values only
(dicts, lists, str, int, float, bool, None). Pydantic objects are stored as plain dicts.

    format            "edgeav.checkpoint"
    format_version    CHECKPOINT_FORMAT_VERSION (a newer one is refused)
    arch              architecture keys (edgeav.train.models.model.Arch), contract included
    labels            class names in logit order
    contract          the input contract (dict)
    train_config      the training configuration (dict)
    metrics           validation metrics (dict)
    state_dict        model weights
    optimizer_state   optimizer state dict or None (for resuming)
    extra             anything else JSON-like (epoch, seed, ...)
    manifest          the ArtifactManifest as a JSON string (what export copies on)

Writes are atomic: a temporary file in the same folder, then os.replace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import BaseModel
from torch import nn

from edgeav.atomic import atomic_write
from edgeav.contract import InputContract
from edgeav.errors import ModelError, UnknownNameError
from edgeav.manifest import ArtifactManifest
from edgeav.train.models.model import AVClassifier, build_model, parse_arch

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "edgeav.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself, besides the weights."""

    path: str
    format_version: int
    manifest: ArtifactManifest
    train_config: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def contract(self) -> InputContract:
        return self.manifest.contract

    @property
    def arch(self) -> dict[str, Any]:
        return dict(self.manifest.arch)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.metrics)


def _plain(value: Any, what: str) -> Any:
    """JSON-like copy of `value` (pydantic models dumped); anything else is an error, not a pickle."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ModelError(f"checkpoint: {what} must be JSON-like (dicts, lists, str, numbers, bool, None): {e}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-like")


def save_checkpoint(path: str | Path, model: nn.Module, labels: Sequence[str], arch: dict[str, Any] | BaseModel,
                    contract: InputContract | dict[str, Any], train_config: dict[str, Any] | BaseModel,
                    metrics: dict[str, Any], optimizer_state: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a self-describing checkpoint atomically; returns the path written."""
    path = Path(path)
    contract_obj = contract if isinstance(contract, InputContract) else InputContract.model_validate(contract)
    arch_d = _plain(arch, "arch")
    arch_d["contract"] = contract_obj.model_dump(mode="json")  # one contract, the explicit one
    parse_arch(arch_d)  # refuse to write what cannot be rebuilt
    labels_l = [str(x) for x in labels]
    metrics_d = _plain(metrics, "metrics")
    extra_d = _plain(extra or {}, "extra")
    manifest = ArtifactManifest(kind="checkpoint", labels=labels_l, contract=contract_obj, arch=arch_d,
                                precision="fp32", metrics=metrics_d, extra=extra_d)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": arch_d,
        "labels": labels_l,
        "contract": contract_obj.model_dump(mode="json"),
        "train_config": _plain(train_config, "train_config"),
        "metrics": metrics_d,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer_state,
        "extra": extra_d,
        "manifest": manifest.to_json(),
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    log.info("checkpoint written: %s", path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format and version (no model built)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{p}: not a loadable edgeav checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{p}: not an edgeav checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelError(f"{p}: bad checkpoint format_version {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ModelError(f"{p}: checkpoint format version {version} is newer than this edgeav reads "
                         f"({CHECKPOINT_FORMAT_VERSION}); upgrade edgeav")
    for key in ("arch", "labels", "contract", "state_dict"):
        if key not in payload:
            raise ModelError(f"{p}: checkpoint lacks {key!r}")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AVClassifier, CheckpointInfo]:
    """Rebuild the model from the file alone; returns (model in eval mode, info)."""
    payload = read_checkpoint(path)
    p = Path(path)
    try:
        contract = InputContract.model_validate(payload["contract"])
    except ValueError as e:
        raise ModelError(f"{p}: bad input contract: {e}") from None
    try:
        model = build_model(payload["arch"], payload["labels"], contract=contract, pretrained=False)
    except (ModelError, UnknownNameError) as e:  # keep the class: an unknown name stays exit 2
        raise type(e)(f"{p}: cannot rebuild the model: {e}") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ModelError(f"{p}: weights do not fit the architecture: {str(e).splitlines()[0]}") from None
    model.to(map_location).eval()
    manifest = ArtifactManifest(kind="checkpoint", labels=list(payload["labels"]), contract=contract,
                                arch=dict(payload["arch"]), precision="fp32", metrics=dict(payload.get("metrics") or {}),
                                extra=dict(payload.get("extra") or {}))
    info = CheckpointInfo(path=str(p), format_version=int(payload["format_version"]), manifest=manifest,
                          train_config=dict(payload.get("train_config") or {}),
                          optimizer_state=payload.get("optimizer_state"), extra=dict(payload.get("extra") or {}))
    return model, info
