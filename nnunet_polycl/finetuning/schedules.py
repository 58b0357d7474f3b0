"""Training schedules of the fine-tuning trainers, one class per schedule (nnU-Net's variant convention).

- no suffix: nnU-Net's default (1000 epochs x 250 iterations, SGD lr 1e-2, poly decay), from ``nnUNetTrainerPolyCL``;
- ``_paper``: the paper's fine-tuning schedule;
- ``_demo``: CPU-sized run for the README demo;
- ``_smoke``: the tests' run.

The demo and smoke runs switch off mirroring at validation / prediction time (test-time augmentation), the slow part
on a CPU; training augmentation is unchanged.
"""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from nnunet_polycl.finetuning.trainer import DEFAULT_DEVICE, nnUNetTrainerPolyCL

PAPER_EPOCHS = 100
PAPER_LR = 1e-3
PAPER_RESTART_EVERY_EPOCHS = 10
DEMO_EPOCHS, DEMO_ITERATIONS, DEMO_VAL_ITERATIONS = 5, 3, 1
SMOKE_EPOCHS, SMOKE_ITERATIONS, SMOKE_VAL_ITERATIONS = 2, 3, 2


def without_test_time_mirroring(trainer: nnUNetTrainerPolyCL, settings: tuple) -> tuple:
    """Disable mirroring at inference (stored in the checkpoint, so ``nnUNetv2_predict`` follows); keep training DA."""
    trainer.inference_allowed_mirroring_axes = None
    return settings


class nnUNetTrainerPolyCL_paper(nnUNetTrainerPolyCL):
    """Paper schedule: 100 epochs, Adam (lr 1e-3, no weight decay), cosine annealing restarting every 10 epochs.

    nnU-Net steps the scheduler once per epoch with the epoch number (``lr_scheduler.step(current_epoch)``);
    ``CosineAnnealingWarmRestarts.step(epoch)`` computes the rate from that number alone, so a resumed run (``--c``)
    continues on the same curve. Batch size and iterations per epoch stay those of the plans / nnU-Net.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = PAPER_EPOCHS
        self.initial_lr = PAPER_LR
        self.weight_decay = 0.0

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingWarmRestarts(optimizer, T_0=PAPER_RESTART_EVERY_EPOCHS)


class nnUNetTrainerPolyCL_demo(nnUNetTrainerPolyCL):
    """CPU-sized demo run: 5 epochs x 3 iterations, 1 validation iteration, no test-time mirroring (~1 min on 2 cores)."""

    short_run = (DEMO_EPOCHS, DEMO_ITERATIONS, DEMO_VAL_ITERATIONS)  # epochs, iterations, validation iterations

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.short_run

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        return without_test_time_mirroring(self, super().configure_rotation_dummyDA_mirroring_and_inital_patch_size())


class nnUNetTrainerPolyCL_smoke(nnUNetTrainerPolyCL_demo):
    """Test-sized run: 2 epochs x 3 iterations, 2 validation iterations, no test-time mirroring."""

    short_run = (SMOKE_EPOCHS, SMOKE_ITERATIONS, SMOKE_VAL_ITERATIONS)
