"""Training schedules of the fine-tuning trainers, one class per schedule (nnU-Net's variant convention).

- no suffix: nnU-Net's default (1000 epochs x 250 iterations, SGD lr 1e-2, poly decay), from ``nnUNetTrainerPolyCL``;
- ``_paper``: the paper's fine-tuning protocol (batch 10, one epoch = one pass over the labelled slices, Adam, 100
  epochs, cosine annealing with warm restarts every 10 epochs);
- ``_demo``: CPU-sized run for the README demo (the paper's protocol with 12 epochs; progress.png every 6 epochs);
- ``_long``: twice the paper's training, 200 passes over the labelled slices, as 20 epochs of 10 passes with one
  cosine cycle (nnU-Net's fixed cost per epoch, validation included, is paid 20 times instead of 200);
- ``_short``: a quarter of ``_long``, 50 passes as 10 epochs of 5 passes with one cosine cycle (at k = 1 on the demo
  dataset 100-150 Adam steps; too short for the k = 1 baseline to stop improving there);
- ``_quick``: the demo's few-label schedule, ``_short``'s 50 passes at batch 4 instead of 10 (at k = 1 on the demo
  dataset 250-350 Adam steps, about 30 s on 2 CPU cores, and the baseline stops improving: the end of training);
- ``_smoke``: the tests' run (2 epochs x 3 iterations).

Each schedule provides the optimiser (``polycl_make_optimizer``) and the decay (``polycl_decay_scheduler``) that the
adaptation stages of :mod:`.adaptation` run on. The demo and smoke runs switch off mirroring at validation /
prediction time (test-time augmentation), the slow part on a CPU; training augmentation is unchanged.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from nnunet_polycl.finetuning.trainer import DEFAULT_DEVICE, nnUNetTrainerPolyCL

PAPER_EPOCHS = 100
PAPER_LR = 1e-3
PAPER_BATCH_SIZE = 10
PAPER_RESTART_EVERY_EPOCHS = 10
DEMO_EPOCHS = 12
LONG_EPOCHS = 20
LONG_PASSES_PER_EPOCH = 10  # 200 passes: at k = 1 the baseline still gains 0.06 Dice between 150 and 300 steps
SHORT_EPOCHS = 10
SHORT_PASSES_PER_EPOCH = 5  # 50 passes
QUICK_BATCH_SIZE = 4  # a step of batch 4 costs about a third of one of batch 10 on a CPU (36 vs 136 ms, 2 cores)
DEMO_PLOT_EVERY_EPOCHS = 6  # nnU-Net redraws progress.png every epoch: about 0.8 s on a CPU, a third of a demo epoch
# the epoch's pseudo Dice (progress.png, checkpoint_best) from at most this many of its validation batches: at k = 1 a
# pass over the validation slices is 25 batches of 4; forwarding 5 of them saved 3.6 s of a run's 56 s of epochs
DEMO_PSEUDO_DICE_BATCHES = 5
SMOKE_RUN = (2, 3, 2)  # epochs, iterations, validation iterations


def without_test_time_mirroring(trainer: nnUNetTrainerPolyCL, settings: tuple) -> tuple:
    """Disable mirroring at inference (stored in the checkpoint, so ``nnUNetv2_predict`` follows); keep training DA."""
    trainer.inference_allowed_mirroring_axes = None
    return settings


def pseudo_dice_batches(batches: int, used: int) -> set[int]:
    """Which of an epoch's ``batches`` validation batches go through the network: ``used`` of them, evenly spaced
    from the first (all when there are no more than ``used``)."""
    step = max(1, math.ceil(batches / used))
    return set(range(0, batches, step))


class CosineWarmRestartsFrom(CosineAnnealingWarmRestarts):
    """``CosineAnnealingWarmRestarts`` whose first cycle starts at epoch ``start_epoch``.

    nnU-Net steps the scheduler once per epoch with the epoch number (``lr_scheduler.step(current_epoch)``); the
    rate is computed from that number alone, so a resumed run (``--c``) continues on the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, restart_every: int, start_epoch: int = 0):
        self.start_epoch = start_epoch
        super().__init__(optimizer, T_0=restart_every)

    def step(self, epoch=None):
        super().step(None if epoch is None else max(0, epoch - self.start_epoch))


class nnUNetTrainerPolyCL_paper(nnUNetTrainerPolyCL):
    """Paper protocol: batch 10, epoch = one pass over the labelled slices, Adam 1e-3, 100 epochs, restarts every 10.

    Cosine annealing with warm restarts every 10 epochs, Dice loss. Iterations per epoch = ceil(slices of the labelled training cases / 10), validation likewise over the validation
    cases' slices (nnU-Net's loader still draws a random case, then a random slice, per sample: an epoch has as many
    batches as one pass needs, not every slice exactly once).
    """

    polycl_batch_size = PAPER_BATCH_SIZE
    polycl_epoch_is_one_pass = True
    polycl_optimizer_text = "Adam"
    polycl_lr_curve_text = f"cosine with warm restarts every {PAPER_RESTART_EVERY_EPOCHS} epochs"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = PAPER_EPOCHS
        self.initial_lr = PAPER_LR
        self.weight_decay = 0.0

    def polycl_make_optimizer(self, params, lr):
        return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)

    def polycl_decay_scheduler(self, optimizer, lr, start_epoch):
        return CosineWarmRestartsFrom(optimizer, PAPER_RESTART_EVERY_EPOCHS, start_epoch)


