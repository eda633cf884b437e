"""Distributed training set-up: which backend and device a rank uses, joining the process group, and collectives on
the right device.

    plan = dist_plan("auto", os.environ, cuda_available=torch.cuda.is_available(), cuda_count=...)
    info = init_distributed(plan)        # torch.cuda.set_device(local_rank) first on NCCL, then init_process_group
    loss, n = all_reduce_sum([loss, n], info)
    batches = rank_batches(len(dataset), epoch, seed, batch_size, info)   # this rank's share of the epoch
    net = wrap_ddp(net, info)                                             # DDP over the ranks (as is for one)

NCCL only moves CUDA tensors, and each rank must own its GPU before the group is joined: `torch.cuda.set_device(
local_rank)` is called before `init_process_group`, the model goes to `cuda:local_rank` and every tensor handed to a
collective is created there. gloo (CPU) takes CPU tensors. `dist_plan` is a pure function of the environment and the
GPUs present, so its choice is tested on machines without a GPU; nothing here has run on NCCL in this project (no
GPU on its machines): the gloo path runs in tests/test_train_ddp.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler

from edgeav.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistPlan:
    """What this process will do: `backend` None = not distributed; `device` "cpu" or "cuda:<local_rank>"."""

    backend: str | None
    device: str
    world: int = 1
    rank: int = 0
    local_rank: int = 0


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")  # where tensors handed to collectives live

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer (torchrun sets it)") from None


def dist_plan(device_name: str, env: Mapping[str, str], *, cuda_available: bool, cuda_count: int) -> DistPlan:
    """The backend and device of this rank for `train.device` (auto / cuda / cpu) under torchrun's environment
    (WORLD_SIZE, RANK, LOCAL_RANK): NCCL on `cuda:LOCAL_RANK` when the run uses CUDA, gloo on the CPU otherwise, no
    backend for a single process. ConfigError for cuda without a GPU, or a LOCAL_RANK this machine has no GPU for."""
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    use_cuda = device_name == "cuda" or (device_name == "auto" and cuda_available)
    if use_cuda and not cuda_available:
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
    if use_cuda and local_rank >= cuda_count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} but this machine has {cuda_count} CUDA device(s): start at most "
            f"{cuda_count} processes per node (torchrun --nproc_per_node={cuda_count})"
        )
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    backend = None if world <= 1 else ("nccl" if use_cuda else "gloo")
    return DistPlan(backend, device, world, rank, local_rank)


def plan_from_environment(device_name: str, env: Mapping[str, str]) -> DistPlan:
    available = torch.cuda.is_available()
    return dist_plan(
        device_name, env, cuda_available=available, cuda_count=torch.cuda.device_count() if available else 0
    )


def init_distributed(plan: DistPlan) -> DistInfo:
    """Own the rank's GPU (`torch.cuda.set_device`, before the group: NCCL binds to the current device), then join
    the process group when launched by torchrun (WORLD_SIZE > 1); only the device step for a single process."""
    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if plan.backend is None:
        return DistInfo(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend=plan.backend)
    info = DistInfo(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=plan.local_rank,
        backend=dist.get_backend(),
        device=device,
    )
    log.info("distributed: rank %d of %d (%s on %s)", info.rank, info.world, info.backend, device)
    return info


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> list[float]:
    """Sum `values` over the ranks (float64), through a tensor on the collective's device (CUDA for NCCL)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """The mean of `value` over the ranks (the global batch's loss from the ranks' means of equal shards)."""
    return all_reduce_sum([value], info)[0] / info.world if info.world > 1 else value


def barrier(info: DistInfo) -> None:
    """Wait for every rank (nothing for a single process)."""
    if info.world > 1:
        dist.barrier()


def rank_indices(n: int, epoch: int, seed: int, info: DistInfo) -> list[int]:
    """This rank's example indices for `epoch`: DistributedSampler's seeded permutation, also with one process
    (so a single-process run sees, batch by batch, the union of what the ranks see)."""
    sampler = DistributedSampler(
        range(n), num_replicas=info.world, rank=info.rank, shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def rank_batches(n: int, epoch: int, seed: int, batch_size: int, info: DistInfo) -> list[list[int]]:
    """This rank's batches of `epoch` (`batch_size / world` examples each) over n examples."""
    indices = rank_indices(n, epoch, seed, info)
    per_rank = batch_size // info.world
    out = [indices[j : j + per_rank] for j in range(0, len(indices), per_rank)]
    if len(out) > 1 and len(out[-1]) < 2:
        out = out[:-1]  # a last batch of one example: BatchNorm cannot normalize over it
    return out


def gather_shards(batches: list[list[int]], info: DistInfo) -> dict[str, Any]:
    """What each rank saw of an epoch (its batches' example indices), gathered: examples per rank, how many two
    ranks share (0 for a true partition) and how many all ranks saw together."""
    seen = [i for b in batches for i in b]
    gathered: list[Any] = [None] * info.world
    dist.all_gather_object(gathered, seen)
    sets = [set(g) for g in gathered]
    overlap = sum(len(sets[i] & sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets)))
    return {"examples_per_rank": [len(g) for g in gathered], "overlap": overlap, "union": len(set().union(*sets))}


def wrap_ddp(net: nn.Module, info: DistInfo) -> nn.Module:
    """`net` under DistributedDataParallel when there are several ranks (on the rank's GPU for NCCL), else as is."""
    if info.world <= 1:
        return net
    return nn.parallel.DistributedDataParallel(
        net, device_ids=[info.device.index] if info.device.type == "cuda" else None
    )


def unwrap_ddp(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


__all__ = [
    "DistInfo",
    "DistPlan",
    "all_reduce_sum",
    "barrier",
    "dist_plan",
    "gather_shards",
    "init_distributed",
    "mean_over_ranks",
    "plan_from_environment",
    "rank_batches",
    "rank_indices",
    "unwrap_ddp",
    "wrap_ddp",
]
