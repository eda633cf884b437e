"""Parameters and FLOPs of a model, per branch (audio, image, fusion).

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one window (batch 1) of the model's contract.
Its convention, used everywhere here: FLOPs = 2 x multiply-accumulates (a MAC is two FLOPs); only matmuls and
convolutions are counted (elementwise ops, norms, pooling, resizing and activations are not).

The counter attributes each op to the modules on the call stack (module forward hooks), so it sees a branch only
because the classifier calls its submodules themselves (`self.audio_backbone(x)`, not a method of it).

Branches:
- audio  = the log-mel front end (`frontend.audio`) + audio backbone (+ `spec_norm` for shared_2d);
- image  = the image normalization (`frontend.image`) + image backbone (for shared_2d: the shared encoder, which
  runs over the whole [spectrogram | image] canvas, so it carries both halves' FLOPs);
- fusion = fusion head + auxiliary classifiers + anything the classifier computes itself (total - audio - image).

`detail` breaks them down by submodule (front end apart from backbone), each figure in the same convention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeav.train.models.model import AVClassifier, example_inputs

FLOP_CONVENTION = "FLOPs = 2 x MACs (torch.utils.flop_counter.FlopCounterMode; matmul/conv only)"

# submodule names of AVClassifier / SharedAVClassifier per branch
_BRANCH_MODULES: dict[str, tuple[str, ...]] = {
    "audio": ("frontend.audio", "audio_backbone", "spec_norm"),
    "image": ("frontend.image", "image_backbone"),
    "fusion": ("fusion", "aux_audio", "aux_image"),
}


def _n_params(modules: list[nn.Module | None]) -> int:
    seen: set[int] = set()
    n = 0
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n


def count_flops(model: AVClassifier, batch: int = 1) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per direct submodule path such as "frontend.audio" or "image_backbone") for one forward
    of `batch` windows of the model's contract, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    inputs = example_inputs(model.contract, batch=batch)
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_module: dict[str, int] = {}
    for paths in _BRANCH_MODULES.values():
        for path in paths:
            per_module[path] = int(sum(counts.get(f"{root}.{path}", {}).values()))
    return int(sum(counts.get("Global", {}).values())), per_module


def model_stats(model: AVClassifier) -> dict[str, Any]:
    """{"params": {audio, image, fusion, total}, "flops": {audio, image, fusion, total},
    "flops_detail": {submodule path: FLOPs}, "flops_convention": ...}."""
    audio_mods = [model.audio_backbone, getattr(model, "spec_norm", None)]
    image_mods = [model.image_backbone]
    total_params = _n_params([model])
    pa, pi = _n_params(audio_mods), _n_params(image_mods)
    params = {"audio": pa, "image": pi, "fusion": total_params - pa - pi, "total": total_params}

    total, per_module = count_flops(model)
    fa = sum(per_module[p] for p in _BRANCH_MODULES["audio"])
    fi = sum(per_module[p] for p in _BRANCH_MODULES["image"])
    flops = {"audio": fa, "image": fi, "fusion": total - fa - fi, "total": total}
    return {"params": params, "flops": flops, "flops_detail": per_module, "flops_convention": FLOP_CONVENTION}
