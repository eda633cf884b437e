"""Checkpoints that rebuild their model, `edgeav model info` figures and errors, local weights, optional extras."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from edgeav.cli import main
from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import EdgeAVError, ModelError, UnknownNameError
from edgeav.train.models import (
    CHECKPOINT_FORMAT_VERSION,
    build_model,
    create_model,
    load_checkpoint,
    model_stats,
    named_arch,
    read_checkpoint,
    save_checkpoint,
)

SMALL = InputContract(audio=AudioContract(window_s=1.0), image=ImageContract(height_px=64, width_px=64))
LABELS = ["blackbird", "robin", "wren"]
BUDGET_PARAMS = 5_000_000  # issue 3: the default edge model fits a Jetson Nano
BUDGET_FLOPS = 600_000_000  # per window: 5 s of audio + one 224 px frame


@pytest.fixture
def cli():
    """`edgeav` in this process; puts back the root logger's handlers that the command's logging set-up replaces
    (its stderr handler would outlive the captured stream of this test)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield main
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _small_model(head: str = "hdmf", **arch_kw):
    arch = {**named_arch("edgeav-small"), "head": head, "contract": SMALL.model_dump(mode="json"), **arch_kw}
    torch.manual_seed(0)
    return build_model(arch, LABELS)


def _inputs(contract: InputContract, batch: int = 2):
    g = torch.Generator().manual_seed(3)
    audio = 0.2 * torch.randn(batch, contract.audio.window_samples, generator=g)
    image = torch.randint(0, 256, contract.shapes(batch)["image"], generator=g, dtype=torch.uint8)
    return audio, image, torch.tensor([[1.0, 1.0], [1.0, 0.0]])[:batch]


def _save(model, path, **kw):
    return save_checkpoint(
        path,
        model,
        labels=model.labels,
        arch=model.arch,
        contract=model.contract,
        train_config={"epochs": 3, "lr_fusion": 1e-3},
        metrics={"val_acc": 0.75},
        **kw,
    )


# --------------------------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["hdmf", "cfnsr", "shared_2d"])
def test_checkpoint_rebuilds_the_model_from_the_file_alone(head, tmp_path):
    kw = {"audio_backbone": None} if head == "shared_2d" else {}
    model = _small_model(head, **kw)
    # move the weights and the BatchNorm statistics off their initial values, as training would
    model.train()
    with torch.no_grad():
        model(*_inputs(model.contract))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = _save(model, tmp_path / "ckpt" / "best.pt", optimizer_state=opt.state_dict(), extra={"epoch": 3})

    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects in the file
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION and raw["labels"] == LABELS
    del model  # nothing of the original is needed below

    rebuilt, info = load_checkpoint(path)
    assert not rebuilt.training
    assert rebuilt.labels == LABELS and info.labels == LABELS
    assert info.contract == SMALL and rebuilt.contract == SMALL
    assert info.arch["head"] == head and info.metrics == {"val_acc": 0.75}
    assert info.train_config["epochs"] == 3 and info.extra == {"epoch": 3}
    assert info.optimizer_state is not None and "param_groups" in info.optimizer_state
    # same outputs as the model that was saved: compare with one rebuilt from the raw state dict by hand
    ref = build_model(raw["arch"], raw["labels"], contract=SMALL)
    ref.load_state_dict(raw["state_dict"])
    ref.eval()
    with torch.no_grad():
        a = rebuilt(*_inputs(SMALL))
        b = ref(*_inputs(SMALL))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a.logits.abs().sum() > 0


def test_checkpoint_outputs_equal_the_saved_model(tmp_path):
    model = _small_model().eval()
    with torch.no_grad():
        before = model(*_inputs(SMALL))
    rebuilt, _ = load_checkpoint(_save(model, tmp_path / "m.pt"))
    with torch.no_grad():
        after = rebuilt(*_inputs(SMALL))
    for x, y in zip(before, after):
        assert torch.equal(x, y)


