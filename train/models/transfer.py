"""`edgeav train --init CHECKPOINT` (`train.init_from`): start from an edgeav checkpoint trained on other classes.

The base model's backbones and fusion are loaded; the classifier layers, whose shapes follow the number of
classes, are rebuilt (random init) for the new labels. Which tensors those are is measured, not listed by name: a
second model of the same architecture with one class more is built, and every tensor whose shape differs between
the two is a classifier tensor (the auxiliary heads' last Linear, and the fusion head's output layer, whatever
the head). With the very same labels nothing is rebuilt (a plain warm start).

The architecture must match: the backbones, the head and their arguments (`ARCH_KEYS`), then every tensor's name
and shape. The first difference is a one-line `ModelError` naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from edgeav.errors import ModelError
from edgeav.train.models.checkpoint import read_checkpoint
from edgeav.train.models.model import AVClassifier, build_model, parse_arch
from edgeav.train.models.weights import file_sha256

log = logging.getLogger(__name__)

ARCH_KEYS = ("audio_backbone", "image_backbone", "head", "audio_kwargs", "image_kwargs", "head_kwargs")


def class_dependent_keys(model: AVClassifier) -> list[str]:
    """State-dict keys whose shape follows the number of classes (the classifier layers), in the model's order."""
    with torch.random.fork_rng():  # the probe must not move the run's random stream
        probe = build_model(model.arch, len(model.labels) + 1, contract=model.contract, pretrained=False)
    theirs = probe.state_dict()
    return [k for k, v in model.state_dict().items() if tuple(theirs[k].shape) != tuple(v.shape)]


def init_from_checkpoint(model: AVClassifier, path: str | Path) -> dict[str, Any]:
    """Load `path`'s weights into `model` except its classifier layers; returns what was done (for reports)."""
    p = Path(path).expanduser()
    payload = read_checkpoint(p)
    where = f"--init {p}"
    base = parse_arch(payload["arch"]).model_dump(mode="json")
    mine = parse_arch(model.arch).model_dump(mode="json")
    for key in ARCH_KEYS:
        if base.get(key) != mine.get(key):
            raise ModelError(
                f"{where}: the architecture differs: {key} is {base.get(key)!r} there, {mine.get(key)!r} in this run"
            )
    same_labels = list(payload["labels"]) == list(model.labels)
    new = [] if same_labels else class_dependent_keys(model)
    state, theirs = model.state_dict(), payload["state_dict"]
    for k, v in state.items():
        if k in new:
            continue
        if k not in theirs:
            raise ModelError(f"{where}: the architecture differs: key {k!r} is not in the checkpoint")
        if tuple(theirs[k].shape) != tuple(v.shape):
            raise ModelError(
                f"{where}: the architecture differs: key {k!r} has shape {tuple(theirs[k].shape)} "
                f"there, {tuple(v.shape)} in this run"
            )
    extra = next((k for k in theirs if k not in state), None)
    if extra is not None:
        raise ModelError(f"{where}: the architecture differs: key {extra!r} of the checkpoint is not in this model")
    loaded = {k: theirs[k] for k in state if k not in new}
    missing, _ = model.load_state_dict(loaded, strict=False)
    assert sorted(missing) == sorted(new), (missing, new)  # nothing else left at its random init
    new_modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in new))
    loaded_parts = list(dict.fromkeys(k.split(".", 1)[0] for k in loaded))
    sha = file_sha256(p)
    record = {
        "path": str(p.resolve()),
        "sha256": sha,
        "labels_there": len(payload["labels"]),
        "labels_here": len(model.labels),
        "loaded_tensors": len(loaded),
        "loaded_modules": loaded_parts,
        "new_tensors": len(new),
        "new_modules": new_modules,
    }
    log.info(
        "%s (sha256 %s): loaded %d tensors (%s); new for %d labels (%d there): %d tensors in %d modules: %s",
        where,
        sha[:12],
        len(loaded),
        ", ".join(loaded_parts),
        len(model.labels),
        len(payload["labels"]),
        len(new),
        len(new_modules),
        ", ".join(new_modules) if new_modules else "none (same labels)",
    )
    return record


def audio_head_from_backbone(model: AVClassifier, labels: list[str]) -> dict[str, Any]:
    """`model.audio_head_from_backbone`: the audio-only head (`aux_audio`'s Linear) becomes the audio backbone's own
    classifier restricted to `labels` (the backbone's `classifier_for(labels)`). Returns what the run records."""
    backbone = model.audio_backbone
    fn = getattr(backbone, "classifier_for", None)
    if fn is None:
        raise ModelError(
            f"model.audio_head_from_backbone: audio backbone {type(backbone).__name__} has no classifier "
            f"of its own (birdnet_v24 has)"
        )
    weight, bias = fn(labels)  # (C, D), (C,)
    linear = model.aux_audio[-1]
    if tuple(linear.weight.shape) != tuple(weight.shape):
        raise ModelError(
            f"model.audio_head_from_backbone: head {tuple(linear.weight.shape)} vs the backbone's "
            f"classifier {tuple(weight.shape)}"
        )
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    log.info("audio head: the backbone's own classifier for %d classes (%s)", len(labels), type(backbone).__name__)
    return {"from": type(backbone).__name__, "classes": len(labels)}
