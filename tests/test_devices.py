"""Device profiles: every YAML loads, its templates format, its facts are sane; the CLI lists and shows them."""

from __future__ import annotations

import json

import pytest

from edgeav.cli import main
from edgeav.devices import (
    DeviceProfile,
    all_profiles,
    check_dla,
    check_precision,
    load_profile,
    profile_names,
)
from edgeav.errors import DeviceError, UnknownNameError

EXPECTED = {
    "jetson-nano",
    "jetson-xavier-nx",
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
    "jetson-thor",
    "x86-cuda",
    "cpu",
    "raspberry-pi-5",
}


def test_every_target_has_a_profile() -> None:
    assert set(profile_names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_loads_and_is_sane(name: str) -> None:
    p = load_profile(name)
    assert isinstance(p, DeviceProfile) and p.name == name
    assert p.precisions[-1] == "fp32"
    if p.preferred_backend == "tensorrt":
        assert p.tensorrt_major is not None and p.tensorrt_major >= 8
        assert p.workspace_mib * 4 <= p.memory_mib  # the builder workspace fits in memory with room to spare
        assert p.int8_form in (None, "trt_symmetric")
    else:
        assert p.dla_cores == 0 and p.int8_form in (None, "ort_u8s8")
    if name.startswith("jetson-"):
        assert p.jetpack and p.compute_capability and p.preferred_backend == "tensorrt"
        assert p.capture.camera_csi and p.capture.camera_csi.startswith("nvarguscamerasrc")
    for which in ("camera_usb", "microphone") + (("camera_csi",) if p.capture.camera_csi else ()):
        s = p.capture.render(which, width=640, height=480, fps=30, rate_hz=16000)
        assert "{" not in s and "}" not in s
    assert "width=640,height=480,framerate=30/1" in p.capture.render("camera_usb", width=640, height=480, fps=30)
    assert p.capture.camera_usb.startswith("v4l2src")
    assert p.capture.microphone.startswith("alsasrc") and "rate=16000" in p.capture.render("microphone")


def test_known_facts() -> None:
    nano, xnx, orin, thor = (
        load_profile(n) for n in ("jetson-nano", "jetson-xavier-nx", "jetson-agx-orin", "jetson-thor")
    )
    assert (nano.compute_capability, nano.tensorrt_version, nano.int8, nano.fp16) == ("5.3", "8.2", False, True)
    assert (xnx.compute_capability, xnx.dla_cores, xnx.int8) == ("7.2", 2, True)
    assert (orin.compute_capability, orin.tensorrt_major, orin.dla_cores) == ("8.7", 10, 2)
    assert thor.arch == "blackwell" and thor.jetpack.startswith("7") and thor.dla_cores == 0
    assert load_profile("cpu").int8_form == "ort_u8s8" and load_profile("x86-cuda").int8_form == "trt_symmetric"


def test_int8_on_a_nano_says_what_it_can_do() -> None:
    with pytest.raises(DeviceError) as e:
        check_precision(load_profile("jetson-nano"), "int8")
    assert str(e.value) == "jetson-nano has no fast INT8; it supports fp16, fp32: use --fp16"
    check_precision(load_profile("jetson-nano"), "fp16")
    for p in all_profiles():
        check_precision(p, "fp32")


def test_dla_only_where_there_is_one() -> None:
    check_dla(load_profile("jetson-agx-orin"), 1)
    with pytest.raises(DeviceError, match="has no DLA"):
        check_dla(load_profile("jetson-orin-nano"), 0)
    with pytest.raises(DeviceError, match="0..1"):
        check_dla(load_profile("jetson-xavier-nx"), 2)


def test_unknown_device_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as e:
        load_profile("jetson-tx2")
    assert "jetson-nano" in str(e.value) and "raspberry-pi-5" in str(e.value)


def test_profile_rejects_unknown_keys() -> None:
    data = load_profile("cpu").model_dump()
    data["turbo"] = True
    with pytest.raises(Exception, match="turbo"):
        DeviceProfile.model_validate(data)


def test_cli_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "backend", "int8", "fp16", "dla", "memory_mib"]
    assert "jetson-orin-nx" in out and "onnxruntime" in out
    assert main(["devices", "show", "jetson-nano", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["compute_capability"] == "5.3" and shown["precisions"] == ["fp16", "fp32"]
    assert main(["devices", "show", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err
