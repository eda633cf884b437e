"""Starting weights without a network and transfer to new classes, with weights this repository trains and saves:
`model.pretrained: true|false|PATH`, the per-branch `model.*_weights_path`, `edgeav train --init CHECKPOINT`, and the
photos-only data layout a base model for pictures is trained on."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _train_fixtures import REPO, empty_config, tiny, train_cmd

from edgeav.errors import ModelError
from edgeav.schema import load_config
from edgeav.train.data import load_dataset
from edgeav.train.loop import Trainer, train
from edgeav.train.models import build_model_from_config, create_backbone, load_checkpoint, read_checkpoint, resolve_arch
from edgeav.train.synthetic import make_paired_set


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A photos-only set (images/<class>/, no sound): the images of a 3-class synthetic paired set."""
    paired = make_paired_set(tmp_path_factory.mktemp("p3") / "data", n_classes=3, per_class=6, seconds=1.0, size_px=64)
    root = tmp_path_factory.mktemp("photos") / "data"
    shutil.copytree(paired / "images", root / "images")
    return root


@pytest.fixture(scope="module")
def syn4(tmp_path_factory) -> Path:
    """Another species-paired set with other (4) classes: the user's own species."""
    return make_paired_set(
        tmp_path_factory.mktemp("s4") / "data", n_classes=4, per_class=6, seconds=1.0, size_px=64, seed=1
    )


@pytest.fixture(scope="module")
def base(photos, tmp_path_factory) -> Path:
    """A base model trained here on the photos-only set (joint, 1 epoch); its best.pt."""
    tmp = tmp_path_factory.mktemp("base")
    report = train(load_config(None, tiny(tmp, "data.kind=auto", "train.epochs=1")), photos, tmp / "run")
    assert report["test"]["n"] > 0  # the photos-only set has a test split and is evaluated
    return tmp / "run" / "best.pt"


def _cfg(tmp: Path, *extra: str):
    return load_config(None, tiny(tmp, *extra))


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ the photos-only layout


def test_photos_only_folder_is_read_as_the_images_layout(photos, tmp_path):
    ds = load_dataset(_cfg(tmp_path, "data.kind=auto").data, photos)
    assert ds.kind == "images" and ds.classes == [f"synthetic_class_{i}" for i in range(3)]
    assert all(s.image is not None and s.audio is None for s in ds.samples())
    assert all(len(ds.samples(split)) > 0 for split in ("train", "val", "test"))
    by_file = {s.image.file: s.split for s in ds.samples()}
    assert len(by_file) == len(ds.samples())  # one sample per photo, each in exactly one split


# ------------------------------------------------------------------------------- model.pretrained / weights paths


def test_image_backbone_saved_from_a_trained_model_loads_by_path(base, tmp_path):
    trained, _ = load_checkpoint(base)
    path = tmp_path / "image_backbone.pt"
    torch.save(trained.image_backbone.state_dict(), path)
    model, _, _ = build_model_from_config(_cfg(tmp_path, f"model.image_weights_path={path}"), 4)
    assert _equal(model.image_backbone, trained.image_backbone)
    assert not _equal(model.audio_backbone, trained.audio_backbone)  # the other branch starts random


def test_image_weights_path_to_a_checkpoint_takes_its_picture_branch_under_another_audio_branch(base, tmp_path):
    """A base model's picture branch under another audio backbone (birds: BirdNET's ear, the photo base model's eye)."""
    trained, _ = load_checkpoint(base)
    model, _, _ = build_model_from_config(
        _cfg(tmp_path, f"model.image_weights_path={base}", "model.audio_backbone=audio_cnn_large"), 4
    )
    assert _equal(model.image_backbone, trained.image_backbone)


def test_pretrained_path_to_a_checkpoint_loads_both_backbones(base, tmp_path):
    trained, _ = load_checkpoint(base)
    model, _, _ = build_model_from_config(_cfg(tmp_path, f"model.pretrained={base}"), 4)
    assert _equal(model.image_backbone, trained.image_backbone)
    assert _equal(model.audio_backbone, trained.audio_backbone)


