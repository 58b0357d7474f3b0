"""The output folder of a pre-training run: its state, ``config.json`` and ``pretrained_weights.pth``.

Layout (default folder ``$nnUNet_results/DatasetXXX/PolyCL_<strategy>__<plans>__<configuration>/fold_<f>/``)::

    config.json              every setting, the split, dataset / plans fingerprints, versions
    training_log.txt         timestamped log, one line per epoch (appended by --c)
    progress.png             loss, mean cos+ / cos-, triplet accuracy per epoch
    checkpoint_latest.pth    after every epoch (what --c continues from)
    checkpoint_final.pth     after the last epoch
    pretrained_weights.pth   {'network_weights': full nnU-Net network state, 'polycl': run metadata}
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from os.path import isdir, isfile, join

import torch

from nnunet_polycl.checkpoint import file_sha256, save_data_only
from nnunet_polycl.network import PlansContext, full_network_state_with_encoder
from nnunet_polycl.paths import (
    PRETRAINED_WEIGHTS_FILE,
    PRETRAINING_CONFIG_FILE,
    PolyCLUserError,
    default_pretraining_folder,
)
from nnunet_polycl.pretraining.loop import FINAL_CHECKPOINT, LATEST_CHECKPOINT
from nnunet_polycl.pretraining.progress import LOG_FILE, PLOT_FILE
from nnunet_polycl.pretraining.settings import PretrainSettings
from nnunet_polycl.provenance import package_versions, plans_fingerprint, pretraining_provenance

RUN_FILES = (PRETRAINING_CONFIG_FILE, LOG_FILE, PLOT_FILE, LATEST_CHECKPOINT, FINAL_CHECKPOINT,
             PRETRAINED_WEIGHTS_FILE)


def existing_run_files(folder: str) -> list[str]:
    """The files of a (started or finished) run present in ``folder``."""
    return [name for name in RUN_FILES if isfile(join(folder, name))] if isdir(folder) else []


def check_output_folder(folder: str, continue_training: bool, overwrite: bool) -> None:
    """Refuse to touch a folder holding a run unless --c or --overwrite says what to do with it.

    Raises:
        PolyCLUserError: both flags, or a started / finished run in ``folder`` and neither flag.
    """
    if continue_training and overwrite:
        raise PolyCLUserError("--c (continue the run in the output folder) and --overwrite (start it again) "
                              "exclude each other; pass one of them.")
    found = existing_run_files(folder)
    if found and not (continue_training or overwrite):
        kind = "a finished" if FINAL_CHECKPOINT in found else "a started"
        raise PolyCLUserError(
            f"The output folder {folder} already holds {kind} pre-training run ({', '.join(found)}). Pass --c to "
            f"continue it, --overwrite to start it again (its files are replaced), or choose another folder with -o."
        )


def remove_run_files(folder: str) -> None:
    """Delete the files of an earlier run in ``folder`` (only those this program writes) for --overwrite."""
    for name in existing_run_files(folder):
        os.remove(join(folder, name))


def sha256_of_file(path: str) -> str | None:
    """Hex SHA-256 of a file's bytes, or None when the file does not exist."""
    return file_sha256(path) if isfile(path) else None


def config_record(settings: PretrainSettings, ctx: PlansContext, train_ids: list[str], val_ids: list[str],
                  num_slices: int, iterations_per_epoch: int) -> dict:
    """Content of ``config.json``: settings, split, fingerprints and versions."""
    return {
        "settings": settings.to_dict(),
        "split": {"fold": settings.fold, "train": list(train_ids), "val": list(val_ids)},
        "num_slices": num_slices,
        "iterations_per_epoch": iterations_per_epoch,
        "lr_schedule": "CosineAnnealingWarmRestarts, restart every 10 epochs, stepped every iteration",
        "fingerprints": {
            "dataset_fingerprint.json_sha256": sha256_of_file(join(ctx.preprocessed_folder,
                                                                   "dataset_fingerprint.json")),
            f"{ctx.plans_identifier}.json_sha256": sha256_of_file(join(ctx.preprocessed_folder,
                                                                       ctx.plans_identifier + ".json")),
            "dataset.json_sha256": sha256_of_file(join(ctx.preprocessed_folder, "dataset.json")),
            "plans_fingerprint": plans_fingerprint(ctx.plans, ctx.configuration),
        },
        "versions": {**package_versions(), "torch": torch.__version__},
        "reproducibility": reproducibility_record(settings.device),
    }


def reproducibility_record(device: str) -> dict:
    """What a seed's result depends on beyond the settings: on the CPU two runs with the same seed, versions and
    torch thread count gave bit-identical weights (verified on the demo); another thread count may change the
    floating-point sums, and CUDA kernels are not deterministic unless torch is told to be."""
    return {"torch_threads": torch.get_num_threads(), "device": device,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "note": "same seed + versions + torch_threads on the CPU: bit-identical weights; other thread counts or "
                    "GPUs may differ in the last bits"}


def write_pretrained_weights(folder: str, ctx: PlansContext, encoder_state: dict, settings: PretrainSettings,
                             epochs_done: int, cases: Sequence[str], unlabelled_scans: Sequence[str] = ()) -> str:
    """Write ``pretrained_weights.pth`` atomically: the full plans network with the pre-trained encoder inside, and
    the run's settings and provenance (``nnunet_polycl.provenance``; ``cases``: the dataset's cases pre-training
    used, ``unlabelled_scans``: the unlabelled ones). Tensors and plain values only: ``torch.load(weights_only=True)``
    reads it, and so does nnU-Net's ``-pretrained_weights``."""
    path = join(folder, PRETRAINED_WEIGHTS_FILE)
    save_data_only({
        "network_weights": full_network_state_with_encoder(ctx, encoder_state),
        "polycl": {
            "strategy": settings.strategy, "epochs": epochs_done, "plans_identifier": settings.plans_identifier,
            "configuration": settings.configuration, "fold": settings.fold, "embed_dim": settings.embed_dim,
            "labels": settings.to_dict()["label_values"], "seed": settings.seed,
            "plans_sha256": sha256_of_file(join(ctx.preprocessed_folder, ctx.plans_identifier + ".json")),
            **pretraining_provenance(ctx, cases, unlabelled_scans),
        },
    }, path)
    return path


def next_steps(settings: PretrainSettings, folder: str) -> str:
    """The line a finished run ends with: the probe (PolyCL strategies) and the fine-tuning command whose trainer
    loads these weights (``POLYCL_PRETRAINED_WEIGHTS`` set when the run is not at the default location)."""
    from nnunet_polycl.finetuning.variants import BASE_NAME, METHODS

    suffix = next(name for name, strategy in METHODS.items() if strategy == settings.strategy)
    default = default_pretraining_folder(settings.dataset_name, settings.strategy, settings.plans_identifier,
                                         settings.configuration, settings.fold)
    weights = "" if os.path.abspath(folder) == os.path.abspath(default) else \
        f"POLYCL_PRETRAINED_WEIGHTS={join(folder, PRETRAINED_WEIGHTS_FILE)} "
    plans = "" if settings.plans_identifier == "nnUNetPlans" else f" -p {settings.plans_identifier}"
    train = (f"{weights}nnUNetv2_train {settings.dataset_name} {settings.configuration} {settings.fold} "
             f"-tr {BASE_NAME}{suffix}{plans}")
    probe = f"polycl_probe {folder} (the encoder on scans it never saw), then " if settings.strategy != "simclr" \
        else ""
    return f"Next: {probe}fine-tune with {train}"
