"""Shared by the runtime benchmarks (bench/runtime_*.py): the model to run, process figures, the JSON result.

Model: `--bundle DIR` (a bundle written by `edgeav export`; verified, its INT8 ONNX by default) - the default is
runs/grid_bundle_int8, the INT8 bundle of the GRID-trained default model. Figures of the process come from /proc
(CPU time of every thread, peak resident memory); each result records the load average, because this machine is
shared and contention slows any figure down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeav.contract import InputContract
    from edgeav.schema.runtime import RuntimeConfig

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_BUNDLE = REPO / "runs" / "grid_bundle_int8"
DATA = Path(os.environ.get("EDGEAV_DATA", REPO.parent / "shared" / "data"))
STREAM = DATA / "streams" / "grid_stream_120s.mp4"
STREAM_URI = STREAM.as_uri() if STREAM.is_file() else None  # the default --source of the replay benchmarks
GROUND_TRUTH = DATA / "streams" / "grid_stream_120s.csv"

log = logging.getLogger("bench")


@dataclass
class Model:
    path: Path
    role: str
    sha256: str
    contract: InputContract
    labels: list[str]
    bundle: Path
    bundle_metrics: dict[str, Any]

    def identity(self) -> dict[str, str]:
        """What the result JSON says about the model: its bundle, file role and sha256."""
        return {"bundle": rel(self.bundle), "model_role": self.role, "model_sha256": self.sha256}

    def line_suffix(self, loadavg_1: float) -> str:
        """The end of each benchmark's one line: which model file ran, and how loaded the machine was."""
        return f"{self.bundle.name}/{self.path.name}, load {loadavg_1:.2f}"


def rel(path: Path | str) -> str:
    """A path as the JSON shows it: relative to the repository when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle directory (default: %(default)s)")
    p.add_argument("--role", default="model_int8", help="bundle file to run (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime intra-op threads (default 1: the GStreamer decoder gets the other core)",
    )


def parse_stream_args(
    doc: str,
    argv: list[str] | None,
    default_source: str | None,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The arguments of a stream benchmark: the model, `--source`, its own (`more`), `--out`, `-v`; logging set up.
    No source (the default stream is not there and none given) is a usage error (exit 2)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_model_args(p)
    p.add_argument("--source", default=default_source)
    if more is not None:
        more(p)
    p.add_argument("--out", default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if not args.source:
        p.error(f"{STREAM} not found (set EDGEAV_DATA) and no --source given")
    return args


def open_model(args: argparse.Namespace) -> Model:
    from edgeav.bundle import verify_bundle

    info = verify_bundle(args.bundle)
    path = info.model(args.role)
    sha = info.sha256[args.role]
    return Model(
        path, args.role, sha, info.manifest.contract, info.labels, Path(args.bundle), dict(info.manifest.metrics or {})
    )


def runtime_config(args: argparse.Namespace, **sections: dict[str, Any]) -> RuntimeConfig:
    from edgeav.schema.runtime import RuntimeConfig

    doc: dict[str, Any] = {"backend": {"intra_op_threads": int(args.threads)}}
    for k, v in sections.items():
        doc.setdefault(k, {}).update(v)
    return RuntimeConfig.model_validate(doc)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, every thread (GStreamer's included)."""
    t = os.times()
    return t.user + t.system


def proc_status_kb(key: str, pid: int | str = "self") -> int:
    """A /proc/<pid>/status figure in kB (VmRSS, VmHWM = peak resident set); this process's by default."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "loadavg_1_5_15": list(os.getloadavg()),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (a broker, the web view, a notification target)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_result(name: str, data: dict[str, Any], line: str, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"bench": name, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(line)  # the one line of text
    return path


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