class nnUNetTrainerPolyCL_demo(nnUNetTrainerPolyCL_paper):
    """CPU demo: the paper's protocol with 12 instead of 100 epochs, one cosine cycle, no test-time mirroring.

    Batch 10, one epoch = one pass over the labelled slices, Adam lr 1e-3, Dice loss, as ``_paper``; the rate follows
    a single cosine from the start (of the decay) to the end of the run (a warm restart near the end of so short a run
    would undo its last epochs). progress.png is drawn every 6 epochs and at the last, not every epoch, and the
    epoch's pseudo Dice comes from 5 evenly spaced validation batches of the pass (:func:`pseudo_dice_batches`);
    every batch is still drawn, so the training (its random batches, its weights) is the same as with all of them.
    """

    polycl_lr_curve_text = "one cosine cycle from the start of the decay to the end of the run (no restart)"
    polycl_num_epochs = DEMO_EPOCHS  # the subclasses below change only this and the passes per epoch

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.polycl_num_epochs
        self._polycl_forwarded: set[int] = set()  # this epoch's validation batches that go through the network
        self._polycl_val_batch = 0

    def polycl_decay_scheduler(self, optimizer, lr, start_epoch):
        return CosineWarmRestartsFrom(optimizer, max(1, self.num_epochs - start_epoch), start_epoch)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        return without_test_time_mirroring(self, super().configure_rotation_dummyDA_mirroring_and_inital_patch_size())

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._polycl_forwarded = pseudo_dice_batches(self.num_val_iterations_per_epoch, DEMO_PSEUDO_DICE_BATCHES)
        self._polycl_val_batch = 0

    def validation_step(self, batch: dict) -> dict | None:
        """nnU-Net's step on the batches of :func:`pseudo_dice_batches`; None for the others (drawn, not used)."""
        forward = self._polycl_val_batch in self._polycl_forwarded
        self._polycl_val_batch += 1
        return super().validation_step(batch) if forward else None

    def on_validation_epoch_end(self, val_outputs: list[dict | None]) -> None:
        super().on_validation_epoch_end([o for o in val_outputs if o is not None])

    def on_epoch_end(self) -> None:
        """nnU-Net's epoch end (log lines, checkpoints); progress.png only every few epochs and at the last one."""
        epoch = self.current_epoch
        if epoch == self.num_epochs - 1 or (epoch + 1) % DEMO_PLOT_EVERY_EPOCHS == 0:
            super().on_epoch_end()
            return
        self.logger.plot_progress_png = lambda output_folder: None  # instance attribute hides the method
        try:
            super().on_epoch_end()
        finally:
            del self.logger.plot_progress_png


class nnUNetTrainerPolyCL_long(nnUNetTrainerPolyCL_demo):
    """Twice the paper's training: 200 passes over the labelled slices as 20 epochs of 10 passes, one cosine cycle.

    As ``_demo`` (batch 10, Adam lr 1e-3, Dice loss, one cosine cycle, no test-time mirroring, progress.png every 6
    epochs), with twice the Adam steps of ``_paper`` (k = 1 on the demo dataset: 600). An epoch holds 10 passes, so
    nnU-Net's fixed cost per epoch (validation pass, logging, plotting) is paid 20 times instead of 200. Chosen on
    fold 0 of the demo dataset: at k = 1 the baseline still gained 0.06 Dice between 150 and 300 steps of a 300-step
    cosine, and peaked between 300 and 600 steps of a 1200-step one (over-fitting its one scan after that).
    """

    polycl_passes_per_epoch = LONG_PASSES_PER_EPOCH
    polycl_num_epochs = LONG_EPOCHS


class nnUNetTrainerPolyCL_short(nnUNetTrainerPolyCL_demo):
    """A quarter of ``_long``: 50 passes over the labelled slices as 10 epochs of 5 passes, one cosine cycle.

    As ``_long`` otherwise (batch 10, Adam lr 1e-3, Dice loss, no test-time mirroring). 100-150 Adam steps per run
    at k = 1 on the demo dataset (ten such runs: 886 s on 2 CPU cores shared with another experiment). Measured on
    fold 1 at k = 1: the baseline still gained 0.027 Dice over the second half of its steps, so it is not the end of
    training there.
    """

    polycl_passes_per_epoch = SHORT_PASSES_PER_EPOCH
    polycl_num_epochs = SHORT_EPOCHS


class nnUNetTrainerPolyCL_quick(nnUNetTrainerPolyCL_short):
    """The demo's few-label schedule: ``_short``'s 50 passes (10 epochs of 5) at batch 4, one cosine cycle.

    As ``_short`` otherwise (Adam lr 1e-3, Dice loss, no test-time mirroring). At k = 1 on the demo dataset 250-350
    Adam steps, each about a third of a batch-10 step on a CPU: about 30 s of training on 2 cores. Chosen on fold 0
    for the demo (baseline only, 5 seeds, k = 1): the baseline's validation Dice 0.578 / 0.655 / 0.658 at 25 / 50 /
    100% of its steps, the end of training by the budgets rule (+0.003 [-0.106, +0.112]); 100 passes (500-700 steps)
    gave 0.680 / 0.681 / 0.680.
    """

    polycl_batch_size = QUICK_BATCH_SIZE


class nnUNetTrainerPolyCL_smoke(nnUNetTrainerPolyCL_demo):
    """Test-sized run: 2 epochs x 3 iterations, 2 validation iterations, no test-time mirroring."""

    polycl_epoch_is_one_pass = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = SMOKE_RUN
