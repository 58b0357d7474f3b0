"""Duplicate detection: an unlabelled image identical to a case of the dataset (same image checksum) is that scan.

A duplicate is counted once: the dataset's case keeps its place (its labelled slices when it is a training case of
the fold), and the unlabelled copy is left out, so a validation case of the fold never reaches pre-training through
an unlabelled folder. Of several identical unlabelled images only the first (in ``--unlabelled`` order) is kept.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from os.path import isdir, join

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError, require_nnunet_folder
from nnunet_polycl.unlabelled.checksums import ChecksumMemo
from nnunet_polycl.unlabelled.discovery import UnlabelledCase


def dataset_image_checksums(ctx: PlansContext, memo: ChecksumMemo) -> dict[str, str]:
    """Image checksum -> case identifier for every case of the dataset's raw training images.

    Raises:
        PolyCLUserError: the dataset's raw folder is missing (its images are needed to find duplicates).
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = join(require_nnunet_folder("nnUNet_raw"), ctx.dataset_name)
    if not isdir(raw):
        raise PolyCLUserError(
            f"{raw} does not exist. --unlabelled compares every unlabelled image with the dataset's raw images "
            f"(an identical scan must not enter pre-training twice, nor as a validation case): set nnUNet_raw to "
            f"the folder that holds {ctx.dataset_name}.")
    cases = get_filenames_of_train_images_and_targets(raw, copy.deepcopy(ctx.dataset_json))
    return {memo.image_checksum(entry["images"]): case for case, entry in sorted(cases.items())}


def split_duplicates(scans: Sequence[tuple[UnlabelledCase, str]], dataset: dict[str, str], train_ids: Sequence[str],
                     val_ids: Sequence[str]) -> tuple[list[tuple[UnlabelledCase, str]], list[dict]]:
    """``(kept, duplicates)``: the scans to use, and one record per scan left out (what it duplicates and why)."""
    train, val = set(train_ids), set(val_ids) - set(train_ids)
    kept, duplicates, first_seen = [], [], {}
    for case, checksum in scans:
        if checksum in dataset:
            twin = dataset[checksum]
            role = ("a validation case of the fold: left out of pre-training" if twin in val else
                    "a training case of the fold: used once, with its labels" if twin in train else
                    "a case of the dataset outside this fold's training cases: left out")
            duplicates.append({"case": case.key, "files": list(case.files), "same_as": f"dataset case {twin}",
                               "role": role})
        elif checksum in first_seen:
            duplicates.append({"case": case.key, "files": list(case.files), "same_as": first_seen[checksum],
                               "role": "another unlabelled scan: used once"})
        else:
            first_seen[checksum] = case.key
            kept.append((case, checksum))
    return kept, duplicates