def test_newer_format_version_is_refused(tmp_path):
    path = _save(_small_model(), tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(ModelError, match=f"format version {CHECKPOINT_FORMAT_VERSION + 1} is newer .*upgrade edgeav"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "key,value,error,message",
    [
        ("head", "hdmf_v9", UnknownNameError, "unknown fusion head 'hdmf_v9'.*this edgeav knows: .*hdmf"),
        ("image_backbone", "mobilenetv5", UnknownNameError, "unknown image backbone 'mobilenetv5'"),
        ("future_key", 1, ModelError, "bad architecture keys: future_key"),
    ],
)
def test_unknown_architecture_is_refused(tmp_path, key, value, error, message):
    path = _save(_small_model(), tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["arch"][key] = value
    torch.save(raw, path)
    with pytest.raises(error, match=message) as e:
        load_checkpoint(path)
    assert isinstance(e.value, EdgeAVError)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_not_a_checkpoint_is_refused(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, plain)
    with pytest.raises(ModelError, match="not an edgeav checkpoint"):
        read_checkpoint(plain)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02 definitely not a zip")
    with pytest.raises(ModelError, match="not a loadable edgeav checkpoint"):
        read_checkpoint(broken)
    with pytest.raises(ModelError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = _save(_small_model(), tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["labels"] = LABELS + ["owl"]  # 4 classes, weights for 3
    torch.save(raw, path)
    with pytest.raises(ModelError, match="weights do not fit the architecture"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------------------------
# edgeav model info
# --------------------------------------------------------------------------------------------------------------------


def test_model_info_default_model_is_within_budget(cli, capsys):
    assert cli(["model", "info", "edgeav-small", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    d = json.loads(out)
    p, f = d["params"], d["flops"]
    print(f"edgeav-small: params {p}, FLOPs {f}")
    assert p["total"] <= BUDGET_PARAMS and f["total"] <= BUDGET_FLOPS
    assert d["budget"]["within"] is True
    for branch in ("audio", "image", "fusion"):  # each branch counted, and the parts add up
        assert p[branch] > 0 and f[branch] > 0, branch
    assert p["audio"] + p["image"] + p["fusion"] == p["total"]
    assert f["audio"] + f["image"] + f["fusion"] == f["total"]
    assert d["input_shapes"] == {"audio": [1, 80000], "image": [1, 3, 224, 224], "mask": [1, 2]}


def test_branch_flops_equal_the_branch_run_alone():
    """The per-branch figures are those of each branch run by itself (no FLOP lost or double-counted), and the image
    branch is the whole torchvision MobileNetV3-small feature extractor at 224 px."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn, *args) -> int:
        c = FlopCounterMode(display=False)
        with c, torch.no_grad():
            fn(*args)
        return c.get_total_flops()

    model = create_model("edgeav-small").eval()
    s = model_stats(model)
    audio, image, _ = _inputs(model.contract, batch=1)
    logmel = model.frontend.audio(audio)
    assert s["flops"]["audio"] == flops(model.frontend.audio, audio) + flops(model.audio_backbone, logmel)
    assert s["flops_detail"]["frontend.audio"] == flops(model.frontend.audio, audio)
    tv = torchvision.models.mobilenet_v3_small(weights=None).eval()
    assert s["flops"]["image"] == flops(tv.features, torch.zeros(1, 3, 224, 224))
    # and torchvision's own figure for the whole classifier, 0.06 GFLOPS (in MACs), is the same network
    assert 0.05e9 < s["flops"]["image"] / 2 < 0.06e9
    assert s["params"]["image"] == sum(p.numel() for p in tv.features.parameters())


def test_model_info_text_names_every_branch_and_the_budget(cli, capsys):
    assert cli(["model", "info", "edgeav-small"]) == 0
    out = capsys.readouterr().out
    for word in ("audio", "image", "fusion", "total", "budget (Jetson Nano)", "within", "16000 Hz", "uint8"):
        assert word in out, word
    assert "0.000 G" not in out.split("(FLOPs")[0]  # no branch shows zero FLOPs


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["model", "info", "edgeav-tiny"], "unknown named model 'edgeav-tiny'; valid names: "),
        (
            ["model", "info", "edgeav-small", "--set", "model.head=attention_soup"],
            "unknown fusion head 'attention_soup'",
        ),
        (["model", "info", "edgeav-small", "--set", "model.image_backbone=vgg99"], "unknown image backbone 'vgg99'"),
    ],
)
def test_unknown_names_exit_2_with_one_line(argv, needle, cli, capsys):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_model_info_reads_a_checkpoint(cli, capsys, tmp_path):
    path = _save(_small_model(), tmp_path / "m.pt")
    assert cli(["model", "info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["checkpoint"] == str(path) and d["metrics"] == {"val_acc": 0.75} and d["num_classes"] == 3
    assert d["input_shapes"]["audio"] == [1, 16000] and d["flops"]["image"] > 0
    assert cli(["model", "info", str(tmp_path / "gone.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_model_info_overrides_change_the_model(cli, capsys):
    assert cli(["model", "info", "edgeav-small", "--set", "model.head=concat", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["arch"]["head"] == "concat" and d["overrides"] == ["model.head=concat"]


# --------------------------------------------------------------------------------------------------------------------
# weights: the library loader, local files, optional extras
# --------------------------------------------------------------------------------------------------------------------


def test_local_weights_paths_load_without_network(tmp_path):
    import torchvision

    from edgeav.train.models import create_backbone

    torch.manual_seed(1)
    lib = torchvision.models.mobilenet_v3_small(weights=None)  # what torchvision's own weights file holds
    image_path = tmp_path / "mnv3s.pth"
    torch.save(lib.state_dict(), image_path)
    audio_src = create_backbone("audio_cnn")
    audio_path = tmp_path / "audio_cnn.pth"
    torch.save(audio_src.state_dict(), audio_path)

    torch.manual_seed(2)  # different random init: whatever matches came from the files
    model = build_model(
        named_arch("edgeav-small"),
        LABELS,
        pretrained=False,
        audio_weights_path=str(audio_path),
        image_weights_path=str(image_path),
    )
    for k, v in lib.features.state_dict().items():
        assert torch.equal(model.image_backbone.features.state_dict()[k], v), k
    for k, v in audio_src.state_dict().items():
        assert torch.equal(model.audio_backbone.state_dict()[k], v), k

    # a library state dict into the mono (spectrogram) variant: the first conv becomes the sum over RGB
    mono = create_backbone("audio_mobilenetv3_small", weights_path=image_path)
    assert torch.equal(mono.features[0][0].weight, lib.features[0][0].weight.sum(dim=1, keepdim=True))

    with pytest.raises(ModelError, match="do not fit"):
        build_model(named_arch("edgeav-small"), LABELS, image_weights_path=str(audio_path))
    with pytest.raises(ModelError, match="not found"):
        build_model(named_arch("edgeav-small"), LABELS, image_weights_path=str(tmp_path / "nope.pth"))


def test_pretrained_asks_the_library_for_its_weights(monkeypatch):
    """pretrained=True goes through torchvision's weights API (weights="DEFAULT"); stubbed here, no download."""
    import torchvision

    real = torchvision.models.mobilenet_v3_small
    asked = []

    def fake(weights=None, **kw):
        asked.append(weights)
        return real(weights=None, **kw)

    monkeypatch.setattr(torchvision.models, "mobilenet_v3_small", fake)
    build_model(named_arch("edgeav-small"), LABELS, pretrained=True)
    assert asked == ["DEFAULT"]  # the image backbone; the from-scratch audio CNN asks for nothing

    def offline(weights=None, **kw):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models, "mobilenet_v3_small", offline)
    with pytest.raises(ModelError, match="cannot load torchvision's pretrained weights.*weights_path="):
        build_model(named_arch("edgeav-small"), LABELS, pretrained=True)


@pytest.mark.parametrize("backbone", ["wav2vec2_base", "ast"])
def test_transformer_backbones_without_the_extra_say_how_to_install(backbone, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as where the extra is not installed: import fails
    arch = {**named_arch("edgeav-small"), "audio_backbone": backbone}
    with pytest.raises(
        ModelError, match=r"needs the Python package 'transformers'.*pip install 'edgeav\[transformers\]'"
    ):
        build_model(arch, LABELS)
