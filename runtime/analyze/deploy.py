"""Deployments: a camera trap's photos and an audio recorder's files from one site, paired by time.

A deployment is a folder with a `deployment.yaml`:

    name: meadow-north
    pair_within_s: 10          # a photo pairs with a sound window whose centre is this close (and vice versa)
    devices:
      cam1: {kind: camera, path: photos, clock_offset_s: -42}      # the camera ran 42 s fast
      rec1: {kind: recorder, path: audio, utc_offset_h: 0}         # AudioMoth names are UTC

Each device's time stamps (recorder: the file name, AudioMoth-style `20240501_053000.WAV`; camera: the photo's
EXIF DateTimeOriginal) are read as the device clock's local time; true UTC = device time - utc_offset_h hours +
clock_offset_s. A recorder file becomes one unit whose windows each see the nearest photo within `pair_within_s`
of the window's centre (else the image is masked); a photo becomes one unit: one window of sound centred on the photo
from the recorder file that covers it (else the audio is masked).
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from edgeav.errors import ConfigError, MediaError
from edgeav.schema.base import Section
from edgeav.timebase import NS_PER_S, s_to_ns

from .media import AUDIO_EXTS, PHOTO_EXTS, audiomoth_time_utc_ns, media_duration_s, photo_time_ns

log = logging.getLogger(__name__)

DEPLOYMENT_FILE = "deployment.yaml"


class DeviceConfig(Section):
    kind: Literal["camera", "recorder"] = Field(description="camera: photos with EXIF times; recorder: audio files.")
    path: str = Field(description="Folder of this device's files, relative to the deployment folder (recursive).")
    clock_offset_s: float = Field(
        0.0, ge=-86_400.0, le=86_400.0, description="Seconds added to the device's time stamps to get true time."
    )
    utc_offset_h: float = Field(
        0.0, ge=-14.0, le=14.0, description="Time zone of the device's clock, hours east of UTC (AudioMoth: 0)."
    )


class DeploymentConfig(Section):
    name: str = Field("", description="Name of the deployment (default: the folder's name).")
    pair_within_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="Most seconds between a photo and a sound window's centre to pair them."
    )
    devices: dict[str, DeviceConfig] = Field(description="Devices by name: at least one camera or recorder.")


def load_deployment(folder: Path) -> DeploymentConfig:
    path = folder / DEPLOYMENT_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        cfg = DeploymentConfig.model_validate(raw)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
    for name, dev in cfg.devices.items():
        if not (folder / dev.path).is_dir():
            raise ConfigError(f"{path}: devices.{name}.path: {folder / dev.path} is not a folder")
    return cfg


def _device_utc_ns(device_ns: int, dev: DeviceConfig) -> int:
    return device_ns - int(round(dev.utc_offset_h * 3600 * NS_PER_S)) + s_to_ns(dev.clock_offset_s)


def _files(root: Path, exts: frozenset[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def plan_deployment(folder: Path, window_s: float) -> tuple[list[dict], list[Path]]:
    """(unit specs, files left out with a reason logged). A unit spec is a dict the unit builder takes: path, kind,
    utc_ns and its pairing (`photos` [(utc_ns, path)] for a recording, `recording` (path, offset_s) for a photo)."""
    cfg = load_deployment(folder)
    name = cfg.name or folder.name
    photos: list[tuple[int, str]] = []
    recordings: list[tuple[int, float, str]] = []  # (start utc_ns, duration s, path)
    unpaired: list[Path] = []
    for _name, dev in sorted(cfg.devices.items()):
        root = folder / dev.path
        if dev.kind == "camera":
            for p in _files(root, PHOTO_EXTS):
                try:
                    t = photo_time_ns(p)
                except MediaError:
                    t = None
                if t is None:
                    log.warning("deployment %s: %s has no EXIF time; analyzed without sound", name, p)
                    unpaired.append(p)
                else:
                    photos.append((_device_utc_ns(t, dev), str(p.resolve())))
        else:
            for p in _files(root, AUDIO_EXTS):
                t = audiomoth_time_utc_ns(p)
                try:
                    dur = media_duration_s(p) if t is not None else None
                except MediaError:
                    dur = None
                if t is None or dur is None:
                    log.warning("deployment %s: %s has no time in its name (or no duration); no photos", name, p)
                    unpaired.append(p)
                else:
                    recordings.append((_device_utc_ns(t, dev), dur, str(p.resolve())))
    photos.sort()
    recordings.sort()
    within_ns = s_to_ns(cfg.pair_within_s)
    half_ns = s_to_ns(window_s) // 2
    units: list[dict] = []
    photo_times = [t for t, _ in photos]
    for start_ns, dur_s, path in recordings:
        lo = bisect.bisect_left(photo_times, start_ns - within_ns)
        hi = bisect.bisect_right(photo_times, start_ns + s_to_ns(dur_s) + within_ns)
        units.append(
            {
                "path": path,
                "kind": "audio",
                "deployment": name,
                "utc_ns": start_ns,
                "photos": photos[lo:hi],
                "pair_within_ns": within_ns,
            }
        )
    starts = [r[0] for r in recordings]
    for t_ns, path in photos:
        rec = None
        i = bisect.bisect_right(starts, t_ns - half_ns) - 1
        if i >= 0:
            r_start, r_dur, r_path = recordings[i]
            if t_ns + half_ns <= r_start + s_to_ns(r_dur):
                rec = (r_path, (t_ns - half_ns - r_start) / NS_PER_S)
        units.append({"path": path, "kind": "photo", "deployment": name, "utc_ns": t_ns, "recording": rec})
    return units, unpaired


__all__ = ["DEPLOYMENT_FILE", "DeploymentConfig", "DeviceConfig", "load_deployment", "plan_deployment"]
