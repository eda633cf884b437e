"""`edgeav bench BUNDLE [--json]`: latency and throughput of a bundle's models on this machine.

Backends measured (each where the bundle and this machine allow; a skipped one says why):

- `pytorch_fp32`: PyTorch eager, from the checkpoint the bundle was exported from (when torch is installed and the
  checkpoint is still at the path the manifest names, with the same sha256);
- `ort_fp32`, `ort_fp16`, `ort_int8`: ONNX Runtime (CPU execution provider) on the bundle's ONNX files.

Latency is measured at batch 1, interleaved: every backend runs a block of iterations in turn, round after round, so
a change in the machine's load hits all of them alike; p50 and p95 over all iterations, in ms. Throughput is
windows per second at the best batch size tried (a static-shape model only takes its exported batch). Peak memory
is the peak resident set of a separate process that loads the model and runs it (interpreter and libraries
included), and the part of it the model adds. Sizes are the files' bytes on disk.

The target this reports on: ONNX Runtime INT8 p50 <= 0.5 x ONNX Runtime FP32 p50 in the same run
(`int8_vs_fp32_p50_ratio`, `target_met`).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeav.errors import BundleError
from edgeav.onnx_session import OnnxRunner
from edgeav.result import CommandResult
from edgeav.threads import onnxruntime_threads

if TYPE_CHECKING:
    from edgeav.contract import InputContract

log = logging.getLogger(__name__)

TARGET_RATIO = 0.5
ORT_ROLES = {"ort_fp32": "model_fp32", "ort_fp16": "model_fp16", "ort_int8": "model_int8"}
BATCH_CANDIDATES = (1, 2, 4, 8, 16)


@dataclass
class BenchSettings:
    warmup: int = 5  # iterations before timing, per backend
    rounds: int = 6  # interleaved rounds
    iters_per_round: int = 10  # batch-1 iterations per backend per round
    throughput_iters: int = 10  # iterations per batch size (at most)
    throughput_budget_s: float = 1.0  # and at most this long per batch size (at least one iteration)
    threads: int | None = None  # None: the process's thread plan (edgeav.threads); 0: the libraries' defaults
    memory_probe: bool = True


@dataclass
class _Runner:
    name: str
    precision: str
    make: Callable[[int], Callable[[], Any]]  # batch -> zero-arg callable running one inference
    batches: list[int]
    size_bytes: int | None = None
    note: str = ""
    times_ns: list[int] = field(default_factory=list)


def _inputs(contract: InputContract, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = contract.shapes(batch)
    return {
        "audio": (0.1 * rng.standard_normal(shapes["audio"])).astype(np.float32),  # (B, T)
        "image": rng.integers(0, 256, shapes["image"], dtype=np.uint8),  # (B, 3, H, W)
        "mask": np.ones(shapes["mask"], np.float32),
    }  # (B, 2)


def _ort_runner(name: str, path: Path, contract: InputContract, threads: int) -> _Runner:
    # threads 0: ONNX Runtime's default (one per core); idle worker threads must not spin after each run, or they would steal the
    # cores from the next backend in turn
    runner = OnnxRunner.open(path, intra_op_threads=threads, allow_spinning=False)
    static = runner.static_batch

    def make(batch: int) -> Callable[[], Any]:
        feeds = runner.feed(_inputs(contract, batch))
        return lambda: runner.run(feeds)

    batches = [static] if static else list(BATCH_CANDIDATES)
    note = f"static batch {static}: export with --dynamic-batch to try larger batches" if static else ""
    return _Runner(name, name.split("_")[1], make, batches, path.stat().st_size, note)


def _load_source_model(info: Any) -> tuple[Any, str]:
    """(model, "") or (None, reason) for the checkpoint the bundle came from."""
    src = (info.manifest.extra or {}).get("source_checkpoint") or {}
    path = src.get("path")
    if not path:
        return None, "the manifest names no source checkpoint"
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch is not installed here"
    from edgeav.manifest import sha256_file

    p = Path(path)
    if not p.is_file():
        return None, f"checkpoint {p} not found here"
    if src.get("sha256") and sha256_file(p) != src["sha256"]:
        return None, f"checkpoint {p} changed since the export (sha256 differs)"
    from edgeav.train.models import load_checkpoint

    model, _ = load_checkpoint(p)
    return model, ""


def _torch_runner(model: Any, contract: InputContract, threads: int) -> _Runner:
    import torch

    if threads:
        torch.set_num_threads(threads)
    model.eval()

    def make(batch: int) -> Callable[[], Any]:
        f = _inputs(contract, batch)
        a, i, m = (torch.from_numpy(f["audio"]), torch.from_numpy(f["image"]), torch.from_numpy(f["mask"]))

        def run() -> Any:
            with torch.inference_mode():
                return model(a, i, m)

        return run

    return _Runner("pytorch_fp32", "fp32", make, list(BATCH_CANDIDATES))


def _percentile_ms(times_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(times_ns, dtype=np.float64), q) / 1e6)


def _time_latency(runners: list[_Runner], s: BenchSettings) -> None:
    calls = {r.name: r.make(1) for r in runners}
    for r in runners:
        for _ in range(s.warmup):
            calls[r.name]()
    for _ in range(s.rounds):
        for r in runners:
            fn = calls[r.name]
            for _ in range(s.iters_per_round):
                t = time.perf_counter_ns()
                fn()
                r.times_ns.append(time.perf_counter_ns() - t)


def _throughput(r: _Runner, s: BenchSettings) -> dict[str, Any]:
    per_batch: dict[int, float] = {}
    for b in r.batches:
        fn = r.make(b)
        fn()
        t = time.perf_counter_ns()
        n = 0
        while n < s.throughput_iters and (n == 0 or time.perf_counter_ns() - t < s.throughput_budget_s * 1e9):
            fn()
            n += 1
        per_batch[b] = b * n / ((time.perf_counter_ns() - t) / 1e9)
    best = max(per_batch, key=per_batch.__getitem__)
    return {
        "throughput_per_s": round(per_batch[best], 2),
        "best_batch": best,
        "throughput_by_batch": {str(k): round(v, 2) for k, v in per_batch.items()},
    }


# ------------------------------------------------------------------------------------------- peak memory


def _status_mib(key: str) -> float:
    """A /proc/self/status memory field (VmRSS: resident now, VmHWM: peak resident of this process image) in MiB.
    Not getrusage's ru_maxrss: that one carries the parent's peak over fork + exec."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")  # pragma: no cover - Linux only


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _memory_child(kind: str, path: str, contract_json: str, threads: int, queue: Any) -> None:
    from edgeav.contract import InputContract

    contract = InputContract.model_validate_json(contract_json)
    try:
        if kind == "torch":
            from edgeav.train.models import load_checkpoint

            base = _rss_mib()
            model, _ = load_checkpoint(path)
            run = _torch_runner(model, contract, threads).make(1)
        else:
            import onnxruntime  # noqa: F401

            base = _rss_mib()
            run = _ort_runner("ort_x", Path(path), contract, threads).make(1)
        for _ in range(5):
            run()
        peak = _status_mib("VmHWM")
        queue.put({"peak_rss_mib": round(peak, 1), "model_rss_mib": round(_rss_mib() - base, 1)})
    except Exception as e:  # noqa: BLE001 - reported to the parent as a reason
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _memory(kind: str, path: Path, contract: InputContract, threads: int, timeout_s: float = 300.0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(kind, str(path), contract.model_dump_json(), threads, q))
    p.start()
    try:
        out = q.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty: the child died or hung
        out = {"error": f"memory probe gave no answer in {timeout_s:.0f} s (exit code {p.exitcode})"}
    p.join(timeout=10)
    if p.is_alive():
        p.kill()
    return out


