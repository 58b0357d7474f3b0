"""``polycl_validate``: nnU-Net's validation of a fold, from any checkpoint of the fold folder.

``nnUNetv2_train ... --val`` validates ``checkpoint_final.pth`` only (``--val_best`` the best one, into the same
``validation/`` folder). This command builds the trainer as ``nnUNetv2_train`` does, loads each given checkpoint with
the trainer's own ``load_checkpoint`` and runs its own ``perform_actual_validation``: the same predictions and
nnU-Net summary as the end of training would give with those weights. ``checkpoint_<name>.pth`` goes to
``fold_<f>/validation_<name>/`` (written to a hidden folder first, then moved into place), next to nnU-Net's own
``validation/``, which is never touched. The PolyCL trainers call :func:`validate_into` themselves at the end of a
training with budgets (``validation_budget_<f>/``); this command validates any checkpoint afterwards, or again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from os.path import basename, isdir, isfile, join, splitext

import torch

from nnunet_polycl.paths import PolyCLUserError


def validation_folder_name(checkpoint: str) -> str:
    """``validation_budget_0.5`` for ``checkpoint_budget_0.5.pth`` (``validation_<stem>`` for another name)."""
    stem = splitext(basename(checkpoint))[0]
    return "validation_" + (stem[len("checkpoint_"):] if stem.startswith("checkpoint_") else stem)


def validate_into(trainer, checkpoint: str, target: str) -> None:
    """Load ``checkpoint`` into ``trainer`` and run nnU-Net's validation with the predictions going to ``target``
    (replaced only once the new one is complete)."""
    trainer.load_checkpoint(checkpoint)
    fold_folder = trainer.output_folder
    staging = join(fold_folder, f".{basename(target)}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.output_folder = staging  # nnU-Net writes <output_folder>/validation; nothing else uses it there
    try:
        trainer.perform_actual_validation(False)
    finally:
        trainer.output_folder = fold_folder
    if isdir(target):
        shutil.rmtree(target)
    os.replace(join(staging, "validation"), target)
    shutil.rmtree(staging)


def validate_checkpoints(dataset: str, configuration: str, fold: str, trainer_name: str, plans_identifier: str,
                         checkpoints: list[str], device: str = "cuda") -> list[str]:
    """Validate the fold from each checkpoint (file names in the fold folder); returns the validation folders.

    Raises:
        PolyCLUserError: the fold folder or a checkpoint does not exist (checked before anything is written).
    """
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    folder = get_output_folder(dataset, trainer_name, plans_identifier, configuration, fold)
    missing = [c for c in checkpoints if not isfile(join(folder, c))]
    if missing:
        raise PolyCLUserError(f"No {', '.join(missing)} in {folder}. Train the fold first (nnUNetv2_train), and give "
                              f"checkpoint file names of that folder with -chk.")
    trainer = get_trainer_from_args(dataset, configuration, fold if fold == "all" else int(fold), trainer_name,
                                    plans_identifier, device=torch.device(device))
    targets = []
    for checkpoint in checkpoints:
        target = join(folder, validation_folder_name(checkpoint))
        validate_into(trainer, join(folder, checkpoint), target)
        targets.append(target)
    return targets


def validate_entry(argv: list[str] | None = None) -> None:
    """Command line of ``polycl_validate`` (arguments as ``nnUNetv2_train``'s)."""
    p = argparse.ArgumentParser(
        prog="polycl_validate",
        description="nnU-Net's validation of a fold (the trainer's perform_actual_validation, as at the end of "
                    "nnUNetv2_train) from other checkpoints of the fold folder, e.g. the training-budget "
                    "checkpoints checkpoint_budget_<f>.pth: checkpoint_<name>.pth -> fold_<f>/validation_<name>/.")
    p.add_argument("dataset_name_or_id")
    p.add_argument("configuration")
    p.add_argument("fold")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-chk", nargs="+", required=True, metavar="CHECKPOINT",
                   help="checkpoint file name(s) in the fold folder, e.g. checkpoint_budget_0.5.pth")
    p.add_argument("-device", default="cuda", choices=["cpu", "cuda", "mps"], help="device (default cuda)")
    args = p.parse_args(argv)
    try:
        folders = validate_checkpoints(args.dataset_name_or_id, args.configuration, args.fold, args.tr, args.p,
                                       args.chk, args.device)
    except PolyCLUserError as e:
        print(f"polycl_validate: error: {e}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(f"Validation written to {f}" for f in folders))
