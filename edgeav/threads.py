"""CPU threads of the process: torch intra-/inter-op threads, ONNX Runtime's, and OpenMP's idle threads.

    plan = plan_threads(cfg.threads)          # pure given cores, load and environment
    apply_threads(plan)                       # environment (before torch loads); logs one line
    edgeav.train.threads.apply_torch_threads(plan)   # then torch's counts (the CLI does both)

Left to the libraries' defaults, every torch process runs one OpenMP thread per core and GNU OpenMP's idle threads
spin (busy-wait) for a while after each parallel region. Two such processes on two cores keep descheduling each
other's threads in the middle of a barrier: the GRID recipe took 23.5 min instead of 1.2 beside a second torch
process, `edgeav bench`'s PyTorch p50 1,590 ms instead of 12.8 (bench/threads.py measures it). Here the thread
count defaults to the cores free at start and idle OpenMP threads sleep at once (OMP_WAIT_POLICY=PASSIVE).

GNU OpenMP (torch's bundled libgomp) reads its environment once, when torch loads it: `apply_threads` must run
before `import torch` to change the wait policy, which is why the CLI calls it before it imports a stage.
KMP_BLOCKTIME does nothing to libgomp; it is set for builds that use Intel's OpenMP. This module never imports torch
(the core imports no stage and no torch): torch's counts are set by `edgeav.train.threads.apply_torch_threads`,
which the CLI calls right after `apply_threads` through its dispatch table.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeav.schema.threads import ThreadsConfig

log = logging.getLogger(__name__)

# what makes idle OpenMP threads sleep at once: GNU OpenMP (OMP_WAIT_POLICY=PASSIVE sets its spin count to 0),
# Intel OpenMP (KMP_BLOCKTIME=0 ms)
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


@dataclass(frozen=True)
class ThreadPlan:
    """The threads a process runs with; None = the library's own default."""

    torch_intra: int | None
    torch_inter: int | None
    onnxruntime: int | None  # intra-op threads of ONNX Runtime sessions that do not set their own
    openmp_passive: bool
    cores_usable: int
    cores_free: int
    source: str  # where torch_intra came from: "cores free", "OMP_NUM_THREADS", "set", "library defaults"

    def describe(self) -> str:
        """One line for the log: 'threads: torch 2 (intra) 1 (inter), onnxruntime 2, OpenMP passive; ...'."""
        if self.torch_intra is None:
            head = "threads: library defaults (torch, onnxruntime one per core, OpenMP spinning)"
        else:
            head = (
                f"threads: torch {self.torch_intra} (intra) {self.torch_inter} (inter), onnxruntime "
                f"{self.onnxruntime}, OpenMP {'passive' if self.openmp_passive else 'spinning'} ({self.source})"
            )
        return f"{head}; cores free {self.cores_free} of {self.cores_usable}"


def _omp_num_threads(environ: Mapping[str, str]) -> int | None:
    raw = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def plan_threads(
    cfg: ThreadsConfig,
    *,
    cores_usable: int | None = None,
    load_1min: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> ThreadPlan:
    """The plan for a `ThreadsConfig` (intra_op "auto" | "default" | n, inter_op, openmp_passive). auto: the cores
    free shared by torchrun's processes on this machine (LOCAL_WORLD_SIZE), unless OMP_NUM_THREADS says. Pure when
    `cores_usable`, `load_1min` and `environ` are given; else they are read from this machine."""
    from edgeav.onnx_session import free_cores

    env = os.environ if environ is None else environ
    if cores_usable is None:
        cores_usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    free = free_cores(cores_usable, load_1min)  # load None: read now
    if cfg.intra_op == "default":
        return ThreadPlan(None, None, 0, False, cores_usable, free, "library defaults")
    if cfg.intra_op == "auto":
        from_env = _omp_num_threads(env)
        ranks = env.get("LOCAL_WORLD_SIZE", "1")  # torchrun's processes on this machine share the cores free
        ranks_here = int(ranks) if ranks.isdigit() and int(ranks) > 0 else 1
        intra, source = (from_env, "OMP_NUM_THREADS") if from_env else (max(1, free // ranks_here), "cores free")
    else:
        intra, source = int(cfg.intra_op), "set"
    return ThreadPlan(intra, int(cfg.inter_op), intra, bool(cfg.openmp_passive), cores_usable, free, source)


def openmp_environment(plan: ThreadPlan, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to `environ` for `plan` (those already set are kept: the user's choice wins)."""
    env = os.environ if environ is None else environ
    if plan.torch_intra is None or not plan.openmp_passive:
        return {}
    return {k: v for k, v in PASSIVE_ENV.items() if k not in env}


_applied: ThreadPlan | None = None


def apply_threads(
    plan: ThreadPlan, environ: MutableMapping[str, str] | None = None, level: int = logging.INFO
) -> ThreadPlan:
    """Set the OpenMP environment (effective only if torch is not loaded yet) and remember the plan for ONNX
    Runtime sessions (`onnxruntime_threads`); torch's counts are `edgeav.train.threads.apply_torch_threads`'s. Logs
    the plan once, at `level`."""
    global _applied
    env = os.environ if environ is None else environ
    late = "torch" in sys.modules
    added = openmp_environment(plan, env)
    env.update(added)
    if added and late:
        log.debug("threads: torch was loaded before %s was set; its OpenMP keeps its wait policy", ", ".join(added))
    _applied = plan
    log.log(level, "%s", plan.describe())
    return plan


def applied_plan() -> ThreadPlan | None:
    """The plan `apply_threads` set in this process, or None."""
    return _applied


def onnxruntime_threads() -> int | None:
    """Intra-op threads for an ONNX Runtime session that does not choose its own: the process plan's (0 = ONNX
    Runtime's default), or None when no plan was applied in this process."""
    return None if _applied is None else _applied.onnxruntime


__all__ = ["PASSIVE_ENV", "ThreadPlan", "apply_threads", "onnxruntime_threads", "openmp_environment", "plan_threads"]
