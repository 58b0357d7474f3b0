"""``nnUNetTrainerPolyCL``: nnU-Net's trainer, started from the PolyCL pre-trained encoder, with a Dice-only loss.

Everything else is stock nnU-Net (augmentation, schedule, validation, checkpoints, progress.png, prediction). What
differs, each in one overridden method that calls nnU-Net's:

- ``__init__``: refuses a 3D configuration before anything is written.
- ``initialize``: after nnU-Net built the network, the encoder is loaded from ``polycl_pretrain``'s output for the
  same dataset, plans, configuration and fold (or from ``$POLYCL_PRETRAINED_WEIGHTS``). Missing weights are an error,
  never a silent random start. Which file was loaded (path, sha256, strategy, pre-training epochs) goes to the
  training log, to ``polycl_finetuning.json`` in the fold folder and to every checkpoint (key ``polycl_finetuning``).
- ``_build_loss``: nnU-Net's own loss with the cross-entropy weight set to 0 (see :mod:`.loss`).
- ``do_split``: nnU-Net's split; variants with ``polycl_num_labelled_cases = k`` keep k training cases.
- ``save_checkpoint`` / ``load_checkpoint``: add / read back the ``polycl_finetuning`` record, so a resumed run keeps
  the record of the weights it started from.

Order of weights, last one wins: pre-trained encoder (``initialize``), then ``-pretrained_weights FILE`` (nnU-Net
applies it after ``initialize``), then the checkpoint of ``--c`` / ``--val`` (``load_checkpoint`` runs after
``initialize`` too). Resuming therefore never replaces trained weights with pre-trained ones.
"""
from __future__ import annotations

import os
from os.path import join
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_polycl.checkpoint import atomic_torch_save, atomic_write_json
from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE, choose_labelled_cases, subset_record
from nnunet_polycl.finetuning.loss import dice_only
from nnunet_polycl.finetuning.pretrained import (
    OVERRIDE_VARIABLE,
    PretrainingTarget,
    check_pretraining_settings,
    load_pretrained_encoder,
    locate_pretrained_weights,
    read_pretrained_weights,
)
from nnunet_polycl.paths import DEFAULT_STRATEGY, PolyCLUserError

RECORD_FILE = "polycl_finetuning.json"
CHECKPOINT_KEY = "polycl_finetuning"
DEFAULT_DEVICE = torch.device("cuda")  # nnUNetTrainer's default, as a constant


def require_2d_configuration(plans: dict, configuration: str, trainer_name: str) -> None:
    """Raise a clear error unless ``configuration`` of ``plans`` has a 2D patch size."""
    patch_size = PlansManager(plans).get_configuration(configuration).patch_size
    if len(patch_size) != 2:
        raise PolyCLUserError(
            f"{trainer_name} fine-tunes a PolyCL-pre-trained 2D encoder, but configuration {configuration!r} is "
            f"{len(patch_size)}D (patch size {list(patch_size)}). Use the 2d configuration: "
            f"nnUNetv2_train DATASET 2d FOLD -tr {trainer_name}"
        )


def describe_record(record: dict[str, Any]) -> str:
    """One log line saying how the network was initialised."""
    weights = record["pretrained_weights"]
    if weights is None:
        return f"PolyCL {record['trainer']}: {record['initialisation']}; no pre-trained weights loaded."
    return (f"PolyCL {record['trainer']}: {record['initialisation']}. Loaded the encoder from {weights['path']} "
            f"(found via {weights['source']}; sha256 {weights['sha256']}; strategy {weights['strategy']}; "
            f"{weights['pretraining_epochs']} pre-training epochs). Recorded in {RECORD_FILE} and in every checkpoint "
            f"under '{CHECKPOINT_KEY}'.")


class nnUNetTrainerPolyCL(nnUNetTrainer):
    """Fine-tunes the whole nnU-Net 2D U-Net from the encoder pre-trained by ``polycl_pretrain`` (default strategy).

    Class attributes set by the variants (one setting per class, see :mod:`.variants`):
        polycl_strategy: pre-training strategy whose weights are loaded (``None``: random initialisation).
        polycl_num_labelled_cases: fine-tune on this many of the fold's training cases (``None``: all).
    """

    polycl_strategy: str | None = DEFAULT_STRATEGY
    polycl_num_labelled_cases: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        require_2d_configuration(plans, configuration, type(self).__name__)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.polycl_record: dict[str, Any] | None = None

    def initialize(self) -> None:
        super().initialize()
        try:
            self.polycl_record = self._initialise_encoder()
        except PolyCLUserError as e:
            self.print_to_log_file(f"ERROR: {e}")
            raise
        self.print_to_log_file(describe_record(self.polycl_record))
        self._write_record()

    def _write_record(self) -> None:
        if self.local_rank == 0:
            atomic_write_json(self.polycl_record, join(self.output_folder, RECORD_FILE))

    def _initialise_encoder(self) -> dict[str, Any]:
        """Load the pre-trained encoder (unless this is a random-initialisation baseline); return the record."""
        record: dict[str, Any] = {"trainer": type(self).__name__, "strategy": self.polycl_strategy}
        if self.polycl_strategy is None:
            if os.environ.get(OVERRIDE_VARIABLE):
                self.print_to_log_file(f"{OVERRIDE_VARIABLE} is ignored: {type(self).__name__} starts from random "
                                       f"weights by design.")
            return {**record, "initialisation": "random (nnU-Net's default initialisation)",
                    "pretrained_weights": None}
        target = PretrainingTarget(self.plans_manager.dataset_name, self.plans_manager.plans_name,
                                   self.configuration_name, self.fold, self.polycl_strategy)
        weights = read_pretrained_weights(*locate_pretrained_weights(target))
        check_pretraining_settings(weights, target)
        load_pretrained_encoder(self.network, weights)
        return {**record, "initialisation": "PolyCL pre-trained encoder, fresh decoder",
                "pretrained_weights": weights.record()}

    def _build_loss(self):
        return dice_only(super()._build_loss())

    def do_split(self):
        tr_keys, val_keys = super().do_split()
        k = self.polycl_num_labelled_cases
        if k is None:
            return tr_keys, val_keys
        training_cases = [str(c) for c in tr_keys]
        chosen = choose_labelled_cases(training_cases, k, self.fold)
        path = join(self.output_folder, SUBSET_FILE)
        if self.local_rank == 0:
            atomic_write_json(subset_record(training_cases, chosen, k, self.fold), path)
        self.print_to_log_file(f"PolyCL reduced labels: fine-tuning on {k} of the {len(training_cases)} training "
                               f"cases of fold {self.fold}: {chosen} (recorded in {path})")
        return chosen, val_keys

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the key ``polycl_finetuning`` (which weights the run started from)."""
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing or self.polycl_record is None:
            return
        checkpoint = torch.load(filename, weights_only=False)  # just written by nnU-Net: trusted
        checkpoint[CHECKPOINT_KEY] = self.polycl_record
        atomic_torch_save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's; a resumed run keeps the record of the weights it started from (kept in its checkpoint)."""
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        origin = checkpoint.get(CHECKPOINT_KEY)
        if origin is None or origin == self.polycl_record:
            return
        self.print_to_log_file("The checkpoint's run started from other weights than those found now (which its "
                               "weights replaced); its record is kept: " + describe_record(origin))
        self.polycl_record = origin
        self._write_record()
