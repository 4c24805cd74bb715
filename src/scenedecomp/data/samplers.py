"""The order of the data: samplers whose order is a pure function of the seed and the epoch, sharded by rank."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffles ``num_items`` indices in an order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch. :meth:`resume_at` makes the next iteration start
    after ``consumed_batches`` batches of ``batch_size``; :meth:`batch_indices` returns the dataset
    indices of any batch, so a failing batch can be named after the fact.

    Under data parallelism (:meth:`set_shard`, called once the trainer knows its rank) rank ``r`` of ``W``
    takes every ``W``-th index of the epoch's order starting at ``r``, cut to ``num_items // W`` so that
    every rank runs the same number of steps; ``batch_size`` and the resume position are per rank.
    """

    def __init__(self, num_items: int, seed: int, batch_size: int):
        self.num_items, self.seed, self.batch_size = int(num_items), int(seed), int(batch_size)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._skip = 0

    def set_shard(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch`` (all of them when there is one rank)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        full = torch.randperm(self.num_items, generator=g)
        return full[self.rank::self.world_size][:len(self)] if self.world_size > 1 else full

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed_batches: int) -> None:
        self.epoch = int(epoch)
        self._skip = int(consumed_batches) * self.batch_size

    def batch_indices(self, epoch: int, batch_idx: int) -> list[int]:
        start = batch_idx * self.batch_size
        return self.order(epoch)[start:start + self.batch_size].tolist()

    def __iter__(self):
        skip, self._skip = self._skip, 0
        yield from self.order(self.epoch)[skip:].tolist()

    def __len__(self) -> int:
        return self.num_items // self.world_size


class ShardSampler(Sampler[int]):
    """Evaluation order ``0..num_items-1`` split across ranks without padding: rank ``r`` of ``W`` reads
    indices ``r, r+W, r+2W, ...``, so every image is evaluated exactly once (ranks may differ by one
    image), and sums of per-image metrics over the ranks equal the single-process sums."""

    def __init__(self, num_items: int):
        self.num_items = int(num_items)
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def __iter__(self):
        yield from range(self.rank, self.num_items, self.world_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))