# ---------------------------------------------------------------------------------------------- the bench


def run_bench(bundle: str | Path, settings: BenchSettings | None = None) -> dict[str, Any]:
    from edgeav.bundle import verify_bundle

    s = settings or BenchSettings()
    # every backend with the same count: the plan's ONNX Runtime threads (torch's were set with it), 0 without one
    threads = s.threads if s.threads is not None else (onnxruntime_threads() or 0)
    info = verify_bundle(bundle)
    contract = info.manifest.contract
    runners: list[_Runner] = []
    skipped: dict[str, str] = {}
    model, reason = _load_source_model(info)
    if model is not None:
        runners.append(_torch_runner(model, contract, threads))
    else:
        skipped["pytorch_fp32"] = reason
    for name, role in ORT_ROLES.items():
        if role in info.files:
            runners.append(_ort_runner(name, info.files[role], contract, threads))
        elif name != "ort_fp16":
            skipped[name] = f"the bundle has no {role}"
    if not any(r.name.startswith("ort_") for r in runners):
        raise BundleError(f"{info.path}: no ONNX model to bench")
    log.info(
        "benchmarking %s: %s (%d rounds x %d iterations, interleaved)",
        info.path.name,
        ", ".join(r.name for r in runners),
        s.rounds,
        s.iters_per_round,
    )
    _time_latency(runners, s)
    backends: dict[str, Any] = {}
    for r in runners:
        d: dict[str, Any] = {
            "precision": r.precision,
            "p50_ms": round(_percentile_ms(r.times_ns, 50), 3),
            "p95_ms": round(_percentile_ms(r.times_ns, 95), 3),
            "mean_ms": round(float(np.mean(r.times_ns)) / 1e6, 3),
            "n": len(r.times_ns),
        }
        d.update(_throughput(r, s))
        if r.size_bytes is not None:
            d["size_bytes"] = r.size_bytes
            d["size_mib"] = round(r.size_bytes / 2**20, 3)
        if r.note:
            d["note"] = r.note
        backends[r.name] = d
    if s.memory_probe:
        for r in runners:
            if r.name == "pytorch_fp32":
                src = info.manifest.extra["source_checkpoint"]["path"]
                backends[r.name].update(_memory("torch", Path(src), contract, threads))
            else:
                backends[r.name].update(_memory("ort", info.files[ORT_ROLES[r.name]], contract, threads))
    for name, why in skipped.items():
        backends[name] = {"skipped": why}
    if model is not None:
        src = Path(info.manifest.extra["source_checkpoint"]["path"])
        backends["pytorch_fp32"]["size_bytes"] = src.stat().st_size
        backends["pytorch_fp32"]["size_mib"] = round(src.stat().st_size / 2**20, 3)
        backends["pytorch_fp32"]["note"] = "size: the checkpoint file (weights + optimizer state when saved)"
    ratio = None
    if "p50_ms" in backends.get("ort_int8", {}) and "p50_ms" in backends.get("ort_fp32", {}):
        ratio = round(backends["ort_int8"]["p50_ms"] / backends["ort_fp32"]["p50_ms"], 4)
    metrics = info.manifest.metrics or {}
    return {
        "bundle": str(info.path),
        "profile": info.profile_name,
        "model": (info.manifest.arch or {}).get("name"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": threads or "default",
        },
        "settings": {
            "warmup": s.warmup,
            "rounds": s.rounds,
            "iters_per_round": s.iters_per_round,
            "throughput_iters": s.throughput_iters,
            "throughput_budget_s": s.throughput_budget_s,
            "interleaved": True,
            "ort_thread_spinning": False,
        },
        "backends": backends,
        "int8_vs_fp32_p50_ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": None if ratio is None else ratio <= TARGET_RATIO,
        "accuracy": {k: metrics[k].get("accuracy") for k in ("fp32", "int8") if isinstance(metrics.get(k), dict)},
    }


