"""Dice-only fine-tuning loss (paper Eq. 2) made from the loss nnU-Net itself builds.

``nnUNetTrainer._build_loss`` returns Dice + cross-entropy (``DC_and_CE_loss``, or ``DC_and_BCE_loss`` for regions),
optionally wrapped in ``DeepSupervisionWrapper``. Setting the compound loss's ``weight_ce`` to 0 keeps everything else
exactly as nnU-Net configures it: ``MemoryEfficientSoftDiceLoss`` with the plans' ``batch_dice``, ``do_bg`` (False for
labels, True for regions), ``smooth=1e-5``, DDP-aware reduction, ignore-label masking, torch.compile of the Dice part,
and the deep-supervision weights 1, 1/2, 1/4, ... with the lowest output at 0 (1e-6 under DDP), normalised.

nnU-Net's soft Dice loss returns ``-Dice`` where the paper writes ``1 - Dice``: they differ by a constant, so the
gradients (and the training) are the same.
"""
from __future__ import annotations

from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn


def compound_loss_of(loss: nn.Module) -> nn.Module:
    """The Dice + cross-entropy module inside an optional ``DeepSupervisionWrapper``."""
    inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
    if not isinstance(inner, (DC_and_CE_loss, DC_and_BCE_loss)):
        raise TypeError(
            f"Expected nnU-Net's DC_and_CE_loss or DC_and_BCE_loss (optionally in DeepSupervisionWrapper), got "
            f"{type(inner).__name__}. Build the PolyCL loss from nnUNetTrainer._build_loss."
        )
    return inner


def dice_only(loss: nn.Module) -> nn.Module:
    """Turn the loss of ``nnUNetTrainer._build_loss`` into a Dice-only loss (in place) and return it.

    ``DC_and_CE_loss`` then skips the cross-entropy entirely; ``DC_and_BCE_loss`` multiplies its BCE term by 0.

    Raises:
        TypeError: ``loss`` is not built from nnU-Net's compound Dice + cross-entropy losses.
    """
    inner = compound_loss_of(loss)
    inner.weight_ce = 0
    inner.weight_dice = 1
    return loss
