"""``nnUNetTrainerPolyCL``: nnU-Net's trainer, started from the PolyCL pre-trained encoder, with a Dice-only loss.

Everything else is stock nnU-Net (augmentation, validation, checkpoints, progress.png, prediction). What differs, each
in one overridden method that calls nnU-Net's:

- ``__init__``: refuses a 3D configuration; for a new run (no checkpoint in the fold folder yet) it finds, reads (as
  data, ``weights_only``) and checks the pre-trained weights (see :mod:`.pretrained`) *before* nnU-Net creates the
  fold folder, so a refused file leaves nothing behind; applies the schedule's batch size; on the CPU it honours
  ``$POLYCL_CPU_THREADS`` (nnU-Net's entry point sets torch's threads to every core, which parallel runs would
  oversubscribe). A refusal ends ``nnUNetv2_train`` with its one-line message, without a traceback
  (:func:`report_refusals_in_one_line`).
- ``initialize``: seeds the run (``_seed<s>``), then, after nnU-Net built the network, loads the checked encoder.
  A run that continues from its own checkpoint (``--c``, ``--val``) loads nothing: its checkpoint carries the weights
  and the record, so the pre-training folder may be gone. Which file was loaded (path, sha256, strategy, provenance
  checks, tensors loaded) goes to the training log, to ``polycl_finetuning.json`` and to every checkpoint.
- ``_build_loss``: nnU-Net's own loss with the cross-entropy weight set to 0 (see :mod:`.loss`).
- ``do_split``: nnU-Net's split; ``_k<k>`` variants keep k training cases, drawn with the run's seed.
- ``configure_optimizers`` / ``on_train_epoch_start``: the adaptation's stages (:mod:`.adaptation`) on the
  schedule's optimiser and decay (:mod:`.schedules`).
- ``get_dataloaders``: seeded augmentation workers for ``_seed<s>`` variants (:mod:`.seeding`).
- ``on_train_start``: schedules whose epoch is one pass over the labelled slices set the iterations here; the
  schedule (in words, :meth:`polycl_schedule_description`) and the training budgets go into the record.
- ``on_epoch_end``: saves the checkpoint of each training budget of ``$POLYCL_BUDGETS`` (:mod:`.budgets`).
- ``perform_actual_validation``: nnU-Net's, its worker processes started without running the command's script again
  (:mod:`.spawned_workers`); at the end of a training with budgets, then the same validation from each earlier
  budget's checkpoint into ``validation_budget_<f>/``, in this process (what ``polycl_validate`` does afterwards).
- ``save_checkpoint`` / ``load_checkpoint``: add (in plain types) / read back the ``polycl_finetuning`` record; a
  resumed run rebuilds the optimiser of the stage its checkpoint was written in. The checkpoint itself is nnU-Net's
  format, which nnU-Net reads with full unpickling: like nnU-Net's, only continue checkpoints you made.

Order of weights, last one wins: pre-trained encoder (``initialize``), then ``-pretrained_weights FILE`` (nnU-Net
applies it after ``initialize``), then the checkpoint of ``--c`` / ``--val``.
"""
from __future__ import annotations

import math
import os
import sys
from os.path import isfile, join
from typing import Any

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.lr_scheduler.warmup import Lin_incr_offset_LRScheduler, PolyLRScheduler_offset
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_polycl.checkpoint import UNSAFE_LOAD_VARIABLE, atomic_torch_save, atomic_write_json, plain, seed_everything
from nnunet_polycl.environment import temporary_environment
from nnunet_polycl.finetuning.adaptation import Stage, ramp_factor, ramp_length, stage_at, stage_lr, stage_plan
from nnunet_polycl.finetuning.budgets import FINAL_CHECKPOINT, budget_plan, budgets_from_environment
from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE, SUBSET_SEED, choose_labelled_cases, subset_record
from nnunet_polycl.finetuning.layerwise import ScaledGroups, scaled_parameter_groups
from nnunet_polycl.finetuning.loss import dice_only
from nnunet_polycl.finetuning.pretrained import (
    ALLOW_FOREIGN_VARIABLE,
    OVERRIDE_VARIABLE,
    PretrainedWeights,
    checked_weights,
    fine_tuning_target,
    load_pretrained_encoder,
    locate_pretrained_weights,
    unchecked_warning,
)
from nnunet_polycl.finetuning.seeding import seeded_augmenter
from nnunet_polycl.finetuning.spawned_workers import workers_without_main_script
from nnunet_polycl.finetuning.validation import validate_into, validation_folder_name
from nnunet_polycl.network import encoder_of, load_plans_context, unwrap
from nnunet_polycl.paths import DEFAULT_STRATEGY, PolyCLUserError

