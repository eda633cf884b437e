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
    file_weights      (format 2) {branch: {backbone, keys, sha256, tensors, bytes, source, licence}}: tensors stored
                      by reference, absent from state_dict

Third-party weights by reference (format 2): a backbone whose build reads its weights from a file made on this
machine (`birdnet_v24`: the converted BirdNET V2.4, which it cannot be built without) names the state-dict keys
that are copies of that file (`file_state_keys()`: BirdNET's frozen parameters and constants, 59 MiB). They are
left out of `state_dict` and recorded by key list and sha256 over their bytes; reading the checkpoint rebuilds
the backbone from the file and puts them back, and a different file (another conversion) is a one-line
`ModelError`, never a silent mismatch. Trained parts (`trainable_blocks`) stay in `state_dict`. A birdnet_v24
checkpoint is ~13 MiB instead of ~73 MiB; the licence of the referenced weights is in the record and the manifest.

Writes are atomic: a temporary file in the same folder, then os.replace.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
CHECKPOINT_FORMAT_VERSION = 2  # 2: optional `file_weights` (tensors stored by reference); 1 is read as well
BRANCH_KWARGS = {"audio_backbone": "audio_kwargs", "image_backbone": "image_kwargs"}


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
        raise ModelError(
            f"checkpoint: {what} must be JSON-like (dicts, lists, str, numbers, bool, None): {e}"
        ) from None


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


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    labels: Sequence[str],
    arch: dict[str, Any] | BaseModel,
    contract: InputContract | dict[str, Any],
    train_config: dict[str, Any] | BaseModel,
    metrics: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically; returns the path written."""
    path = Path(path)
    contract_obj = contract if isinstance(contract, InputContract) else InputContract.model_validate(contract)
    arch_d = _plain(arch, "arch")
    arch_d["contract"] = contract_obj.model_dump(mode="json")  # one contract, the explicit one
    parse_arch(arch_d)  # refuse to write what cannot be rebuilt
    labels_l = [str(x) for x in labels]
    metrics_d = _plain(metrics, "metrics")
    extra_d = _plain(extra or {}, "extra")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    refs = _by_reference(model, arch_d, state)
    summary = {b: {k: v for k, v in r.items() if k != "keys"} for b, r in refs.items()}
    man_extra = {**extra_d, **({"file_weights": summary} if refs else {})}
    manifest = ArtifactManifest(
        kind="checkpoint",
        labels=labels_l,
        contract=contract_obj,
        arch=arch_d,
        precision="fp32",
        metrics=metrics_d,
        extra=man_extra,
    )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": arch_d,
        "labels": labels_l,
        "contract": contract_obj.model_dump(mode="json"),
        "train_config": _plain(train_config, "train_config"),
        "metrics": metrics_d,
        "state_dict": state,
        "optimizer_state": optimizer_state,
        "extra": extra_d,
        "manifest": manifest.to_json(),
    }
    if refs:
        payload["file_weights"] = refs
    atomic_write(path, lambda f: torch.save(payload, f))
    log.info("checkpoint written: %s", path)
    return path


def _tensors_sha256(state: dict[str, torch.Tensor], keys: Sequence[str]) -> tuple[str, int]:
    """sha256 over the keys, dtypes, shapes and bytes of `state[k]` for k in `keys` (in that order); total bytes."""
    h, n = hashlib.sha256(), 0
    for k in keys:
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def _by_reference(model: nn.Module, arch: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Take out of `state` (in place) the tensors each backbone rebuilds from a file (`file_state_keys()`); returns
    the `file_weights` record."""
    from edgeav.train.models.backbones import BACKBONES

    refs: dict[str, Any] = {}
    for branch in BRANCH_KWARGS:
        keys_of = getattr(getattr(model, branch, None), "file_state_keys", None)
        if keys_of is None or not arch.get(branch):
            continue
        keys = [f"{branch}.{k}" for k in keys_of()]
        sha, n_bytes = _tensors_sha256(state, keys)
        meta = BACKBONES.meta(arch[branch])
        refs[branch] = {
            "backbone": arch[branch],
            "keys": keys,
            "sha256": sha,
            "tensors": len(keys),
            "bytes": n_bytes,
            "source": str(meta.get("source", "")),
            "licence": str(meta.get("licence", "")),
        }
        for k in keys:
            del state[k]
        log.info(
            "checkpoint: %s's %d file tensors (%.1f MiB, %s) stored by reference (sha256 %s...)",
            arch[branch],
            len(keys),
            n_bytes / 2**20,
            meta.get("licence", "no licence stated"),
            sha[:12],
        )
    return refs


def _fill_by_reference(payload: dict[str, Any], p: Path, model: nn.Module | None = None) -> None:
    """Put the tensors stored by reference back into payload["state_dict"], from `model` (already built from the
    same arch) or from the backbone rebuilt here; a different file is a ModelError."""
    from edgeav.train.models.backbones import BACKBONES

    for branch, ref in (payload.get("file_weights") or {}).items():
        if branch not in BRANCH_KWARGS:
            raise ModelError(f"{p}: file_weights for unknown branch {branch!r}")
        if model is not None:
            source = {f"{branch}.{k}": v for k, v in getattr(model, branch).state_dict().items()}
        else:
            try:
                bb = BACKBONES.create(ref["backbone"], **dict(payload["arch"].get(BRANCH_KWARGS[branch]) or {}))
            except (ModelError, UnknownNameError) as e:
                raise type(e)(
                    f"{p}: cannot rebuild {ref['backbone']} for its weights stored by reference: {e}"
                ) from None
            source = {f"{branch}.{k}": v for k, v in bb.state_dict().items()}
        missing = [k for k in ref["keys"] if k not in source]
        if missing:
            raise ModelError(
                f"{p}: {ref['backbone']} built here lacks {len(missing)} tensor(s) the checkpoint refers "
                f"to, e.g. {missing[0]!r}"
            )
        sha, _ = _tensors_sha256(source, ref["keys"])
        if sha != ref["sha256"]:
            raise ModelError(
                f"{p}: {ref['backbone']}'s weights on this machine (sha256 {sha[:12]}...) are not the ones "
                f"the checkpoint was trained with ({ref['sha256'][:12]}...): convert the same model "
                f"({ref['source']})"
            )
        payload["state_dict"].update({k: source[k].detach().cpu().clone() for k in ref["keys"]})


def read_checkpoint(path: str | Path, *, fill_references: bool = True) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format and version. Tensors stored by reference (`file_weights`) are
    put back into state_dict (the backbone that holds them is built for that, and only that), unless
    `fill_references` is False."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"{p}: not a loadable edgeav checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{p}: not an edgeav checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelError(f"{p}: bad checkpoint format_version {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ModelError(
            f"{p}: checkpoint format version {version} is newer than this edgeav reads "
            f"({CHECKPOINT_FORMAT_VERSION}); upgrade edgeav"
        )
    for key in ("arch", "labels", "contract", "state_dict"):
        if key not in payload:
            raise ModelError(f"{p}: checkpoint lacks {key!r}")
    if fill_references:
        _fill_by_reference(payload, p)
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AVClassifier, CheckpointInfo]:
    """Rebuild the model from the file alone; returns (model in eval mode, info)."""
    payload = read_checkpoint(path, fill_references=False)
    p = Path(path)
    try:
        contract = InputContract.model_validate(payload["contract"])
    except ValueError as e:
        raise ModelError(f"{p}: bad input contract: {e}") from None
    try:
        model = build_model(payload["arch"], payload["labels"], contract=contract, pretrained=False)
    except (ModelError, UnknownNameError) as e:  # keep the class: an unknown name stays exit 2
        raise type(e)(f"{p}: cannot rebuild the model: {e}") from None
    _fill_by_reference(payload, p, model)  # from the backbone just built: the same file, no second build
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ModelError(f"{p}: weights do not fit the architecture: {str(e).splitlines()[0]}") from None
    model.to(map_location).eval()
    manifest = ArtifactManifest(
        kind="checkpoint",
        labels=list(payload["labels"]),
        contract=contract,
        arch=dict(payload["arch"]),
        precision="fp32",
        metrics=dict(payload.get("metrics") or {}),
        extra=dict(payload.get("extra") or {}),
    )
    info = CheckpointInfo(
        path=str(p),
        format_version=int(payload["format_version"]),
        manifest=manifest,
        train_config=dict(payload.get("train_config") or {}),
        optimizer_state=payload.get("optimizer_state"),
        extra=dict(payload.get("extra") or {}),
    )
    return model, info
