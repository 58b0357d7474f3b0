"""Layer-wise learning rates on nnU-Net's schedulers: the encoder at a fixed multiple of the decoder's rate.

nnU-Net's schedulers (``PolyLRScheduler``, ``Lin_incr_offset_LRScheduler``, ...) set one rate for every parameter
group. Here the optimiser gets two groups, the rest of the network first (nnU-Net logs and plots
``param_groups[0]``'s rate) and the encoder second, each with its scale under :data:`LR_SCALE_KEY`; after every step
of the schedule's own scheduler :class:`ScaledGroups` multiplies each group's rate by its scale. The curve is the
schedule's, unchanged, for every group; only its height differs. The scale is a key of the parameter group, so it is
saved with the optimiser in nnU-Net's checkpoint and survives ``--c``.
"""
from __future__ import annotations

import torch

LR_SCALE_KEY = "polycl_lr_scale"


def scaled_parameter_groups(network: torch.nn.Module, encoder: torch.nn.Module, encoder_scale: float) -> list[dict]:
    """Two parameter groups of ``network``: everything but ``encoder`` at scale 1, then ``encoder`` at
    ``encoder_scale``."""
    encoder_ids = {id(p) for p in encoder.parameters()}
    rest = [p for p in network.parameters() if id(p) not in encoder_ids]
    return [{"params": rest, LR_SCALE_KEY: 1.0},
            {"params": list(encoder.parameters()), LR_SCALE_KEY: encoder_scale}]


class ScaledGroups:
    """Steps ``scheduler`` (one rate for all groups), then multiplies each group's rate by its ``polycl_lr_scale``.

    The wrapped schedulers compute the rate from the epoch number and their own start rate, never from the group's
    current rate, so the scaling does not compound over steps.
    """

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self._scale()

    def step(self, epoch: int | None = None) -> None:
        self.scheduler.step(epoch)
        self._scale()

    def _scale(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= group.get(LR_SCALE_KEY, 1.0)