def test_per_branch_path_wins_over_pretrained_for_its_branch(base, tmp_path):
    other = create_backbone("mobilenetv3_small")
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    trained, _ = load_checkpoint(base)
    model, _, _ = build_model_from_config(
        _cfg(tmp_path, f"model.pretrained={base}", f"model.image_weights_path={path}"), 4
    )
    assert _equal(model.image_backbone, other)
    assert _equal(model.audio_backbone, trained.audio_backbone)


def test_a_torchvision_state_dict_loads_too(tmp_path):
    import torchvision

    net = torchvision.models.mobilenet_v3_small()
    path = tmp_path / "mobilenet_v3_small.pth"
    torch.save(net.state_dict(), path)
    model, _, _ = build_model_from_config(_cfg(tmp_path, f"model.image_weights_path={path}"), 4)
    assert torch.equal(model.image_backbone.features[0][0].weight, net.features[0][0].weight)


def test_pretrained_folder_is_a_torch_hub_cache_read_without_network(tmp_path):
    import torchvision
    from torchvision.models import MobileNet_V3_Small_Weights

    name = Path(MobileNet_V3_Small_Weights.DEFAULT.url).name
    net = torchvision.models.mobilenet_v3_small()
    cache = tmp_path / "torch"
    (cache / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), cache / "hub" / "checkpoints" / name)
    model, _, _ = build_model_from_config(_cfg(tmp_path, f"model.pretrained={cache}"), 4)
    assert torch.equal(model.image_backbone.features[0][0].weight, net.features[0][0].weight)
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelError, match=f"{name} is not in .*nothing is downloaded"):
        build_model_from_config(_cfg(tmp_path, f"model.pretrained={empty}"), 4)
    assert not any((empty / "checkpoints").iterdir())


def test_wrong_architecture_names_the_file_and_the_first_key(tmp_path):
    path = tmp_path / "resnet18_backbone.pt"
    torch.save(create_backbone("resnet18").state_dict(), path)
    with pytest.raises(ModelError, match=rf"{path}.*key 'features\.0\.0\.weight' is missing"):
        build_model_from_config(_cfg(tmp_path, f"model.image_weights_path={path}"), 4)


def test_a_different_shape_names_the_key_and_both_shapes(tmp_path):
    path = tmp_path / "audio_cnn_small.pt"
    torch.save(create_backbone("audio_cnn", channels=(16, 32, 64)).state_dict(), path)
    with pytest.raises(ModelError) as e:
        build_model_from_config(_cfg(tmp_path, f"model.audio_weights_path={path}"), 4)
    msg = str(e.value)
    assert (
        str(path) in msg and "'blocks.0.conv1.0.weight'" in msg and "(16, 16, 3, 3)" in msg and "(24, 16, 3, 3)" in msg
    )


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    for key in ("model.pretrained", "model.image_weights_path"):
        with pytest.raises(ModelError, match=str(tmp_path / "nope.pt")):
            build_model_from_config(_cfg(tmp_path, f"{key}={tmp_path / 'nope.pt'}"), 4)


