"""Shared set-up of the training tests: a small SYNTHETIC paired set, the overrides of a fast run on it, generated
field noise, and the `edgeav train` command line a test runs in a subprocess."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    """3 classes x 6 pairs of 1 s recordings and 64 px pictures."""
    from edgeav.train.synthetic import make_paired_set

    return make_paired_set(tmp_path_factory.mktemp("syn") / "data", n_classes=3, per_class=6, seconds=1.0, size_px=64)


def tiny(tmp: Path, *extra: str) -> list[str]:
    """Overrides for a fast run of the default edge model on the synthetic set; `extra` comes last (a later
    override of the same key wins)."""
    return [
        f"data.cache_dir={tmp / 'cache'}",
        "data.kind=paired",
        "data.window_s=1.0",
        "data.hop_s=1.0",
        "data.image_size_px=64",
        "data.val_fraction=0.3",
        "model.pretrained=false",
        "train.batch_size=4",
        "train.threads=1",
        "train.early_stop_patience=100",
        *extra,
    ]


def tiny_two_phase(tmp: Path, *extra: str) -> list[str]:
    """`tiny` in two_phase mode with one epoch of each phase I model."""
    return tiny(tmp, "train.mode=two_phase", "train.phase1_audio_epochs=1", "train.phase1_image_epochs=1", *extra)


def empty_config(tmp: Path) -> Path:
    """An empty YAML config (every key at its default) for `edgeav train --config`."""
    p = tmp / "empty.yaml"
    p.write_text("{}\n")
    return p


def train_cmd(
    config: Path,
    data: Path,
    out: Path,
    sets: Iterable[str] = (),
    *,
    quiet: bool = True,
    launcher: Sequence[str] = (sys.executable,),
) -> list[str]:
    """`<launcher> -m edgeav [-q] train --config C --data D --out O --set k=v ...`; `launcher` is the Python
    interpreter, or e.g. `torchrun --standalone --nproc_per_node=2`."""
    return [
        *launcher,
        "-m",
        "edgeav",
        *(["-q"] if quiet else []),
        "train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(out),
        *[a for s in sets for a in ("--set", s)],
    ]


def write_noise(path: Path, seconds: float, rate_hz: int = 16_000, seed: int = 0) -> Path:
    """Brown-ish noise (integrated white noise, high-passed by a mean removal), like wind: a generated stand-in
    for a field recording."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(int(seconds * rate_hz)))
    x = x - np.convolve(x, np.ones(401) / 401, mode="same")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * x / np.abs(x).max()).astype(np.float32), rate_hz)
    return path
