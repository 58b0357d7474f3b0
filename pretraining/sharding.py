"""How one global batch is split across the processes of a multi-process (DDP) run.

The epoch's batches do not depend on the number of processes: :class:`~.slice_data.EpochBatchSampler` yields one
:class:`~.slice_data.BatchRequest` per global batch of M items, exactly as in a single-process run. Process ``r`` of
``W`` takes the contiguous rows ``[start, stop)`` of each global batch (:func:`shard_bounds`: sizes differ by at most
one, earlier ranks get the extra rows), so that the shards of all ranks, concatenated in rank order, are the global
batch. The loss of a global batch is the mean over all its items (each rank contributes the sum over its rows divided
by the global M), so the run optimises the same objective as one process with the same global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Sampler

from nnunet_polycl.pretraining.slice_data import BatchRequest, EpochBatchSampler


def shard_bounds(size: int, world_size: int) -> tuple[tuple[int, int], ...]:
    """``[start, stop)`` of every rank's rows of a batch of ``size`` items (contiguous, sizes differ by <= 1)."""
    base, extra = divmod(size, world_size)
    bounds, start = [], 0
    for rank in range(world_size):
        stop = start + base + (1 if rank < extra else 0)
        bounds.append((start, stop))
        start = stop
    return tuple(bounds)


@dataclass(frozen=True)
class BatchShard:
    """This process's rows ``[start, stop)`` of a global batch of ``size`` items; ``bounds`` holds every rank's."""

    rank: int
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, size: int, rank: int = 0, world_size: int = 1) -> BatchShard:
        return cls(rank, shard_bounds(size, world_size))

    @property
    def start(self) -> int:
        return self.bounds[self.rank][0]

    @property
    def stop(self) -> int:
        return self.bounds[self.rank][1]

    @property
    def size(self) -> int:
        """Items in the global batch (M)."""
        return self.bounds[-1][1]

    @property
    def world_size(self) -> int:
        return len(self.bounds)


class ShardedBatchSampler(Sampler):
    """Yields this rank's :class:`BatchRequest` shard of every global batch of ``batches`` (one per global batch)."""

    def __init__(self, batches: EpochBatchSampler, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def shard(self, number: int) -> BatchShard:
        """This rank's part of global batch ``number`` of the epoch."""
        start, stop = self.batches.bounds[number]
        return BatchShard.of(stop - start, self.rank, self.world_size)

    def __iter__(self):
        for request in self.batches:
            shard = self.shard(request.number)
            yield BatchRequest(request.epoch, request.number, request.rows[shard.start:shard.stop])


def smallest_batch(batches: EpochBatchSampler) -> int:
    """Items in the epoch's smallest batch (the last one, when the items do not fill whole batches)."""
    return min(stop - start for start, stop in batches.bounds)
