"""`threads:` section: CPU threads of torch and ONNX Runtime, and whether idle OpenMP threads spin.

Applied once per process by `edgeav train`, `edgeav eval` and `edgeav bench` (`edgeav.threads`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgeav.schema.base import Section

ThreadCount = Annotated[int, Field(ge=1, le=1024)] | Literal["auto", "default"]


class ThreadsConfig(Section):
    intra_op: ThreadCount = Field(
        "auto",
        description=(
            "Threads per operator for torch and for ONNX Runtime sessions that do not set their own, threads. "
            "auto: $OMP_NUM_THREADS when set, else the cores free at start (this process's CPU affinity less "
            "the 1-minute load of other processes, at least 1); n: exactly n; default: each library's own "
            "(one per core, idle OpenMP threads spinning: several jobs on one machine then slow each other "
            "20-50x)."
        ),
    )
    inter_op: int = Field(
        1, ge=1, le=1024, description="torch inter-op threads (independent operators run in parallel), threads."
    )
    openmp_passive: bool = Field(
        True,
        description=(
            "Idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE for torch's GNU "
            "OpenMP, KMP_BLOCKTIME=0 for Intel's), set in the environment before torch loads; a value already "
            "in the environment is kept. Ignored when intra_op is default."
        ),
    )