def one_line(r: dict[str, Any]) -> str:
    b = r["backends"]
    parts = []
    for name in ("pytorch_fp32", "ort_fp32", "ort_fp16", "ort_int8"):
        d = b.get(name)
        if d is None:
            continue
        if "skipped" in d:
            parts.append(f"{name} skipped ({d['skipped']})")
            continue
        size = f", {d['size_mib']:.2f} MiB" if "size_mib" in d else ""
        mem = f", peak RSS {d['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in d else ""
        parts.append(
            f"{name} p50 {d['p50_ms']:.2f} ms p95 {d['p95_ms']:.2f} ms, {d['throughput_per_s']:.1f}/s at "
            f"batch {d['best_batch']}{size}{mem}"
        )
    if r["int8_vs_fp32_p50_ratio"] is not None:
        parts.append(
            f"INT8/FP32 p50 ratio {r['int8_vs_fp32_p50_ratio']:.2f} (target <= {r['target_ratio']:g}: "
            f"{'met' if r['target_met'] else 'NOT met'})"
        )
    return "; ".join(parts)


def cmd_bench(args: argparse.Namespace) -> CommandResult:
    result = run_bench(args.bundle)
    return CommandResult(result, one_line(result))


__all__ = ["BenchSettings", "TARGET_RATIO", "cmd_bench", "one_line", "run_bench"]
