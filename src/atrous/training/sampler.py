"""The order training reads its data in: a function of (seed, epoch) only, so a resumed run
reads exactly what the uninterrupted one would have."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation drawn from ``seed + epoch`` (as
    ``DistributedSampler``), padded to a multiple of ``world`` and sharded by ``rank``,
    starting at position ``start`` of this rank's shard (to resume mid-epoch)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm += perm[: self.per_rank * self.world - self.n]
        return iter(perm[self.rank :: self.world][self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start
