"""torch.distributed for training: start-up from torchrun's environment, rank/world, and the
loss averaged over processes. Used only when a process group exists; one process never
touches torch.distributed beyond asking whether it is initialized."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = [
    "distributed_session",
    "gather_skipped",
    "global_mean",
    "global_min",
    "rank_and_world",
    "training_device",
]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_device(device: str, rank: int = 0, world: int = 1) -> torch.device:
    """The device of this process: ``device`` (``"auto"``: CUDA where available, else CPU);
    under torchrun each process takes the GPU of its ``LOCAL_RANK``. Decided by
    :func:`atrous.inference.pipeline.resolve_device`, as every command's ``--device``: a
    device this machine cannot give is a one-line ValueError."""
    from atrous.inference.pipeline import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and world > 1:
        resolved = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")
    return resolved


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[bool]:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE > 1``):
    NCCL on GPUs, gloo on CPU; leave it on exit. Yields whether this call started it (a
    single process, or a group someone else initialized, is left alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield False
        return
    cuda = training_device(device, world=int(os.environ["WORLD_SIZE"])).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield True
    finally:
        dist.destroy_process_group()


def global_mean(value: torch.Tensor) -> float:
    """``value`` averaged over processes: what one process with the global batch would log,
    and the same verdict (e.g. non-finite loss) on every rank."""
    world = rank_and_world()[1]
    if world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world
    return float(value)


def global_min(value: int, device: torch.device | str = "cpu") -> int:
    """The smallest ``value`` over processes (``device``: where the process group's backend
    reduces, CUDA for NCCL); ``value`` itself without a process group."""
    if rank_and_world()[1] <= 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_skipped(skipped: dict[str, str]) -> dict[str, str]:
    """The bad samples every process skipped (each reads its own shard), merged; one
    process's own without a process group."""
    if rank_and_world()[1] <= 1:
        return dict(skipped)
    parts: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, dict(skipped))
    merged: dict[str, str] = {}
    for part in parts:
        for path, problem in (part or {}).items():
            merged.setdefault(path, problem)
    return merged
