"""Device profiles: one YAML per target, shipped as package data of `edgeav.devices`.

A profile says what a target can do (TensorRT family, compute capability, INT8 / FP16 / DLA, memory), which
backend and which INT8 form it wants, and how its camera and microphone are captured (GStreamer templates with
`{width}`, `{height}`, `{fps}`, `{rate_hz}` placeholders). A profile asked for something it cannot do is a
`DeviceError` that says what it can do.
"""

from __future__ import annotations

import argparse
import functools
import logging
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeav.errors import ConfigError, DeviceError, UnknownNameError
from edgeav.result import CommandResult

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
TEMPLATE_FIELDS = ("width", "height", "fps", "rate_hz")


class CaptureTemplates(BaseModel):
    """GStreamer source templates; each ends in raw caps where the runtime attaches its appsink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_csi: str | None = Field(
        None,
        description="CSI camera (nvarguscamerasrc on Jetson, libcamerasrc on a Pi); "
        "placeholders {width} {height} {fps}. None: no CSI port.",
    )
    camera_usb: str = Field(..., description="USB camera (v4l2src); placeholders {width} {height} {fps}.")
    microphone: str = Field(..., description="Microphone (alsasrc), mono float32 out; placeholder {rate_hz}.")

    def render(
        self,
        which: Literal["camera_csi", "camera_usb", "microphone"],
        *,
        width: int = 224,
        height: int = 224,
        fps: int = 15,
        rate_hz: int = 16_000,
    ) -> str:
        """Fill one template. An absent CSI template is a DeviceError, not an empty pipeline."""
        tpl = getattr(self, which)
        if tpl is None:
            raise DeviceError(f"this device has no {which.replace('_', ' ')} template; use camera_usb")
        return tpl.format(width=width, height=height, fps=fps, rate_hz=rate_hz)


class DeviceProfile(BaseModel):
    """What one target can do. Loaded from `devices/<name>.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]*$", description="Profile name, as on the command line.")
    description: str = Field(..., min_length=1, description="The hardware in words.")
    arch: str = Field(..., description="GPU architecture (maxwell, volta, ampere, blackwell) or CPU family.")
    jetpack: str | None = Field(None, description="JetPack release the facts below belong to; None off Jetson.")
    tensorrt_version: str | None = Field(
        None, description="TensorRT version family (major.minor, or major); None where TensorRT is not used."
    )
    cuda_version: str | None = Field(None, description="CUDA version family; None without an NVIDIA GPU.")
    compute_capability: str | None = Field(
        None,
        pattern=r"^\d+\.\d+$",
        description="GPU compute capability (major.minor); None: no GPU, or it depends on the installed card.",
    )
    fp16: bool = Field(..., description="Fast FP16 inference.")
    int8: bool = Field(..., description="Fast INT8 inference (tensor cores / dp4a / VNNI).")
    dla_cores: int = Field(0, ge=0, le=4, description="Number of NVDLA cores, count.")
    memory_mib: int = Field(
        ..., ge=256, le=1 << 21, description="Memory available to the model, MiB (shared CPU/GPU on Jetson)."
    )
    max_params_millions: float = Field(
        ..., gt=0, le=10_000, description="Recommended largest model, millions of parameters."
    )
    max_gflops: float = Field(..., gt=0, le=100_000, description="Recommended largest model, GFLOPs per window.")
    workspace_mib: int = Field(
        0, ge=0, le=1 << 20, description="TensorRT builder workspace limit, MiB (0 where TensorRT is not used)."
    )
    preferred_backend: Literal["tensorrt", "onnxruntime"] = Field(..., description="Inference backend to use.")
    int8_form: Literal["trt_symmetric", "ort_u8s8"] | None = Field(
        None,
        description="INT8 Q/DQ form: trt_symmetric = symmetric int8 activations + per-channel int8 weights "
        "(TensorRT); ort_u8s8 = uint8 activations + int8 weights (ONNX Runtime on CPU). None without INT8.",
    )
    int8_reduce_range: bool = Field(
        False,
        description="Quantize weights to 7 bits: needed on x86 CPUs without "
        "VNNI, where ONNX Runtime's u8s8 kernels saturate (int16 accumulation).",
    )
    capture: CaptureTemplates = Field(..., description="Capture pipeline templates.")

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if self.int8 and self.int8_form is None:
            raise ValueError("int8: true needs an int8_form")
        if self.preferred_backend == "tensorrt":
            if not self.tensorrt_version or self.workspace_mib <= 0:
                raise ValueError("a tensorrt profile needs tensorrt_version and a workspace_mib > 0")
            if self.int8_form not in (None, "trt_symmetric"):
                raise ValueError("TensorRT takes INT8 only in the trt_symmetric form")
        if self.int8_reduce_range and self.int8_form != "ort_u8s8":
            raise ValueError("int8_reduce_range applies to the ort_u8s8 form only")
        if self.dla_cores and self.preferred_backend != "tensorrt":
            raise ValueError("DLA cores are only reachable through TensorRT")
        return self

    @property
    def precisions(self) -> list[str]:
        """What it can run, best first."""
        out = (["int8"] if self.int8 else []) + (["fp16"] if self.fp16 else [])
        return out + ["fp32"]

    @property
    def tensorrt_major(self) -> int | None:
        return int(self.tensorrt_version.split(".")[0]) if self.tensorrt_version else None


@functools.cache
def _profiles() -> dict[str, DeviceProfile]:
    out: dict[str, DeviceProfile] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        source = f"edgeav.devices/{entry.name}"
        try:
            profile = DeviceProfile.model_validate(yaml.safe_load(entry.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as e:
            raise ConfigError(f"{source}: bad device profile: {e}") from None
        if profile.name + ".yaml" != entry.name:
            raise ConfigError(f"{source}: name {profile.name!r} does not match the file name")
        out[profile.name] = profile
    return out


def profile_names() -> list[str]:
    return sorted(_profiles())


def load_profile(name: str) -> DeviceProfile:
    """The profile called `name`; an unknown name raises UnknownNameError listing the valid ones."""
    try:
        return _profiles()[name]
    except KeyError:
        raise UnknownNameError(f"unknown device {name!r}; valid names: {', '.join(profile_names())}") from None


def all_profiles() -> list[DeviceProfile]:
    return [_profiles()[n] for n in profile_names()]


def check_precision(profile: DeviceProfile, precision: str) -> None:
    """Raise DeviceError when `profile` cannot run `precision` fast; the message says what it can do."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision in profile.precisions:
        return
    can = ", ".join(profile.precisions)
    best = profile.precisions[0]
    what = "fast INT8" if precision == "int8" else "fast FP16"
    raise DeviceError(
        f"{profile.name} has no {what}; it supports {can}: use --{best}"
        if best != "fp32"
        else f"{profile.name} has no {what}; it supports {can}: drop --{precision}"
    )


def check_dla(profile: DeviceProfile, core: int) -> None:
    """Raise DeviceError when `profile` has no DLA core number `core`."""
    if profile.dla_cores == 0:
        raise DeviceError(f"{profile.name} has no DLA; run on its GPU (leave the DLA core unset)")
    if not 0 <= core < profile.dla_cores:
        raise DeviceError(f"{profile.name} has DLA cores 0..{profile.dla_cores - 1}; got {core}")


def _row(p: DeviceProfile) -> dict[str, object]:
    return {
        "name": p.name,
        "backend": p.preferred_backend,
        "int8": p.int8,
        "fp16": p.fp16,
        "dla": p.dla_cores,
        "memory_mib": p.memory_mib,
    }


def cmd_list(args: argparse.Namespace) -> CommandResult:
    rows = [_row(p) for p in all_profiles()]
    head = ("name", "backend", "int8", "fp16", "dla", "memory_mib")
    cells = [head] + [tuple("yes" if v is True else "no" if v is False else str(v) for v in r.values()) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    text = "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells)
    return CommandResult({"devices": rows}, text)


def cmd_show(args: argparse.Namespace) -> CommandResult:
    p = load_profile(args.name)
    data = p.model_dump(mode="json")
    data["precisions"] = p.precisions
    return CommandResult(data, yaml.safe_dump(data, sort_keys=False, width=160))


__all__ = [
    "CaptureTemplates",
    "DeviceProfile",
    "PRECISIONS",
    "all_profiles",
    "check_dla",
    "check_precision",
    "cmd_list",
    "cmd_show",
    "load_profile",
    "profile_names",
]
