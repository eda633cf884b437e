"""Parameters and FLOPs of a model, per branch (audio, image, fusion).

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one window (batch 1) of the model's contract.
Its convention, used everywhere here: FLOPs = 2 x multiply-accumulates (a MAC is two FLOPs); only matmuls and
convolutions are counted (elementwise ops, norms and activations are not).

Branches: audio = the log-mel front end + audio backbone; image = the image normalization + image backbone (the
shared encoder for shared_2d, which also sees the spectrogram half); fusion = fusion head + auxiliary classifiers
+ anything else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeav.train.models.model import AVClassifier, example_inputs

FLOP_CONVENTION = "FLOPs = 2 x MACs (torch.utils.flop_counter.FlopCounterMode; matmul/conv only)"

_AUDIO_MODULES = ("frontend.audio", "audio_backbone", "spec_norm")
_IMAGE_MODULES = ("frontend.image", "image_backbone")


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


def model_stats(model: AVClassifier) -> dict[str, Any]:
    """{"params": {audio, image, fusion, total}, "flops": {audio, image, fusion, total}, "flops_convention": ...}."""
    audio_mods = [model.audio_backbone, getattr(model, "spec_norm", None)]
    image_mods = [model.image_backbone]
    total_params = _n_params([model])
    pa, pi = _n_params(audio_mods), _n_params(image_mods)
    params = {"audio": pa, "image": pi, "fusion": total_params - pa - pi, "total": total_params}

    was_training = model.training
    model.eval()
    inputs = example_inputs(model.contract, batch=1)
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def flops_of(prefixes: tuple[str, ...]) -> int:
        return int(sum(sum(counts.get(f"{root}.{p}", {}).values()) for p in prefixes))

    total = int(sum(counts.get("Global", {}).values()))
    fa, fi = flops_of(_AUDIO_MODULES), flops_of(_IMAGE_MODULES)
    flops = {"audio": fa, "image": fi, "fusion": total - fa - fi, "total": total}
    return {"params": params, "flops": flops, "flops_convention": FLOP_CONVENTION}
