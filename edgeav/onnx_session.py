"""The one place an ONNX Runtime session is made, and the runner every stage drives it through.

    sess = create_session("model.onnx", intra_op_threads=2, optimization="disable")
    runner = OnnxRunner.open("model.onnx")              # the same factory, options passed on
    outs = runner.run({"audio": a, "image": i, "mask": m})   # {output name: array}

Every option is explicit (`SessionSettings`): intra-/inter-op threads, graph optimization level, execution providers
(by short name, in priority order), log severity and whether idle worker threads spin. Threads: `None` takes the
cores set for the process (`edgeav.threads`, the `threads:` config), else the cores free now (`free_cores`), 0 ONNX
Runtime's own default (one per physical core), n exactly n.

A provider asked for must be available and active after the session is made, else DeviceError: no silent fallback
to the CPU. A model ONNX Runtime cannot load is a ModelError. onnxruntime is imported inside the functions: the core
imports where it is absent (a training machine may not have it).

The runner interface is one call, `run(feeds) -> {output name: array}` (`Runner`): `OnnxRunner` here, and every
`edgeav.runtime.backends.Backend` (ONNX Runtime, TensorRT, PyTorch) through its `run`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from edgeav.errors import DeviceError, ModelError
from edgeav.threads import onnxruntime_threads

log = logging.getLogger(__name__)

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
Optimization = Literal["disable", "basic", "extended", "all"]
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
Feeds = Mapping[str, np.ndarray]


def free_cores(usable: int | None = None, load_1min: float | None = None) -> int:
    """Cores this process may run on (its CPU affinity) less those other runnable tasks keep busy (the 1-minute
    load average less one for this process), at least 1: a second job on the machine gets its share instead of
    both over-subscribing the cores. Pure when `usable` and `load_1min` are given (else read from this machine)."""
    if usable is None:
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            usable = os.cpu_count() or 1
    if load_1min is None:
        try:
            load_1min = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this system
            load_1min = 1.0
    busy = max(0.0, load_1min - 1.0)
    return max(1, min(usable, int(usable - busy + 0.5)))


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs. Threads: None = `free_cores()`, 0 = ONNX Runtime's default, n = n threads."""

    providers: tuple[str, ...] = ("cpu",)  # short names of ORT_PROVIDERS, priority order
    intra_op_threads: int | None = None
    inter_op_threads: int = 0  # 0 = ONNX Runtime's default
    optimization: Optimization = "all"  # graph optimization level; "disable" runs Q/DQ nodes as float ops
    log_severity: int = 3  # 0 verbose .. 4 fatal; 3 = errors only
    allow_spinning: bool = True  # idle intra-op threads spin (ORT's default); False frees the cores between runs
    device_id: int = 0  # GPU index for the CUDA / TensorRT providers


def create_session(model: str | Path | bytes, settings: SessionSettings | None = None, **overrides: Any) -> Any:
    """An `onnxruntime.InferenceSession` on `model` (a path, or a serialized ModelProto) with `settings`
    (keyword arguments override single fields)."""
    s = replace(settings or SessionSettings(), **overrides)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ModelError(f"onnxruntime is not installed here ({e}); pip install 'edgeav[runtime]'") from None
    where = "serialized ONNX model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelError(f"{model}: ONNX model not found")
    unknown = [p for p in s.providers if p not in ORT_PROVIDERS]
    if unknown or not s.providers:
        raise ModelError(f"unknown ONNX Runtime provider(s) {unknown}; valid: {', '.join(ORT_PROVIDERS)}")
    if s.optimization not in _OPT_LEVELS:
        raise ModelError(f"unknown graph optimization level {s.optimization!r}; valid: {', '.join(_OPT_LEVELS)}")
    available = set(ort.get_available_providers())
    wanted = [ORT_PROVIDERS[p] for p in s.providers]
    missing = [p for p, full in zip(s.providers, wanted) if full not in available]
    if missing:
        raise DeviceError(
            f"ONNX Runtime execution provider(s) {missing} requested but not available here "
            f"(available: {', '.join(sorted(available))}); no fallback is made"
        )
    opts = ort.SessionOptions()
    intra = s.intra_op_threads if s.intra_op_threads is not None else onnxruntime_threads()  # the process's plan
    opts.intra_op_num_threads = free_cores() if intra is None else int(intra)
    opts.inter_op_num_threads = int(s.inter_op_threads)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[s.optimization])
    opts.log_severity_level = int(s.log_severity)
    if not s.allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = [
        (full, {"device_id": int(s.device_id)}) if full != "CPUExecutionProvider" else full for full in wanted
    ]
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
        raise ModelError(f"{where}: ONNX Runtime cannot load it: {e}") from None
    active = sess.get_providers()
    inactive = [full for full in wanted if full not in active]
    if inactive:  # ORT can drop a provider at session creation (missing CUDA libraries): refuse, loudly
        raise DeviceError(f"ONNX Runtime did not activate {inactive} (active: {active}); no fallback is made")
    log.debug(
        "ONNX Runtime session on %s: %s, %d intra-op threads, optimization %s",
        where,
        ", ".join(active),
        opts.intra_op_num_threads,
        s.optimization,
    )
    return sess


class Runner(Protocol):
    """What every stage runs a model through: feeds by input name in, outputs by name out."""

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...


class OnnxRunner:
    """An ONNX model in ONNX Runtime behind `Runner`: takes the model's inputs from `feeds` (extra keys ignored, a
    missing one is a ModelError) and returns `outputs` (default: all of the model's) as float arrays."""

    def __init__(self, session: Any, outputs: Sequence[str] | None = None, name: str = "onnx") -> None:
        self.session = session
        self.name = name
        self.input_names = [i.name for i in session.get_inputs()]
        model_outputs = [o.name for o in session.get_outputs()]
        unknown = [o for o in outputs or () if o not in model_outputs]
        if unknown:
            raise ModelError(f"{name}: no output(s) {unknown}; the model gives {model_outputs}")
        self.output_names = list(outputs) if outputs else model_outputs

    @classmethod
    def open(
        cls,
        model: str | Path | bytes,
        outputs: Sequence[str] | None = None,
        settings: SessionSettings | None = None,
        **overrides: Any,
    ) -> OnnxRunner:
        name = "serialized model" if isinstance(model, bytes) else Path(model).name
        return cls(create_session(model, settings, **overrides), outputs, name)

    @property
    def static_batch(self) -> int | None:
        """The first input's batch size when fixed in the graph, else None (a symbolic axis takes any batch)."""
        shape = self.session.get_inputs()[0].shape
        dim = shape[0] if shape else 1
        return dim if isinstance(dim, int) and dim > 0 else None

    def feed(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """The model's inputs picked from `feeds` (what `run` passes to ONNX Runtime)."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ModelError(f"{self.name}: feeds lack input(s) {missing}; they have {sorted(feeds)}")
        return {n: feeds[n] for n in self.input_names}

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, self.feed(feeds))
        return dict(zip(self.output_names, outs))


def run_all(runner: Runner, feeds: Iterable[Feeds]) -> list[dict[str, np.ndarray]]:
    """`runner.run` on each feed, in order."""
    return [runner.run(f) for f in feeds]


__all__ = ["ORT_PROVIDERS", "OnnxRunner", "Runner", "SessionSettings", "create_session", "free_cores", "run_all"]
