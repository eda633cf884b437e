"""Where a model's starting weights come from: the library, a local folder or file, or random init.

`model.pretrained` sets both branches (audio and image backbone):

- `true`: the library's own weights (torchvision / transformers) for every backbone that has them; needs the
  network or the library's default cache. Backbones trained from scratch (`audio_cnn`) start random (logged).
- `false`: random init.
- a folder: a torch hub cache copied from a workstation (`~/.cache/torch`, its `hub/` or `hub/checkpoints/`):
  the same library weights as `true`, read from that folder, never downloaded; a file that is not there is an
  error naming it.
- a file: a state dict of the model's backbones, keys `audio_backbone.*` and `image_backbone.*` (what an edgeav
  model's `state_dict()` holds; an edgeav checkpoint is read too, and only its backbones are taken). Every backbone
  of the model must be in it.

`model.audio_weights_path` / `model.image_weights_path`: a state dict of that one backbone, either the backbone's
own (`torch.save(model.image_backbone.state_dict(), path)`; an edgeav checkpoint gives its `image_backbone.*` /
`audio_backbone.*` part, so a base model's picture branch moves under another audio branch) or its library model's
(`torch.save(torchvision.models.resnet18().state_dict(), path)`). Rule when both are given: the per-branch path
wins for its branch, `pretrained` applies to the other branch (logged).

A missing file, or one that does not fit, is a one-line `ModelError` naming the file and the first mismatched key
(with both shapes when a shape differs). Weights are always loaded strictly: no key is skipped quietly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeav.errors import ModelError

log = logging.getLogger(__name__)

BRANCH_PREFIX = {"audio": "audio_backbone.", "image": "image_backbone."}
LIBRARY_SOURCES = ("torchvision", "transformers")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from `path` (a plain one, or the `state_dict` entry of a checkpoint dict); one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{what}: weights file {p} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled objects
        raise ModelError(
            f"{what}: cannot read weights from {p}: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{what}: {p} is not a state dict (a dict of tensors)")
    return state


def first_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str | None:
    """The first key (in the model's order) that a state dict lacks or gives in another shape, else the first key
    the model does not have; None when `got` fits `expected` exactly."""
    for k, v in expected.items():
        if k not in got:
            return f"key {k!r} is missing"
        if tuple(got[k].shape) != tuple(v.shape):
            return f"key {k!r} has shape {tuple(got[k].shape)}, the model needs {tuple(v.shape)}"
    for k in got:
        if k not in expected:
            return f"unexpected key {k!r}"
    return None


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """`module.load_state_dict(state, strict=True)` with a one-line error naming the file and the first mismatch."""
    msg = first_mismatch(module.state_dict(), state)
    if msg is not None:
        raise ModelError(f"{what}: weights in {path} do not fit: {msg}")
    module.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class BranchWeights:
    """What one backbone starts from (at most one of these is set; none = random init)."""

    library: bool = False  # the library's weights (network or default cache)
    hub_dir: Path | None = None  # ... read from this torch hub folder only
    file: Path | None = None  # a state dict of this backbone (its own form or its library model's)
    state: dict[str, torch.Tensor] | None = None  # this branch's part of a whole-model file
    state_file: Path | None = None  # where `state` came from

    def describe(self) -> str:
        if self.file is not None:
            return f"state dict {self.file}"
        if self.state is not None:
            return f"backbone weights of {self.state_file}"
        if self.hub_dir is not None:
            return f"library weights from the folder {self.hub_dir}"
        return "library weights" if self.library else "random init"


def hub_dir_of(folder: Path) -> Path:
    """The torch hub dir (the one holding checkpoints/) of a copied cache: TORCH_HOME, its hub/, or hub/checkpoints/."""
    for cand in (folder / "hub", folder, folder.parent if folder.name == "checkpoints" else None):
        if cand is not None and (cand / "checkpoints").is_dir():
            return cand
    raise ModelError(
        f"model.pretrained: {folder} is not a torch hub cache (no checkpoints/ folder in it, its hub/, "
        f"or itself): copy ~/.cache/torch from a machine that has the weights"
    )


def plan_weights(
    pretrained: bool | str | Path,
    branches: list[str],
    audio_weights_path: str | Path | None = None,
    image_weights_path: str | Path | None = None,
) -> dict[str, BranchWeights]:
    """What each branch ("audio", "image") starts from, by the rule in the module docstring."""
    per_branch = {"audio": audio_weights_path, "image": image_weights_path}
    common = BranchWeights()
    if isinstance(pretrained, (str, Path)):
        p = Path(pretrained).expanduser()
        if p.is_dir():
            common = BranchWeights(hub_dir=hub_dir_of(p))
        elif not p.is_file():
            raise ModelError(
                f"model.pretrained: {p} not found (give true, false, a torch hub cache folder or a state dict file)"
            )
    elif pretrained:
        common = BranchWeights(library=True)
    whole: dict[str, torch.Tensor] | None = None
    plan: dict[str, BranchWeights] = {}
    for b in branches:
        if per_branch.get(b) is not None:
            plan[b] = BranchWeights(file=Path(per_branch[b]).expanduser())
            if pretrained is not False:
                log.info(
                    "%s backbone: weights from model.%s_weights_path %s (model.pretrained does not apply to it)",
                    b,
                    b,
                    plan[b].file,
                )
            continue
        if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().is_file():
            p = Path(pretrained).expanduser()
            whole = whole if whole is not None else read_state_dict(p, "model.pretrained")
            prefix = BRANCH_PREFIX[b]
            part = {k[len(prefix) :]: v for k, v in whole.items() if k.startswith(prefix)}
            if not part:
                raise ModelError(
                    f"model.pretrained: {p} has no {prefix}* keys (the {b} backbone); it needs those of "
                    f"every backbone, or give model.{b}_weights_path for that branch"
                )
            plan[b] = BranchWeights(state=part, state_file=p)
        else:
            plan[b] = common
    return plan


@contextlib.contextmanager
def offline_hub(hub_dir: Path) -> Iterator[None]:
    """torch hub reads `hub_dir` and downloads nothing: a file not there is a `ModelError` naming it."""
    old_dir, old_download = torch.hub.get_dir(), torch.hub.download_url_to_file

    def refuse(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        name = Path(url).name
        raise ModelError(
            f"{name} is not in {hub_dir / 'checkpoints'} (model.pretrained is a local folder: nothing is "
            f"downloaded); copy it from ~/.cache/torch/hub/checkpoints/ of a machine that has it"
        )

    torch.hub.set_dir(str(hub_dir))
    torch.hub.download_url_to_file = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.hub.set_dir(old_dir)
        torch.hub.download_url_to_file = old_download  # type: ignore[assignment]


def create_branch(name: str, branch: str, plan: BranchWeights, **kwargs: Any) -> nn.Module:
    """The backbone `name` for `branch` with the weights `plan` gives; one-line `ModelError`s."""
    from edgeav.train.models.backbones import BACKBONES, create_backbone

    source = str(BACKBONES.meta(name).get("source", ""))
    what = f"{branch} backbone {name!r}"
    if plan.library or plan.hub_dir is not None:
        if branch == "audio" and not source.startswith(LIBRARY_SOURCES):
            log.info("%s: no library weights (%s); it starts from random init", what, source)
            return create_backbone(name, pretrained=False, **kwargs)
        if plan.hub_dir is None:
            return create_backbone(name, pretrained=True, **kwargs)
        if source.startswith("transformers"):
            raise ModelError(
                f"{what}: model.pretrained is a folder, read as a torch hub cache (torchvision weights); "
                f"this backbone's weights come from transformers: give model.{branch}_weights_path "
                f"(a state dict of it)"
            )
        with offline_hub(plan.hub_dir):
            bb = create_backbone(name, pretrained=True, **kwargs)
        log.info("%s: %s", what, plan.describe())
        return bb
    bb = create_backbone(name, pretrained=False, **kwargs)
    if plan.state is not None:
        load_strict(bb, plan.state, plan.state_file or "", f"model.pretrained, {what}")
        log.info("%s: %s", what, plan.describe())
        return bb
    if plan.file is None:
        return bb
    state = read_state_dict(plan.file, f"model.{branch}_weights_path")
    prefix = BRANCH_PREFIX[branch]
    if any(k.startswith(prefix) for k in state):  # an edgeav model's state or checkpoint: this branch's backbone
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = first_mismatch(bb.state_dict(), state)
    if own is None:
        bb.load_state_dict(state, strict=True)
    elif source.startswith(LIBRARY_SOURCES):
        try:  # the library model's own state dict (the factory loads it before cutting the model)
            bb = create_backbone(name, pretrained=False, weights_path=plan.file, **kwargs)
        except ModelError as e:
            raise ModelError(
                f"model.{branch}_weights_path: weights in {plan.file} do not fit {what}, as its own "
                f"state dict ({own}) nor as its library model's ({str(e).split(' do not fit: ')[-1]})"
            ) from None
    else:
        raise ModelError(f"model.{branch}_weights_path: weights in {plan.file} do not fit {what}: {own}")
    log.info("%s: %s", what, plan.describe())
    return bb


def weights_record(
    pretrained: bool | str | Path, audio_weights_path: str | Path | None, image_weights_path: str | Path | None
) -> dict[str, Any]:
    """What the run started from, for checkpoints and reports: each local file or folder with its sha256."""

    def entry(p: str | Path) -> dict[str, Any]:
        q = Path(p).expanduser()
        return {"path": str(q.resolve()), "sha256": file_sha256(q) if q.is_file() else None}

    out: dict[str, Any] = {"pretrained": pretrained if isinstance(pretrained, bool) else entry(pretrained)}
    for key, p in (("audio_weights_path", audio_weights_path), ("image_weights_path", image_weights_path)):
        if p is not None:
            out[key] = entry(p)
    return out
