"""Where PolyCL reads nnU-Net's folders and writes its own outputs.

Pre-training results live inside ``nnUNet_results`` next to nnU-Net's own trainings, one folder per strategy so
that runs never overwrite each other::

    $nnUNet_results/DatasetXXX_Name/PolyCL_<strategy>__<plans>__<configuration>/fold_<f>/pretrained_weights.pth

A dataset's unlabelled scans go, by convention, beside ``imagesTr`` in its raw folder, which nnU-Net ignores (it reads
only dataset.json, imagesTr and labelsTr); ``polycl_demo make-dataset --unlabelled N`` writes them there and
``polycl_experiment --preset unlabelled`` looks there::

    $nnUNet_raw/DatasetXXX_Name/imagesUnlabelled/CASE_0000.nii.gz        the scans, named as in imagesTs
    $nnUNet_raw/DatasetXXX_Name/imagesUnlabelled_organ_slices.csv       their weak labels (--organ-slices), if any
"""
from __future__ import annotations

import os
from os.path import isdir, join
from typing import Union

STRATEGIES = ("S", "O", "M", "simclr")
DEFAULT_STRATEGY = "O"
PRETRAINED_WEIGHTS_FILE = "pretrained_weights.pth"
PRETRAINING_CONFIG_FILE = "config.json"
RAW_UNLABELLED_FOLDER = "imagesUnlabelled"
RAW_ORGAN_SLICES_FILE = "imagesUnlabelled_organ_slices.csv"

Fold = Union[int, str]


class PolyCLUserError(RuntimeError):
    """A problem with the user's input or files: the message says what is wrong and how to fix it."""


def require_nnunet_folder(variable: str) -> str:
    """Return the folder named by the nnU-Net environment variable ``variable`` or raise a clear error."""
    value = os.environ.get(variable)
    if not value:
        raise PolyCLUserError(
            f"The environment variable {variable} is not set. nnU-Net (and PolyCL) need nnUNet_raw, "
            f"nnUNet_preprocessed and nnUNet_results; see "
            f"https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/setting_up_paths.md "
            f"(for example: export {variable}=/data/{variable})."
        )
    return value


def resolve_dataset_name(dataset_name_or_id: Union[int, str]) -> str:
    """Turn ``3``, ``"003"`` or ``"Dataset003_Liver"`` into the dataset's folder name, with a clear error."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    require_nnunet_folder("nnUNet_preprocessed")
    try:
        return str(maybe_convert_to_dataset_name(dataset_name_or_id))  # nnU-Net's is a numpy string
    except (RuntimeError, ValueError) as e:
        raise PolyCLUserError(
            f"Unknown dataset {dataset_name_or_id!r}: no folder DatasetXXX_* with this id was found in nnUNet_raw, "
            f"nnUNet_preprocessed or nnUNet_results. Check the id, or run nnUNetv2_plan_and_preprocess -d "
            f"{dataset_name_or_id} first. (nnU-Net said: {e})"
        ) from None


def fold_folder_name(fold: Fold) -> str:
    """nnU-Net's name of a fold's folder: ``fold_0`` ... or ``fold_all``."""
    return f"fold_{fold}"


def pretraining_run_name(strategy: str, plans_identifier: str, configuration: str) -> str:
    """Name of the folder holding all folds of one pre-training set-up (``PolyCL_O__nnUNetPlans__2d``)."""
    return f"PolyCL_{strategy}__{plans_identifier}__{configuration}"


def default_pretraining_folder(dataset_name: str, strategy: str, plans_identifier: str = "nnUNetPlans",
                               configuration: str = "2d", fold: Fold = 0) -> str:
    """Default output folder of ``polycl_pretrain`` (and where the fine-tuning trainers look for its weights)."""
    results = require_nnunet_folder("nnUNet_results")
    return join(results, dataset_name, pretraining_run_name(strategy, plans_identifier, configuration),
                fold_folder_name(fold))


def preprocessed_dataset_folder(dataset_name: str) -> str:
    """``$nnUNet_preprocessed/<dataset_name>``, which must exist."""
    folder = join(require_nnunet_folder("nnUNet_preprocessed"), dataset_name)
    if not isdir(folder):
        raise PolyCLUserError(
            f"{folder} does not exist: dataset {dataset_name} has not been preprocessed. "
            f"Run nnUNetv2_plan_and_preprocess -d {dataset_name} -c 2d first."
        )
    return folder


def raw_unlabelled_paths(raw_dataset_folder: str) -> tuple[str, str]:
    """The conventional unlabelled folder of a raw dataset and its ``--organ-slices`` file (see the module doc)."""
    return join(raw_dataset_folder, RAW_UNLABELLED_FOLDER), join(raw_dataset_folder, RAW_ORGAN_SLICES_FILE)