def test_cli_mismatched_weights_is_one_line_and_exit_nonzero(syn4, tmp_path):
    path = tmp_path / "resnet18_backbone.pt"
    torch.save(create_backbone("resnet18").state_dict(), path)
    r = subprocess.run(
        train_cmd(empty_config(tmp_path), syn4, tmp_path / "run", tiny(tmp_path, f"model.image_weights_path={path}")),
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert str(path) in lines[0] and "features.0.0.weight" in lines[0] and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------ --init transfer


@pytest.mark.parametrize("mode", ["joint", "two_phase"])
def test_init_loads_backbones_and_fusion_and_rebuilds_the_classifier(base, syn4, tmp_path, caplog, mode):
    extra = (
        ["train.mode=two_phase", "train.phase1_audio_epochs=1", "train.phase1_image_epochs=1"]
        if mode == "two_phase"
        else []
    )
    cfg = _cfg(tmp_path, "train.epochs=1", "train.eval_test=false", f"train.init_from={base}", *extra)
    with caplog.at_level(logging.INFO, logger="edgeav.train.models.transfer"):
        trainer = Trainer(cfg, syn4, tmp_path / "run")
    there = read_checkpoint(base)["state_dict"]
    here = trainer.model.state_dict()
    for k, v in here.items():
        if k.startswith(("audio_backbone.", "image_backbone.", "fusion.")) and tuple(v.shape) == tuple(there[k].shape):
            assert torch.equal(v, there[k]), k
    new = trainer.weights["init"]["new_modules"]
    assert {"aux_audio.1", "aux_image.1"} <= set(new) and any(m.startswith("fusion.") for m in new)
    assert all(tuple(here[k].shape)[0] == 4 for k in here if k.rsplit(".", 1)[0] in new)
    log = caplog.text
    assert f"--init {base}" in log and "new for 4 labels (3 there)" in log and "aux_image.1" in log
    report = trainer.fit()
    init = report["weights"]["init"]
    assert init["path"] == str(base.resolve()) and init["sha256"] == _sha256(base)
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["extra"]["weights"]["init"]["sha256"] == init["sha256"]
    assert best["labels"] == [f"synthetic_class_{i}" for i in range(4)]


def test_init_with_the_same_labels_rebuilds_nothing(base, photos, tmp_path):
    trainer = Trainer(
        _cfg(tmp_path, "data.kind=auto", "train.epochs=1", f"train.init_from={base}"), photos, tmp_path / "run"
    )
    assert trainer.weights["init"]["new_tensors"] == 0
    assert _equal(trainer.model, load_checkpoint(base)[0])


def test_init_of_another_architecture_is_an_error_naming_the_first_difference(base, syn4, tmp_path):
    cfg = _cfg(tmp_path, "model.image_backbone=resnet18", f"train.init_from={base}")
    with pytest.raises(ModelError, match="image_backbone is 'mobilenetv3_small' there, 'resnet18' in this run"):
        Trainer(cfg, syn4, tmp_path / "run")


def test_cli_init_flag_reaches_the_trainer_and_errors_are_one_line(base, syn4, tmp_path):
    cmd = train_cmd(empty_config(tmp_path), syn4, tmp_path / "run", tiny(tmp_path, "model.head=concat"))
    r = subprocess.run(
        [*cmd, "--init", str(base)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert f"--init {base}" in lines[0] and "head is 'hdmf' there, 'concat' in this run" in lines[0]


# ---------------------------------------------------------------------------------------------------- the recipes


def test_birds_pretrain_recipe_builds_the_birds_recipe_picture_branch():
    """train/birds.yaml takes the base model's picture branch (model.image_weights_path=runs/birds_base/best.pt)
    under BirdNET's ear: the image backbone and its arguments must be the same."""
    pre, birds = (load_config(REPO / "train" / n) for n in ("birds_pretrain.yaml", "birds.yaml"))
    a, b = resolve_arch(pre.model, pre.data), resolve_arch(birds.model, birds.data)
    keys = ("image_backbone", "image_kwargs")
    assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}
    assert pre.data.kind == "images" and pre.model.pretrained is False


# ------------------------------------------------------------------------------------------------- real bird photos


@pytest.mark.slow
@pytest.mark.data
def test_bird_photo_base_model_lifts_the_picture_branch_by_ten_points(shared_data, tmp_path):
    """The README's comparison (about 30 CPU minutes): train/birds_pretrain.yaml on the 484 other species, then the
    17-species recipe from scratch and with --init; the picture-only test accuracy gains >= 10 points. The picture
    figure is phase I's picture model, which the audio phase and phase II do not touch: both birds runs shorten
    those (--set) to keep the test short."""
    base = train(load_config(REPO / "train" / "birds_pretrain.yaml"), shared_data / "birds_pretrain", tmp_path / "base")
    assert base["train_minutes"] <= 16
    short = ["train.phase1_audio_epochs=1", "train.epochs=1"]
    scratch = train(load_config(REPO / "train" / "birds.yaml", short), shared_data / "birds", tmp_path / "scratch")
    cfg = load_config(
        REPO / "train" / "birds.yaml",
        [*short, f"model.image_weights_path={tmp_path / 'base' / 'best.pt'}", "train.phase1_lr=null"],
    )  # the README's command
    transfer = train(cfg, shared_data / "birds", tmp_path / "transfer")
    gain = transfer["test"]["image_only"]["accuracy"] - scratch["test"]["image_only"]["accuracy"]
    assert gain >= 0.10, (scratch["test"], transfer["test"])