RECORD_FILE = "polycl_finetuning.json"
CHECKPOINT_KEY = "polycl_finetuning"
DEFAULT_DEVICE = torch.device("cuda")  # nnUNetTrainer's default, as a constant
DEFAULT_ADAPTATION = "direct"
CPU_THREADS_VARIABLE = "POLYCL_CPU_THREADS"  # torch threads on the CPU (polycl_experiment --jobs sets it)
CHECKPOINT_FILES = (FINAL_CHECKPOINT, "checkpoint_latest.pth", "checkpoint_best.pth")


def require_2d_configuration(plans: dict, configuration: str, trainer_name: str) -> None:
    """Raise a clear error unless ``configuration`` of ``plans`` has a 2D patch size."""
    patch_size = PlansManager(plans).get_configuration(configuration).patch_size
    if len(patch_size) != 2:
        raise PolyCLUserError(
            f"{trainer_name} fine-tunes a PolyCL-pre-trained 2D encoder, but configuration {configuration!r} is "
            f"{len(patch_size)}D (patch size {list(patch_size)}). Use the 2d configuration: "
            f"nnUNetv2_train DATASET 2d FOLD -tr {trainer_name}"
        )


def fold_folder(plans: dict, configuration: str, fold, trainer_name: str) -> str | None:
    """The fold folder nnU-Net will use (None when ``nnUNet_results`` is unset)."""
    results = os.environ.get("nnUNet_results")
    if not results:
        return None
    return join(results, plans["dataset_name"], f"{trainer_name}__{plans['plans_name']}__{configuration}",
                f"fold_{fold}")


def report_refusals_in_one_line() -> None:
    """Make an uncaught :class:`PolyCLUserError` end the process with its one-line message (``<program>: error:
    <message>`` on stderr, exit status 1) instead of a traceback; every other exception keeps the previous hook.

    The trainer's refusals are raised inside ``nnUNetv2_train``, whose entry point has no handler: without this hook
    Python prints nnU-Net's call stack above the message. Installed once, by the first PolyCL trainer created.
    """
    previous = sys.excepthook
    if getattr(previous, "polycl_one_line", False):
        return

    def hook(kind, value, traceback) -> None:
        if issubclass(kind, PolyCLUserError):
            print(f"{os.path.basename(sys.argv[0]) or 'python'}: error: {value}", file=sys.stderr, flush=True)
        else:
            previous(kind, value, traceback)

    hook.polycl_one_line = True
    sys.excepthook = hook


def describe_record(record: dict[str, Any]) -> str:
    """One log line saying how the network was initialised."""
    weights = record["pretrained_weights"]
    seed = "unseeded (nnU-Net's default)" if record.get("seed") is None else f"seed {record['seed']}"
    if weights is None:
        return f"PolyCL {record['trainer']}: {record['initialisation']}; no pre-trained weights loaded; {seed}."
    loading = weights.get("loading") or {}
    return (f"PolyCL {record['trainer']}: {record['initialisation']}. Loaded the encoder from {weights['path']} "
            f"(found via {weights['source']}; sha256 {weights['sha256']}; strategy {weights['strategy']}; "
            f"{weights['pretraining_epochs']} pre-training epochs; {loading.get('encoder_tensors_loaded')} encoder "
            f"tensors loaded, {len(loading.get('encoder_tensors_skipped', []))} skipped; "
            f"{loading.get('file_tensors_not_loaded')} decoder tensors of the file not loaded); {seed}. Recorded in "
            f"{RECORD_FILE} and in every checkpoint under '{CHECKPOINT_KEY}'.")


