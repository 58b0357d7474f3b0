"""Contrastive losses: PolyCL's triplet loss (paper Eq. 1) and SimCLR's NT-Xent for the baseline.

Both are computed in float32 with autocast disabled, as cross-entropies over cosine-similarity logits, so that a
small temperature (PolyCL uses 1/M: logits up to M) never overflows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")


def _check_embeddings(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first_name, first = next(iter(shapes.items()))
    if len(first) != 2 or first[0] < 1:
        raise ValueError(f"{first_name} must have shape [M, D] with M >= 1; got {list(first)}.")
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(f"{name} must have the shape of {first_name} {list(first)}; got {list(shape)}.")


def _check_temperature(temperature: float | None, allow_none: bool) -> None:
    if temperature is None and allow_none:
        return
    if temperature is None or not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature must be a finite number > 0{' or None' if allow_none else ''}; "
                         f"got {temperature!r}.")


def triplet_cosines(z: Tensor, z_pos: Tensor, z_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities ``cos(z, z+)`` and ``cos(z, z-)`` per triplet, each of shape [M] (float32).

    Raises:
        ValueError: the three tensors are not all of the same shape [M, D].
    """
    _check_embeddings(z=z, z_pos=z_pos, z_neg=z_neg)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, z_pos, z_neg = z.float(), z_pos.float(), z_neg.float()
        return F.cosine_similarity(z, z_pos, dim=1), F.cosine_similarity(z, z_neg, dim=1)


class PolyCLTripletLoss(nn.Module):
    """PolyCL's contrastive loss over (anchor, positive, negative) embeddings, Eq. 1 of

    Moseley & Imran, "PolyCL: Context-Aware Contrastive Learning for Image Segmentation", ISBI 2024:

        L = -log( exp(sim(z, z+)/t) / (exp(sim(z, z+)/t) + exp(sim(z, z-)/t)) ),  sim = cosine similarity,

    averaged over the M triplets of a batch, with t = 1/M by default (as in the paper). Computed as a 2-way
    cross-entropy with target 0 over the logits [sim+, sim-]/t, which is finite for any M.

    Args:
        temperature: t; None (default) uses 1/M, M being the batch size of each call. Pass it explicitly when a call
            sees only part of a batch (one process's rows of a multi-process batch).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one loss per triplet, shape [M]).

    Raises:
        ValueError: temperature not > 0 or an unknown reduction (at construction); embeddings of different shapes, or
            not [M, D] (in forward).

    Example:
        >>> loss_fn = PolyCLTripletLoss()
        >>> loss = loss_fn(head(encoder(anchor)), head(encoder(positive)), head(encoder(negative)))
    """

    def __init__(self, temperature: float | None = None, reduction: str = "mean"):
        super().__init__()
        _check_temperature(temperature, allow_none=True)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}.")
        self.temperature = None if temperature is None else float(temperature)
        self.reduction = reduction

    def forward(self, z: Tensor, z_pos: Tensor, z_neg: Tensor) -> Tensor:
        """Loss (float32; scalar, or [M] for ``reduction="none"``) of embeddings of shape [M, D] each (anchor,
        positive, negative)."""
        cos_pos, cos_neg = triplet_cosines(z, z_pos, z_neg)
        temperature = 1.0 / z.shape[0] if self.temperature is None else self.temperature
        with torch.autocast(device_type=z.device.type, enabled=False):
            logits = torch.stack([cos_pos, cos_neg], dim=1) / temperature
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            return F.cross_entropy(logits, target, reduction=self.reduction)


class NTXentLoss(nn.Module):
    """SimCLR's normalised temperature-scaled cross-entropy over two views (the baseline of the PolyCL paper).

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020. For each of the
    2M embeddings the other view of the same image is the positive and the other 2M - 2 embeddings are negatives:

        L_i = -log( exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t) ),  averaged over all 2M embeddings.

    Args:
        temperature: t (default 0.5, as in SimCLR's small-batch experiments).

    Raises:
        ValueError: temperature not > 0; views of different shapes, not [M, D], or M < 2 (no negatives).
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        _check_temperature(temperature, allow_none=False)
        self.temperature = float(temperature)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Mean loss (scalar, float32) of two views of shape [M, D] each (row i of z1 and z2: the same image)."""
        _check_embeddings(z1=z1, z2=z2)
        m = z1.shape[0]
        if m < 2:
            raise ValueError(f"NT-Xent needs at least 2 pairs (the other pairs are the negatives); got M = {m}. "
                             f"Use a batch size >= 2 (drop a last batch of 1).")
        z = torch.cat([z1, z2])
        return nt_xent_row_losses(z, torch.arange(2 * m, device=z.device), self.temperature).mean()


def nt_xent_row_losses(z: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """NT-Xent losses [R] (float32) of the embeddings ``z[rows]`` against all of ``z``.

    ``z`` is [2M, D]: the first views of M images, then their second views (row i and row M + i: the same image);
    ``rows`` are indices into it (a process of a multi-process run passes its own rows and the gathered ``z``, so
    that every other image of the global batch is a negative). The mean over all 2M rows is :class:`NTXentLoss`.
    """
    two_m = z.shape[0]
    with torch.autocast(device_type=z.device.type, enabled=False):
        unit = F.normalize(z.float(), dim=1)
        logits = unit[rows] @ unit.T / temperature
        own = torch.arange(two_m, device=z.device)[None, :] == rows[:, None]
        logits = logits.masked_fill(own, float("-inf"))
        return F.cross_entropy(logits, (rows + two_m // 2) % two_m, reduction="none")
