"""`edgeav analyze --engine ray`: the same per-file work on a Ray cluster, one actor per worker, each holding one
ONNX Runtime session (`worker.Analyzer`). Inputs are read by the actors from a path every node sees (a shared
folder); results come back to the driver, which writes them exactly as the local engine does.

An actor whose process dies (killed, out of memory, node lost) is restarted (`max_restarts=-1`) and the file it was
on is analyzed again (`max_task_retries=-1`): the job completes with the same output. `ray` is an optional extra
(`pip install 'edgeav[ray]'`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from edgeav.errors import ConfigError, EdgeAVError

log = logging.getLogger(__name__)


class _RayAnalyzer:
    def __init__(self, analyzer_kwargs: dict[str, Any]) -> None:
        from .worker import Analyzer

        self.analyzer = Analyzer(**analyzer_kwargs)

    def analyze(self, unit: dict[str, Any]) -> dict[str, Any]:
        return self.analyzer.analyze(unit)


def connect(address: str | None) -> Any:
    """ray.init on `address` (None: a cluster this machine already runs, else a local one)."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"--engine ray needs the ray package ({e}); pip install 'edgeav[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EdgeAVError(f"cannot reach the Ray cluster at {address or 'auto'}: {e}") from None
    return ray


def run_ray(
    units: list[dict[str, Any]], analyzer_kwargs: dict[str, Any], workers: int, address: str | None
) -> Iterator[dict[str, Any]]:
    """Results as they finish; at most two files in flight per actor."""
    ray = connect(address)
    actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_RayAnalyzer)
    actors = [actor_cls.remote(analyzer_kwargs) for _ in range(workers)]
    log.info("ray: %d actors on %s", workers, ray.cluster_resources())
    todo = iter(units)
    running: dict[Any, int] = {}  # object ref -> actor index
    for i, actor in enumerate(actors):
        for _ in range(2):
            u = next(todo, None)
            if u is not None:
                running[actor.analyze.remote(u)] = i
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i = running.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise EdgeAVError(f"ray: a worker failed for good: {str(e).splitlines()[0]}") from None
                yield res
                u = next(todo, None)
                if u is not None:
                    running[actors[i].analyze.remote(u)] = i
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


__all__ = ["connect", "run_ray"]