class nnUNetTrainerPolyCL(nnUNetTrainer):
    """Fine-tunes the whole nnU-Net 2D U-Net from the encoder pre-trained by ``polycl_pretrain`` (default strategy).

    Class attributes set by the variants (one setting per class, see :mod:`.variants`):
        polycl_strategy: pre-training strategy whose weights are loaded (``None``: random initialisation).
        polycl_adaptation: how the encoder is fine-tuned (:mod:`.adaptation`).
        polycl_num_labelled_cases: fine-tune on this many of the fold's training cases (``None``: all).
        polycl_seed: seed of the run (``None``: unseeded, as nnU-Net).
        polycl_batch_size: the schedule's batch size (``None``: the plans').
        polycl_epoch_is_one_pass: iterations per epoch = ceil(labelled training slices / batch size).
        polycl_passes_per_epoch: with ``polycl_epoch_is_one_pass``, an epoch is this many passes (validation: one).
        polycl_optimizer_text, polycl_lr_curve_text: the schedule's optimiser and learning-rate curve in words.
    """

    polycl_strategy: str | None = DEFAULT_STRATEGY
    polycl_adaptation: str = DEFAULT_ADAPTATION
    polycl_num_labelled_cases: int | None = None
    polycl_seed: int | None = None
    polycl_batch_size: int | None = None
    polycl_epoch_is_one_pass: bool = False
    polycl_passes_per_epoch: int = 1
    polycl_optimizer_text: str = "SGD (momentum 0.99, Nesterov)"
    polycl_lr_curve_text: str = "poly decay to 0 (nnU-Net's)"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        report_refusals_in_one_line()
        name = type(self).__name__
        require_2d_configuration(plans, configuration, name)
        folder = fold_folder(plans, configuration, fold, name)
        new_run = folder is None or not any(isfile(join(folder, f)) for f in CHECKPOINT_FILES)
        self.polycl_budget_fractions = budgets_from_environment(os.environ)
        self.polycl_budgets: list[dict] = []  # where each budget's checkpoint goes (set at the start of training)
        self._polycl_budgets_to_validate: list[dict] = []  # earlier budgets, validated after the end point's
        self.polycl_weights = self._checked_weights(plans, configuration, fold) if new_run else None
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.device.type == "cpu" and os.environ.get(CPU_THREADS_VARIABLE, "").isdigit():
            torch.set_num_threads(int(os.environ[CPU_THREADS_VARIABLE]))  # nnUNetv2_train takes every core
        if self.polycl_batch_size is not None:
            self.configuration_manager.configuration["batch_size"] = self.polycl_batch_size
        self.polycl_record: dict[str, Any] | None = None
        self.polycl_stage: Stage | None = None
        self._polycl_gradient_hooks: list = []  # zero the frozen encoder's gradients (see _mute_frozen_encoder)
        self.polycl_split: tuple[list[str], list[str]] | None = None
        self._polycl_resuming = False
        self._polycl_iteration = 0  # iterations done in the run, counted from the epoch (the per-iteration ramp)
        self._polycl_scheduled_lrs: list[float] = []  # each group's rate set by the scheduler at this epoch's start

    @property
    def polycl_plan(self) -> tuple[Stage, ...]:
        """The adaptation's stages over this run's epochs (schedules set ``num_epochs`` after nnU-Net's init)."""
        return stage_plan(self.polycl_adaptation, self.num_epochs)

    # --- pre-trained weights -------------------------------------------------------------------------------------
    def _checked_weights(self, plans: dict, configuration: str, fold) -> tuple[PretrainedWeights, dict] | None:
        """The weights file this run starts from, read and checked against this dataset, plans, split and network
        (None for a random-initialisation baseline)."""
        if self.polycl_strategy is None:
            return None
        ctx = load_plans_context(plans["dataset_name"], plans["plans_name"], configuration)
        target = fine_tuning_target(ctx, fold, self.polycl_strategy)
        return checked_weights(*locate_pretrained_weights(target), target, ctx)

    def initialize(self) -> None:
        if self.polycl_seed is not None:
            seed_everything(self.polycl_seed)
        super().initialize()
        if self._polycl_resuming:
            return  # the checkpoint's weights and record replace whatever would be loaded here
        if self.polycl_weights is None and self.polycl_strategy is not None:  # a fresh run over an old folder
            self.polycl_weights = self._checked_weights(self.plans_manager.plans, self.configuration_name, self.fold)
        self.polycl_record = self._initialise_encoder()
        self.print_to_log_file(describe_record(self.polycl_record))
        self._write_record()

    def _write_record(self) -> None:
        if self.local_rank == 0 and self.polycl_record is not None:
            atomic_write_json(self.polycl_record, join(self.output_folder, RECORD_FILE))

    def _initialise_encoder(self) -> dict[str, Any]:
        """Load the checked pre-trained encoder (unless this is a random-initialisation baseline); the record."""
        record: dict[str, Any] = {"trainer": type(self).__name__, "strategy": self.polycl_strategy,
                                  "seed": self.polycl_seed, "adaptation": self.polycl_adaptation,
                                  "stages": [s.to_dict() for s in self.polycl_plan]}
        if self.polycl_strategy is None:
            if os.environ.get(OVERRIDE_VARIABLE):
                self.print_to_log_file(f"{OVERRIDE_VARIABLE} is ignored: {type(self).__name__} starts from random "
                                       f"weights by design.")
            return {**record, "initialisation": "random (nnU-Net's default initialisation)",
                    "pretrained_weights": None}
        weights, checks = self.polycl_weights
        warning = unchecked_warning(weights, checks)
        if warning:
            self.print_to_log_file(warning)
        if weights.unsafe_load:
            self.print_to_log_file(f"WARNING: {UNSAFE_LOAD_VARIABLE}=1: {weights.path} was read with full unpickling "
                                   f"(it holds more than tensors and plain values); recorded in {RECORD_FILE}.")
        if checks["foreign_opt_in"]:
            self.print_to_log_file(f"WARNING: {ALLOW_FOREIGN_VARIABLE}=1: fine-tuning from weights of other data: "
                                   + "; ".join(checks["foreign_opt_in"]))
        loading = load_pretrained_encoder(self.network, weights)
        self.polycl_weights = None  # loaded: the tensors are not needed any more
        return {**record, "initialisation": "PolyCL pre-trained encoder, fresh decoder",
                "pretrained_weights": {**weights.record(), "checks": checks, "loading": loading}}

    # --- loss and data -------------------------------------------------------------------------------------------
    def _build_loss(self):
        return dice_only(super()._build_loss())

    def do_split(self):
        tr_keys, val_keys = super().do_split()
        k = self.polycl_num_labelled_cases
        if k is not None:
            training_cases = [str(c) for c in tr_keys]
            seed = SUBSET_SEED if self.polycl_seed is None else self.polycl_seed
            tr_keys = choose_labelled_cases(training_cases, k, self.fold, seed)
            path = join(self.output_folder, SUBSET_FILE)
            if self.local_rank == 0:
                atomic_write_json(subset_record(training_cases, tr_keys, k, self.fold, seed), path)
            self.print_to_log_file(f"PolyCL reduced labels: fine-tuning on {k} of the {len(training_cases)} training "
                                   f"cases of fold {self.fold} (seed {seed}): {tr_keys} (recorded in {path})")
        self.polycl_split = ([str(c) for c in tr_keys], [str(c) for c in val_keys])
        return tr_keys, val_keys

    def get_dataloaders(self):
        if self.polycl_seed is None:
            return super().get_dataloaders()
        workers = get_allowed_n_proc_DA()
        with temporary_environment({"nnUNet_n_proc_DA": "0"}):
            train, val = super().get_dataloaders()
        if workers == 0:
            return train, val
        pin = self.device.type == "cuda"
        return (seeded_augmenter(train.data_loader, self.polycl_seed, 0, workers, 2, pin),
                seeded_augmenter(val.data_loader, self.polycl_seed, 1, max(1, workers // 2), 2, pin))

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.polycl_epoch_is_one_pass:
            train, val = self.polycl_split
            passes = self.polycl_passes_per_epoch
            self.num_iterations_per_epoch = passes * iterations_per_pass(self, train)
            self.num_val_iterations_per_epoch = iterations_per_pass(self, val)
            self.print_to_log_file(f"PolyCL schedule: one epoch = {_passes_text(passes)} over the {len(train)} "
                                   f"labelled training cases' slices: {self.num_iterations_per_epoch} iterations of "
                                   f"batch {self.batch_size}; validation {self.num_val_iterations_per_epoch} "
                                   f"iterations")
        self.polycl_budgets = budget_plan(self.polycl_budget_fractions, self.num_epochs,
                                          self.num_iterations_per_epoch)
        if self.polycl_budgets:
            self.print_to_log_file("PolyCL training budgets: " + "; ".join(
                f"{b['fraction']:g} -> epoch {b['epoch']} ({b['iterations']} iterations): {b['checkpoint']}"
                for b in self.polycl_budgets))
        if self.polycl_record is not None:
            self.polycl_record["schedule"] = {
                "description": self.polycl_schedule_description(), "epochs": self.num_epochs,
                "iterations_per_epoch": self.num_iterations_per_epoch,
                "iterations": self.num_epochs * self.num_iterations_per_epoch,
                "val_iterations_per_epoch": self.num_val_iterations_per_epoch, "batch_size": self.batch_size,
                "initial_lr": self.initial_lr, "stage_lr": stage_lr(self.polycl_adaptation, self.initial_lr)}
            self.polycl_record["budgets"] = self.polycl_budgets
            self._write_record()

    def polycl_schedule_description(self) -> str:
        """The schedule in words, from the class's optimiser and curve and the run's numbers, e.g. "Adam lr 0.001,
        cosine with warm restarts every 10 epochs, 100 epochs x ceil(labelled slices / 10) = 3 iterations"."""
        iterations = str(self.num_iterations_per_epoch)
        if self.polycl_epoch_is_one_pass:
            passes = "" if self.polycl_passes_per_epoch == 1 else f"{self.polycl_passes_per_epoch} x "
            iterations = f"{passes}ceil(labelled slices / {self.batch_size}) = {iterations}"
        text = (f"{self.polycl_optimizer_text} lr {self.initial_lr:g}, {self.polycl_lr_curve_text}, "
                f"{self.num_epochs} epochs x {iterations} iterations "
                f"({self.num_epochs * self.num_iterations_per_epoch} in all)")
        if self.polycl_adaptation != DEFAULT_ADAPTATION:
            stages = ", ".join(f"{s.name} from epoch {s.first_epoch}" for s in self.polycl_plan)
            text += (f"; adaptation {self.polycl_adaptation}: {stages}, at lr "
                     f"{stage_lr(self.polycl_adaptation, self.initial_lr):g}")
            scales = sorted({s.encoder_lr_scale for s in self.polycl_plan} - {1.0})
            if scales:
                text += f" (encoder at {', '.join(f'{f:g}' for f in scales)} x that rate)"
            ramps = sorted({s.ramp_fraction for s in self.polycl_plan} - {0.0})
            if ramps:
                text += (f", each iteration's rate ramped linearly from 0 over the first {ramps[0]:.0%} of the "
                         f"iterations ({ramp_length(ramps[0], self.num_epochs * self.num_iterations_per_epoch)})")
        return text

    def on_epoch_end(self) -> None:
        """nnU-Net's epoch end, then the checkpoint of each training budget that this epoch completes."""
        completed = self.current_epoch + 1
        super().on_epoch_end()
        for budget in self.polycl_budgets:
            if budget["epoch"] == completed and budget["checkpoint"] != FINAL_CHECKPOINT:
                self.current_epoch -= 1  # as nnU-Net's on_train_end: the checkpoint records the epochs done
                self.save_checkpoint(join(self.output_folder, budget["checkpoint"]))
                self.current_epoch += 1

    def on_train_end(self) -> None:
        """nnU-Net's end of training; the earlier budgets of the run are then validated after the end point (one
        process validates: under DDP ``polycl_validate`` does it afterwards)."""
        super().on_train_end()
        if not self.is_ddp:
            self._polycl_budgets_to_validate = [b for b in self.polycl_budgets if b["checkpoint"] != FINAL_CHECKPOINT]

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's validation (its workers without the command's script, :mod:`.spawned_workers`); after a
        training with budgets, then nnU-Net's validation from each earlier budget's checkpoint, exactly as
        ``polycl_validate`` makes it, into ``validation_budget_<f>/``."""
        with workers_without_main_script():
            super().perform_actual_validation(save_probabilities)
        budgets, self._polycl_budgets_to_validate = self._polycl_budgets_to_validate, []
        for budget in budgets:
            checkpoint = join(self.output_folder, budget["checkpoint"])
            if not isfile(checkpoint):  # removed since its epoch: the end point's validation above stands
                self.print_to_log_file(f"PolyCL training budget {budget['fraction']:g}: {checkpoint} is gone, so "
                                       f"that budget is not validated.")
                continue
            target = join(self.output_folder, validation_folder_name(budget["checkpoint"]))
            self.print_to_log_file(f"PolyCL training budget {budget['fraction']:g}: nnU-Net's validation from "
                                   f"{budget['checkpoint']} into {target}")
            validate_into(self, checkpoint, target)

    # --- optimiser, stages -----------------------------------------------------------------------------------------
    def polycl_make_optimizer(self, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The schedule's optimiser (nnU-Net's: SGD, momentum 0.99, Nesterov, its weight decay)."""
        return torch.optim.SGD(params, lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True)

    def polycl_decay_scheduler(self, optimizer: torch.optim.Optimizer, lr: float, start_epoch: int):
        """The schedule's decay from ``lr`` at ``start_epoch`` to the end (nnU-Net's: poly)."""
        if start_epoch == 0:
            return PolyLRScheduler(optimizer, lr, self.num_epochs)
        return PolyLRScheduler_offset(optimizer, lr, self.num_epochs, start_epoch)

    def _stage_parameters(self, stage: Stage) -> list[torch.nn.Parameter] | list[dict]:
        net = unwrap(self.network)
        if stage.encoder_lr_scale != 1.0:
            return scaled_parameter_groups(net, encoder_of(net), stage.encoder_lr_scale)
        if stage.trains_encoder:
            return list(net.parameters())
        frozen = {id(p) for p in encoder_of(net).parameters()}
        return [p for p in net.parameters() if id(p) not in frozen]

    def _stage_optimizer(self, stage: Stage, previous: torch.optim.Optimizer | None = None):
        lr = stage_lr(self.polycl_adaptation, self.initial_lr)
        optimizer = previous if previous is not None and not stage.new_optimizer else \
            self.polycl_make_optimizer(self._stage_parameters(stage), lr)
        if stage.warmup_epochs:
            scheduler = Lin_incr_offset_LRScheduler(optimizer, lr, stage.warmup_epochs, stage.first_epoch)
        else:
            scheduler = self.polycl_decay_scheduler(optimizer, lr, stage.first_epoch)
        if stage.encoder_lr_scale != 1.0:
            scheduler = ScaledGroups(scheduler)
        return optimizer, scheduler

    def _mute_frozen_encoder(self, frozen: bool) -> None:
        """While the encoder is frozen its gradients are zero: nnU-Net's ``optimizer.zero_grad`` clears only the
        optimised parameters, so they would otherwise pile up over the iterations and dominate the gradient-norm
        clipping of the whole network, shrinking the decoder's steps. Hooks, not ``requires_grad``, so that DDP keeps
        its fixed set of parameters."""
        for handle in self._polycl_gradient_hooks:
            handle.remove()
        self._polycl_gradient_hooks = [p.register_hook(torch.zeros_like)
                                       for p in encoder_of(unwrap(self.network)).parameters()] if frozen else []

    def _use_stage(self, stage: Stage, previous: torch.optim.Optimizer | None = None):
        """Make ``stage`` the current one; returns its optimiser and scheduler."""
        optimizer, scheduler = self._stage_optimizer(stage, previous)
        self.polycl_stage = stage
        self._mute_frozen_encoder(not stage.trains_encoder)
        return optimizer, scheduler

    def _enter_stage(self, stage: Stage, previous: torch.optim.Optimizer | None = None) -> None:
        self.optimizer, self.lr_scheduler = self._use_stage(stage, previous)
        if len(self.polycl_plan) > 1 or not stage.trains_encoder:
            self.print_to_log_file(f"PolyCL {self.polycl_adaptation}: stage {stage.name} from epoch "
                                   f"{stage.first_epoch}, encoder {'trained' if stage.trains_encoder else 'frozen'}")

    def configure_optimizers(self):
        return self._use_stage(self.polycl_plan[0])

    def on_train_epoch_start(self) -> None:
        stage = stage_at(self.polycl_plan, self.current_epoch)
        if stage != self.polycl_stage:
            self._enter_stage(stage, self.optimizer)
        super().on_train_epoch_start()
        self._polycl_iteration = self.current_epoch * self.num_iterations_per_epoch
        self._polycl_scheduled_lrs = [group["lr"] for group in self.optimizer.param_groups]

    def polycl_ramp_iterations(self) -> int:
        """Length of the current stage's per-iteration ramp (0: none), in iterations of this run."""
        fraction = self.polycl_stage.ramp_fraction if self.polycl_stage is not None else 0.0
        return ramp_length(fraction, self.num_epochs * self.num_iterations_per_epoch)

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step; during a ``warmupfull`` ramp, first sets each group's rate to the scheduled one times the
        ramp (nnU-Net logs and plots the scheduled rate of the epoch's start)."""
        ramp = self.polycl_ramp_iterations()
        if ramp and self._polycl_iteration <= ramp:  # one step past the ramp restores the scheduled rate
            factor = ramp_factor(self._polycl_iteration, ramp)
            for group, scheduled in zip(self.optimizer.param_groups, self._polycl_scheduled_lrs, strict=True):
                group["lr"] = scheduled * factor
        self._polycl_iteration += 1
        return super().train_step(batch)

    # --- checkpoints -----------------------------------------------------------------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the key ``polycl_finetuning`` (which weights the run started from)."""
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing or self.polycl_record is None:
            return
        checkpoint = torch.load(filename, weights_only=False)  # nnU-Net's own checkpoint, just written by it
        checkpoint[CHECKPOINT_KEY] = plain(self.polycl_record)
        atomic_torch_save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's, after rebuilding the optimiser of the stage the checkpoint was written in; the run keeps the
        record of the weights it started from (kept in its checkpoint), without needing the pre-training file."""
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)  # nnU-Net's own format
        self._polycl_resuming = True
        if not self.was_initialized:
            self.initialize()
        saved = stage_at(self.polycl_plan, checkpoint["current_epoch"] - 1)
        if saved != self.polycl_stage:
            self.optimizer, self.lr_scheduler = self._use_stage(saved)
        super().load_checkpoint(filename_or_checkpoint)  # nnU-Net 2.8.1 reads only a file name here
        origin = checkpoint.get(CHECKPOINT_KEY)
        if origin is not None and origin != self.polycl_record:
            self.polycl_record = origin
            self.print_to_log_file("Continuing a run whose weights come from its checkpoint: "
                                   + describe_record(origin))
            self._write_record()


def _passes_text(passes: int) -> str:
    return "one pass" if passes == 1 else f"{passes} passes"


def iterations_per_pass(trainer: nnUNetTrainer, cases: list[str]) -> int:
    """ceil(slices of ``cases`` / the global batch size): one pass over their 2D slices."""
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, cases)
    slices = sum(int(dataset.load_case(c)[0].shape[1]) for c in cases)
    return max(1, math.ceil(slices / trainer.configuration_manager.batch_size))
