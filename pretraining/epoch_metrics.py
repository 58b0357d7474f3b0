"""An epoch's metrics, accumulated on the device without host synchronisation, read at sync points only.

Every step adds its loss share and metric sums to device tensors and folds "was this step's loss finite?" and "was
this step's input batch finite?" into the first non-finite step numbers (device scalars, infinity while all were
finite), so that a stop can say whether the data or the optimisation produced the non-finite loss. Reading them
(``.tolist()``) waits for the device, so the loop does it every :data:`SYNC_EVERY` steps and at the end of the epoch,
before anything is saved; in a multi-process run the sums are added up and the first non-finite steps are the minima
over the ranks, so every rank takes the same decision and rank 0 reports global numbers.
"""
from __future__ import annotations

import math

import torch

from nnunet_polycl.pretraining.distributed import Ranks, all_reduce_
from nnunet_polycl.pretraining.sharding import BatchShard

SYNC_EVERY = 50  # steps between two reads of the device metrics (finiteness check, loss shown by tqdm)


class EpochMetrics:
    """Running sums ``[loss * M, sum cos+, sum cos-, correct]`` on ``device``; host counters for items and triplets."""

    def __init__(self, device: torch.device, ranks: Ranks):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(4, dtype=dtype, device=device)
        self.first_bad = torch.full((2,), math.inf, dtype=dtype, device=device)  # [loss, input batch]
        self.ranks = ranks
        self.items = 0  # global batch items (triplets, or SimCLR slices) so far
        self.triplets = 0  # implied triplets of the global batches so far

    def add(self, step: int, share: torch.Tensor, sums: torch.Tensor, shard: BatchShard, triplets: int,
            batch: torch.Tensor) -> None:
        """Fold in one step (``share``: this rank's loss share, ``sums``: its metric sums, ``batch``: its input);
        no host sync."""
        self.sums[0] += share.detach().to(self.sums.dtype) * shard.size
        self.sums[1:] += sums.to(self.sums.dtype)
        finite = torch.stack([torch.isfinite(share.detach()).all(), torch.isfinite(batch).all()])
        bad = torch.where(finite, math.inf, float(step + 1))
        torch.minimum(self.first_bad, bad.to(self.sums.dtype), out=self.first_bad)
        self.items += shard.size
        self.triplets += triplets

    def first_non_finite_steps(self) -> tuple[int | None, int | None]:
        """1-based steps of the epoch's first non-finite loss and first input batch with a non-finite value on any
        rank, each None when there was none (a sync point: all ranks call it)."""
        loss, batch = all_reduce_(self.first_bad.clone(), self.ranks, op="min").tolist()
        return tuple(None if math.isinf(x) else int(x) for x in (loss, batch))

    def mean_loss(self) -> float:
        """Mean loss per item over the steps so far, all ranks (a sync point)."""
        return all_reduce_(self.sums[:1].clone(), self.ranks).item() / max(self.items, 1)

    def totals(self) -> dict[str, float]:
        """``loss``, ``cos_pos``, ``cos_neg``, ``accuracy`` of the epoch over all ranks (a sync point)."""
        loss, cos_pos, cos_neg, correct = all_reduce_(self.sums.clone(), self.ranks).tolist()
        triplets = max(self.triplets, 1)
        return {"loss": loss / max(self.items, 1), "cos_pos": cos_pos / triplets, "cos_neg": cos_neg / triplets,
                "accuracy": correct / triplets}
