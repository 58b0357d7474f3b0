"""Loss and metrics of one batch of embeddings, for the triplet strategies (S, O, M) and for SimCLR.

An objective receives the embeddings of the whole batch as the model produced them in one forward pass
(``[views * M, D]``) and returns the loss and, per implied triplet, cos(z, z+) and cos(z, z-). Losses and cosines are
computed in float32 even when the forward pass ran under autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnunet_polycl.losses import NTXentLoss, PolyCLTripletLoss, triplet_cosines


class TripletObjective:
    """PolyCL's Eq. 1 over (anchor, positive, negative) embeddings stacked as ``[3M, D]``."""

    views = 3

    def __init__(self, temperature: float):
        self.loss = PolyCLTripletLoss(temperature)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, cos_pos[M], cos_neg[M])``."""
        anchor, positive, negative = z.float().chunk(3)
        cos_pos, cos_neg = triplet_cosines(anchor, positive, negative)
        return self.loss(anchor, positive, negative), cos_pos.detach(), cos_neg.detach()


class SimCLRObjective:
    """NT-Xent over two views stacked as ``[2M, D]``.

    Metrics use the triplets NT-Xent implies: every view is an anchor, its other view the positive, and each of the
    2M - 2 other embeddings a negative. ``cos_neg`` repeats cos(z, z+) once per negative so that the triplet accuracy
    (share with cos+ > cos-) and the means are taken over all implied triplets.
    """

    views = 2

    def __init__(self, temperature: float):
        self.loss = NTXentLoss(temperature)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, cos_pos[2M * (2M - 2)], cos_neg[2M * (2M - 2)])``."""
        z = z.float()
        first, second = z.chunk(2)
        loss = self.loss(first, second)
        with torch.no_grad():
            m = first.shape[0]
            unit = F.normalize(z, dim=1)
            sim = unit @ unit.T
            partner = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
            cos_pos = sim[torch.arange(2 * m, device=z.device), partner]
            negative = torch.ones_like(sim, dtype=torch.bool)
            negative.fill_diagonal_(False)
            negative[torch.arange(2 * m, device=z.device), partner] = False
            cos_neg = sim[negative]
            cos_pos = cos_pos.repeat_interleave(negative.sum(dim=1))
        return loss, cos_pos, cos_neg
