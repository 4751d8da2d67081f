"""Multi-process training with torchrun: process group setup and deterministic data sharding.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process.
CPU runs use gloo, GPU runs nccl with one device per process.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        # Importing torch._dynamo while a process group exists makes it hold that group for
        # good: destroy_process_group then leaves gloo's threads running into interpreter
        # shutdown, where a rank can abort ("terminate called without an active exception").
        # DDP and the optimizers import it lazily, so import it before the group exists.
        importlib.import_module("torch._dynamo")

        # A long timeout: rank 0 may encode a whole dataset while the others wait at a barrier.
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2)
        )
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """All-reduce-mean the gradients of a module not wrapped in DDP, in one flat collective.

    A parameter without a gradient counts as zeros, so every rank reduces the same buffer.
    """
    if world_size <= 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average logged scalars over all processes (for the progress bar and the log)."""
    if not dist.is_initialized() or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(values, tensor.tolist(), strict=True))


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of all randomness drawn at one training step by one process.

    Reseeding every step makes a run a pure function of (seed, step): resuming needs no saved
    RNG state, and resuming with another process count changes nothing but the sharding.
    """
    digest = hashlib.blake2b(f"bld:{seed}:{rank}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class StepBatches:
    """Which dataset indices this process trains on at each step, as a pure function of step.

    Each epoch is a permutation of the dataset from a torch.Generator seeded by (seed, epoch).
    Process `rank` of `world` takes every world-th element (the remainder is dropped, a different
    one each epoch), and the per-process streams of consecutive epochs are cut into batches, so
    a batch may span an epoch boundary and tiny datasets work with any batch size.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < world_size:
            raise ValueError(
                f"a dataset of {size} items cannot be sharded over {world_size} processes"
            )
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = size // world_size
        self._epoch, self._shard = -1, None

    def shard(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, -1, epoch))
            order = torch.randperm(self.size, generator=g)
            self._epoch = epoch
            self._shard = order[self.rank : self.per_rank * self.world_size : self.world_size]
        return self._shard

    def indices(self, step: int) -> torch.Tensor:
        start, parts = step * self.batch_size, []
        while sum(len(p) for p in parts) < self.batch_size:
            epoch, offset = divmod(start, self.per_rank)
            take = min(self.per_rank - offset, self.batch_size - sum(len(p) for p in parts))
            parts.append(self.shard(epoch)[offset : offset + take])
            start += take
        return torch.cat(parts)

    def batches(self, start_step: int, end_step: int):
        """A batch sampler (lists of indices) for a DataLoader, from start_step on."""
        for step in range(start_step, end_step):
            yield self.indices(step).tolist()


__all__ = [
    "DistInfo",
    "setup",
    "cleanup",
    "barrier",
    "average_gradients",
    "mean_across_ranks",
    "step_seed",
    "StepBatches",
]
