"""Workloads of the fine-tuning figure: nnU-Net trainers built and started the nnU-Net way, one step per unit.

Both trainers come from ``nnunetv2.run.run_training.get_trainer_from_args`` (the lookup ``nnUNetv2_train -tr`` uses,
with this package's trainer directory on ``nnUNet_extTrainer``), are started with ``on_train_start`` (network,
optimiser, loss, data augmentation workers of ``nnUNet_n_proc_DA``) and ``on_train_epoch_start``, and then run
``train_step(next(dataloader_train))``: the body of ``nnUNetTrainer.run_training``'s loop.

The trainers write their usual files (logs, plans copies, final checkpoint) into ``results_folder``: the benchmark
points ``nnUNet_results`` at a scratch folder so that the user's results are never touched.
``POLYCL_PRETRAINED_WEIGHTS`` names the weights file for the PolyCL trainer; ``nnUNet_compile`` follows ``--compile``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import torch

from nnunet_polycl.environment import temporary_environment, trainer_directory
from nnunet_polycl.finetuning.pretrained import OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.variants import BASE_NAME, METHODS
from nnunet_polycl.paths import DEFAULT_STRATEGY

STOCK_TRAINER = "nnUNetTrainer"


def augmentation_buffer_batches() -> int:
    """Batches nnU-Net's training augmenter can hold ready: drained before timing.

    ``nnUNetTrainer.get_dataloaders`` starts ``NonDetMultiThreadedAugmenter`` with ``num_cached = max(6, n // 2)``
    for ``n = get_allowed_n_proc_DA()`` workers: a process queue and a pin-memory thread queue of ``num_cached`` each,
    one batch in that thread's hands and one finished batch per worker. Iterations served from this buffer are
    faster than the steady state whenever augmentation is the bottleneck (e.g. on the CPU).
    """
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    workers = get_allowed_n_proc_DA()
    return 2 * max(6, workers // 2) + 1 + workers if workers > 0 else 0  # 0: no background workers


def polycl_trainer_name(strategy: str) -> str:
    """``nnUNetTrainerPolyCL`` for the default strategy, else the variant that loads ``strategy``'s pre-training."""
    if strategy == DEFAULT_STRATEGY:
        return BASE_NAME
    suffix = next(s for s, method in METHODS.items() if method == strategy)
    return BASE_NAME + suffix


def trainer_environment(results_folder: str, weights_file: str, compile_network: bool) -> dict[str, str]:
    """Environment under which the trainers are built and started (see the module docstring)."""
    ext = os.environ.get("nnUNet_extTrainer")
    return {"nnUNet_results": results_folder, OVERRIDE_VARIABLE: weights_file,
            "nnUNet_compile": "true" if compile_network else "false",
            "nnUNet_extTrainer": trainer_directory() + (os.pathsep + ext if ext else "")}


class TrainerWorkload:
    """A started nnU-Net trainer; a unit is one training iteration on a batch of its own data loader."""

    steps_per_unit = items_per_step = 1

    def __init__(self, trainer):
        self.trainer = trainer
        self.name = type(trainer).__name__

    def run(self, units: int) -> None:
        for _ in range(units):
            self.trainer.train_step(next(self.trainer.dataloader_train))

    def drain(self, batches: int) -> None:
        """Take ``batches`` batches from the data loader without training on them (empties its ready buffer)."""
        for _ in range(batches):
            next(self.trainer.dataloader_train)


@contextmanager
def started_trainer(dataset_name: str, configuration: str, fold: int | str, plans_identifier: str, trainer_name: str,
                    device: torch.device, environment: Mapping[str, str], log_file: str,
                    batch_size: int | None = None) -> Iterator[TrainerWorkload]:
    """Build and start a trainer (its console output goes to ``log_file``); stop its data loaders after the block.

    ``batch_size`` replaces the plans' batch size of the configuration (``--tiny`` only); None keeps it.
    """
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = None
    with temporary_environment(environment), open(log_file, "a") as log:
        try:
            with redirect_stdout(log), redirect_stderr(log):
                trainer = get_trainer_from_args(dataset_name, configuration, fold, trainer_name, plans_identifier,
                                                False, device)
                if batch_size is not None:
                    trainer.configuration_manager.configuration["batch_size"] = batch_size
                trainer.on_train_start()
                trainer.on_train_epoch_start()
            yield TrainerWorkload(trainer)
        finally:
            if trainer is not None and trainer.dataloader_train is not None:
                with redirect_stdout(log), redirect_stderr(log):
                    trainer.on_train_end()
