"""Multi-process training on PyTorch's own engine: `torchrun --nproc_per_node=N -m genzoo train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we use DDP with gloo on CPU and NCCL on CUDA,
a `DistributedSampler` for the data order, and rank-0-only I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flags: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise OR of a small flag tensor over ranks, so every rank takes the same decision."""
    if info.enabled:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def params_in_sync(model: nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (checked at the end of a run)."""
    if not info.enabled:
        return True
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])  # on the device (NCCL)
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


class LossModule(nn.Module):
    """Routes `forward(batch, phase)` to `model.loss`, so DDP's hooks see every loss computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, phase: str):
        return self.model.loss(batch, phase)
