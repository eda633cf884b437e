"""Shared pieces of the daemon tests: a real bundle from a random-weight model, recorded media, configs.

torch is used only here (to build the test model, as tests/_export_models.py does); the daemon under test never
imports it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from _export_models import IMAGE_HW, LABELS, WINDOW_SAMPLES, build_onnx

from edgeav.runtime.postprocess import Detection

REPO = Path(__file__).resolve().parent.parent
EDGEAV = [sys.executable, "-m", "edgeav"]
TIME_SCALE_ENV = "EDGEAV_TEST_TIME_SCALE"
T = TypeVar("T")


def time_scale() -> float:
    """How much slower than a quiet machine this one runs now: every deadline and wait in the daemon tests is
    multiplied by it. EDGEAV_TEST_TIME_SCALE if set, else the 1-minute load average per CPU core; at least 1.
    Read at each call, so a test started while the load rises gets the later figure."""
    v = os.environ.get(TIME_SCALE_ENV, "").strip()
    if v:
        try:
            scale = float(v)
        except ValueError:
            raise ValueError(f"{TIME_SCALE_ENV}={v!r} is not a number") from None
        if scale < 1.0:
            raise ValueError(f"{TIME_SCALE_ENV}={v!r} must be at least 1")
        return scale
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """`seconds` on a quiet machine, stretched by time_scale()."""
    return seconds * time_scale()


def wait_until(
    what: str, cond: Callable[[], T], timeout_s: float, proc: subprocess.Popen | None = None, step_s: float = 0.05
) -> T:
    """Poll `cond` until it returns something true and return that; fail naming `what` (and the last value) after
    `timeout_s` stretched by time_scale(), or as soon as `proc` (the daemon under test) has ended. An OSError from
    `cond` (a port not listening yet, a file not there yet) counts as not yet."""
    deadline = time.monotonic() + scaled(timeout_s)
    last: T | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon ended (rc {proc.returncode}) while waiting for {what}")
        try:
            last = cond()
        except OSError:
            last = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout_s):.1f} s waiting for {what}; last: {last!r}")
        time.sleep(step_s)


def contract():
    from edgeav.contract import AudioContract, ImageContract, InputContract

    # 1600 samples at 16 kHz = 0.1 s windows; 32 px frames (the test model's)
    return InputContract(
        audio=AudioContract(window_s=WINDOW_SAMPLES / 16000, n_fft=256, win_length=256, hop_length=64),
        image=ImageContract(height_px=IMAGE_HW, width_px=IMAGE_HW),
    )


def make_bundle(out: Path, seed: int = 0) -> Path:
    """A bundle as `edgeav export` writes it (export.bundle.write_bundle), around a random-weight model."""
    from edgeav.export.bundle import write_bundle
    from edgeav.manifest import ArtifactManifest

    onnx_path = build_onnx(out.parent / f"{out.name}_fp32.onnx", seed=seed)
    manifest = ArtifactManifest(
        kind="onnx", labels=LABELS, contract=contract(), precision="fp32", metrics={"fp32": {"accuracy": 0.0}}
    )
    return write_bundle(out, {"model_fp32": onnx_path}, manifest, "cpu", {"edgeav": "test"}, tarball=False)


def write_media(path: Path, duration_s: float, video: bool = True, audio: bool = True, fps: int = 10) -> Path:
    """A Matroska file (MJPEG 64x48 + FLAC 16 kHz) from videotestsrc/audiotestsrc, written with gst-launch."""
    parts = []
    if video:
        parts.append(
            f"videotestsrc pattern=ball num-buffers={int(duration_s * fps)} ! "
            f"video/x-raw,width=64,height=48,framerate={fps}/1 ! videoconvert ! jpegenc ! queue ! mux."
        )
    if audio:
        n = int(duration_s * 10)
        parts.append(
            f"audiotestsrc wave=ticks freq=880 samplesperbuffer=1600 num-buffers={n} ! "
            "audio/x-raw,rate=16000,channels=1 ! audioconvert ! flacenc ! queue ! mux."
        )
    cmd = (
        ["gst-launch-1.0", "-q"]
        + " ".join(parts).split()
        + ["matroskamux", "name=mux", "!", "filesink", f"location={path}"]
    )
    subprocess.run(cmd, check=True, capture_output=True, timeout=scaled(120))
    return path


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path


def daemon_tree(tmp: Path, bundle: Path, uri: str, **daemon) -> dict:
    """A daemon config for tests: 0.1 s windows every 0.1 s, every window a detection candidate, no metrics port."""
    d = {
        "bundle": str(bundle),
        "store": {"db_path": str(tmp / "det.db"), "batch_interval_s": 0.2},
        # no free-space floor unless a test sets one: whether evidence is written must not depend on how full the
        # machine's disk is (CI's has had under 20 % free); the full-disk test sets the floor explicitly
        "evidence": {"dir": str(tmp / "evidence"), "min_free_percent": 0.0},
        "metrics": {"enabled": False},
    }
    for k, v in daemon.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return {
        "runtime": {
            "source": {"uri": uri, "fps": 10, "stall_timeout_s": 2.0, "start_timeout_s": 10.0},
            "align": {"hop_s": 0.1, "max_wait_s": 0.5},
            "postprocess": {"threshold": 0.34, "smoothing": "none", "confirm_hits": 1, "min_gap_s": 0.0},
        },
        "daemon": d,
    }


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "tests") + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def start_daemon(cfg: Path, err_path: Path) -> subprocess.Popen:
    """`edgeav --log-json run --config CFG --json` in the background: the JSON result on its stdout (a pipe), the
    JSON log lines in `err_path`."""
    with open(err_path, "w") as err:
        return subprocess.Popen(
            [*EDGEAV, "--log-json", "run", "--config", str(cfg), "--json"],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env(),
            text=True,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for /health, a broker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored_detection(label: str, i: int, modalities: tuple[str, ...] = ("audio", "image")) -> Detection:
    """A confirmed detection of `label` (crow or finch) in second `i` of the stream, as the store and the evidence
    writer take it (fused 0.9, audio 0.8, image 0.7 when `modalities` has an image)."""
    return Detection(
        label, ["crow", "finch"].index(label), i * 10**9, i * 10**9 + 10**9, None, None, 0.9, 0.8,
        0.7 if "image" in modalities else None, modalities, None, 1,
    )  # fmt: skip


@contextlib.contextmanager
def real_tmpfs(path: Path, size_kb: int):
    """A real tmpfs of `size_kb` mounted at `path` for the block (root; skips with the reason elsewhere): a file
    system that really says ENOSPC. Unmounted after."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the full-disk tests needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write a ballast file until the file system says ENOSPC; returns it (delete it to give the space back)."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return ballast


@contextlib.contextmanager
def small_fs(path: Path, size_kb: int):
    """A real tmpfs of `size_kb` at `path` (root), else the folder with a quota: yields free_ratio(path)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
        mounted = r.returncode == 0
    if mounted:
        try:
            from edgeav.runtime.evidence import disk_free_ratio

            yield disk_free_ratio
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    else:
        cap = size_kb * 1024

        def quota(p: Path) -> float:
            used = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            return max(0.0, cap - used) / cap

        yield quota


__all__ = [
    "LABELS",
    "make_bundle",
    "write_media",
    "write_config",
    "daemon_tree",
    "contract",
    "env",
    "EDGEAV",
    "REPO",
    "small_fs",
    "time_scale",
    "scaled",
    "wait_until",
    "TIME_SCALE_ENV",
]
