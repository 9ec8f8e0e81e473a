"""Data-parallel training under ``torchrun`` (DESIGN 10).

``torchrun --nproc_per_node N -m napari_volsr.cli train ...`` starts N copies of the
trainer. Each joins one process group (NCCL on GPUs, gloo on CPUs), trains a
DistributedDataParallel replica on its own batches (drawn from ``(seed, step, rank)``)
and only rank 0 validates and writes checkpoints and the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Replica:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, reports and saves."""
        return self.rank == 0


def from_environment() -> Replica | None:
    """The replica torchrun describes in the environment; None outside a multi-process job."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Replica(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(replica: Replica, device: torch.device) -> torch.device:
    """Join the process group; return this replica's device (one GPU per process)."""
    if device.type == "cuda":
        device = torch.device("cuda", replica.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(module: torch.nn.Module, device: torch.device):
    """DistributedDataParallel around ``module``: gradients are averaged over replicas."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def any_replica(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag True on every replica when it is True on one: stop together, no deadlock."""
    values = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def finish() -> None:
    """Leave the process group (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()
