"""Loss and metrics of one batch of embeddings, for the triplet strategies (S, O, M) and for SimCLR.

An objective receives the embeddings that this process's model produced in one forward pass (``[views * m, D]``
for its ``m`` rows of a global batch of M, see :mod:`.sharding`; in a single process m = M) and returns

- its share of the global batch's mean loss: the sum of the losses of its rows divided by the global count, so that
  the shares of all processes add up to the loss of the whole batch;
- metric sums over the triplets its rows imply, ``[sum cos(z, z+), sum cos(z, z-), count with cos+ > cos-]``, on the
  device (no host synchronisation); :meth:`implied_triplets` gives their global count.

Losses and cosines are computed in float32 even when the forward pass ran under autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnunet_polycl.losses import PolyCLTripletLoss, nt_xent_row_losses, triplet_cosines
from nnunet_polycl.pretraining.distributed import gather_rows
from nnunet_polycl.pretraining.sharding import BatchShard


class TripletObjective:
    """PolyCL's Eq. 1 over (anchor, positive, negative) embeddings stacked as ``[3m, D]``; t is fixed (1/M of the
    global batch by default), never the size of one process's rows."""

    views = 3

    def __init__(self, temperature: float):
        self.loss = PolyCLTripletLoss(temperature, reduction="sum")

    @staticmethod
    def implied_triplets(batch_size: int) -> int:
        return batch_size

    def __call__(self, z: torch.Tensor, shard: BatchShard) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss share, metric sums[3])``."""
        anchor, positive, negative = z.float().chunk(3)
        share = self.loss(anchor, positive, negative) / shard.size
        with torch.no_grad():
            cos_pos, cos_neg = triplet_cosines(anchor, positive, negative)
            sums = torch.stack([cos_pos.sum(), cos_neg.sum(), (cos_pos > cos_neg).sum().float()])
        return share, sums


class SimCLRObjective:
    """NT-Xent over two views stacked as ``[2m, D]``; the negatives are all other embeddings of the global batch
    (gathered from every process, with gradient).

    Metrics use the triplets NT-Xent implies: every view is an anchor, its other view the positive, and each of the
    2M - 2 other embeddings a negative.
    """

    views = 2

    def __init__(self, temperature: float):
        self.temperature = float(temperature)

    @staticmethod
    def implied_triplets(batch_size: int) -> int:
        return 2 * batch_size * (2 * batch_size - 2)

    def __call__(self, z: torch.Tensor, shard: BatchShard) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss share, metric sums[3])``."""
        first, second = z.float().chunk(2)
        everything = torch.cat([gather_rows(first, shard), gather_rows(second, shard)])  # [2M, D], global order
        size = shard.size
        own = torch.arange(shard.start, shard.stop, device=z.device)
        rows = torch.cat([own, own + size])
        share = nt_xent_row_losses(everything, rows, self.temperature).sum() / (2 * size)
        with torch.no_grad():
            unit = F.normalize(everything, dim=1)
            sim = unit[rows] @ unit.T  # [2m, 2M]
            partner = (rows + size) % (2 * size)
            columns = torch.arange(2 * size, device=z.device)[None, :]
            negative = (columns != rows[:, None]) & (columns != partner[:, None])
            cos_pos = sim.gather(1, partner[:, None])
            sums = torch.stack([cos_pos.sum() * (2 * size - 2), (sim * negative).sum(),
                                ((cos_pos > sim) & negative).sum().float()])
        return share, sums
