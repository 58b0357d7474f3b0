"""Write the synthetic demo scans as an nnU-Net raw dataset, without ever clobbering a user's dataset.

Layout (nnU-Net v2 raw format)::

    $nnUNet_raw/Dataset990_PolyCLDemo/dataset.json
    $nnUNet_raw/Dataset990_PolyCLDemo/imagesTr/PolyCLDemo_000_0000.nii.gz   (int16 HU, channel "CT")
    $nnUNet_raw/Dataset990_PolyCLDemo/labelsTr/PolyCLDemo_000.nii.gz        (uint8, 0 = background, 1 = liver)
    $nnUNet_raw/Dataset990_PolyCLDemo/imagesUnlabelled/...                  (with ``unlabelled``: see .unlabelled)
    $nnUNet_raw/Dataset990_PolyCLDemo/imagesUnlabelled_organ_slices.csv

The dataset is written into a hidden temporary folder next to its destination and moved into place at the end, so an
interrupted run never leaves a half-written dataset. A dataset id already used in nnUNet_raw, nnUNet_preprocessed or
nnUNet_results is refused unless ``overwrite`` is set; ``overwrite`` replaces only the raw folder(s) of that id and
reports the preprocessed and results folders of that id as stale (it never deletes them: results hold trained models,
and ``nnUNetv2_plan_and_preprocess`` rewrites the preprocessed data).

One exception: unlabelled scans are added to an existing demo dataset made with the same seed and number of scans
without touching its labelled scans (so its preprocessed data and results stay valid); unlabelled scans it already
has are replaced only with ``overwrite``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from glob import glob
from os.path import isdir, isfile, join

import numpy as np
import SimpleITK as sitk

from nnunet_polycl.demo.synthetic_ct import FILE_ENDING, LIVER_LABEL, generate_scan
from nnunet_polycl.demo.unlabelled import MAX_UNLABELLED, write_unlabelled
from nnunet_polycl.paths import PolyCLUserError, raw_unlabelled_paths, require_nnunet_folder

DEMO_DATASET_ID = 990
DEMO_DATASET_SUFFIX = "PolyCLDemo"
DEFAULT_NUM_SCANS = 20
MIN_NUM_SCANS = 5  # nnU-Net's 5-fold cross-validation needs at least 5 training cases


@dataclass
class DemoDataset:
    """What :func:`make_demo_dataset` did: the new raw folder, the raw folders it replaced, and the (kept) folders of
    the same id in nnUNet_preprocessed and nnUNet_results that were made from the replaced data.

    ``num_unlabelled``: unlabelled scans written (in ``unlabelled_folder``, weak labels in ``organ_slices_file``);
    ``kept_labelled``: they were added to the existing dataset, whose labelled scans were left as they were.
    """

    folder: str
    num_scans: int
    replaced: list[str] = field(default_factory=list)
    stale_preprocessed: list[str] = field(default_factory=list)
    stale_results: list[str] = field(default_factory=list)
    num_unlabelled: int = 0
    kept_labelled: bool = False

    @property
    def unlabelled_folder(self) -> str:
        return raw_unlabelled_paths(self.folder)[0]

    @property
    def organ_slices_file(self) -> str:
        return raw_unlabelled_paths(self.folder)[1]


def demo_dataset_name(dataset_id: int = DEMO_DATASET_ID) -> str:
    """Folder name of the demo dataset, e.g. ``Dataset990_PolyCLDemo``."""
    return f"Dataset{dataset_id:03d}_{DEMO_DATASET_SUFFIX}"


def case_identifier(index: int) -> str:
    """nnU-Net case identifier of scan ``index`` (``PolyCLDemo_000``)."""
    return f"{DEMO_DATASET_SUFFIX}_{index:03d}"


def folders_with_id(dataset_id: int, raw_folder: str) -> dict[str, list[str]]:
    """``Dataset<ID>_*`` folders in ``raw_folder`` and in nnUNet_preprocessed / nnUNet_results (where those are set)."""
    roots = {"nnUNet_raw": raw_folder, "nnUNet_preprocessed": os.environ.get("nnUNet_preprocessed"),
             "nnUNet_results": os.environ.get("nnUNet_results")}
    return {name: sorted(p for p in glob(join(root, f"Dataset{dataset_id:03d}_*")) if isdir(p))
            for name, root in roots.items() if root}


def _validate(dataset_id: int, num_scans: int, unlabelled: int) -> None:
    if not 1 <= dataset_id <= 999:
        raise PolyCLUserError(f"Dataset id {dataset_id} is invalid: nnU-Net dataset ids are 1 to 999 "
                              f"(pass e.g. -d {DEMO_DATASET_ID}).")
    if num_scans < MIN_NUM_SCANS:
        raise PolyCLUserError(f"--num-scans {num_scans} is too small: nnU-Net's 5-fold cross-validation needs at "
                              f"least {MIN_NUM_SCANS} training cases (default {DEFAULT_NUM_SCANS}).")
    if not 0 <= unlabelled <= MAX_UNLABELLED or num_scans + unlabelled > 9999:
        raise PolyCLUserError(f"--unlabelled {unlabelled} is invalid: use 0 (none) to {MAX_UNLABELLED} unlabelled "
                              f"scans, and at most 9999 scans in all.")


def _raw_from_environment() -> str:
    try:
        return require_nnunet_folder("nnUNet_raw")
    except PolyCLUserError as e:
        raise PolyCLUserError(f"{e} Or pass the raw folder to write to with --raw FOLDER.") from None


def _refuse_existing(dataset_id: int, existing: dict[str, list[str]], unlabelled: int) -> None:
    found = [p for paths in existing.values() for p in paths]
    if found:
        hint = (" --unlabelled adds scans to an existing demo dataset only when its raw folder holds the demo scans "
                "of the same --seed and --num-scans." if unlabelled else "")
        raise PolyCLUserError(
            f"Dataset id {dataset_id} is already in use: {', '.join(found)}. Nothing was written.{hint} Choose "
            f"another id with -d, or pass --overwrite to replace the raw dataset folder of id {dataset_id} "
            f"(preprocessed data and results of that id are kept but become stale).")


def _holds_demo_scans(folder: str, num_scans: int, seed: int) -> bool:
    """Whether ``folder`` holds exactly the labelled demo scans of this seed and number (first and last compared)."""
    cases = [case_identifier(i) for i in range(num_scans)]
    if not isfile(join(folder, "dataset.json")):
        return False
    for sub, suffix in (("imagesTr", f"_0000{FILE_ENDING}"), ("labelsTr", FILE_ENDING)):
        names = sorted(n for n in os.listdir(join(folder, sub)) if not n.startswith(".")) if isdir(join(folder, sub)) \
            else []
        if names != [case + suffix for case in cases]:
            return False
    for index in (0, num_scans - 1):
        image = sitk.ReadImage(join(folder, "imagesTr", f"{cases[index]}_0000{FILE_ENDING}"))
        if not np.array_equal(sitk.GetArrayFromImage(image), generate_scan(seed, index).image):
            return False
    return True


def _write_dataset(folder: str, name: str, num_scans: int, seed: int) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    images_dir, labels_dir = join(folder, "imagesTr"), join(folder, "labelsTr")
    os.makedirs(images_dir)
    os.makedirs(labels_dir)
    for index in range(num_scans):
        case = case_identifier(index)
        generate_scan(seed, index).save(join(images_dir, f"{case}_0000{FILE_ENDING}"),
                                        join(labels_dir, f"{case}{FILE_ENDING}"))
    generate_dataset_json(
        folder, channel_names={0: "CT"}, labels={"background": 0, "liver": LIVER_LABEL},
        num_training_cases=num_scans, file_ending=FILE_ENDING, dataset_name=name,
        description=f"Synthetic abdominal CT-like scans with a liver-like organ made by nnunet-polycl "
                    f"(polycl_demo make-dataset, seed {seed}). For demos and tests only.",
        license="CC0 (synthetic data)", converted_by="polycl_demo make-dataset")


def _add_unlabelled(destination: str, num_scans: int, unlabelled: int, seed: int, overwrite: bool) -> DemoDataset:
    """Write the unlabelled scans into an existing demo dataset (its labelled scans untouched), atomically."""
    folder, organ_slices = raw_unlabelled_paths(destination)
    if isdir(folder) and not overwrite:
        raise PolyCLUserError(
            f"{destination} already has unlabelled scans in {folder}. Nothing was written. Pass --overwrite to "
            f"replace them with {unlabelled} (the labelled scans are kept: they are the same).")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.tmp-", dir=os.path.dirname(destination))
    try:
        write_unlabelled(tmp, num_scans, unlabelled, seed)
        new_folder, new_organ_slices = raw_unlabelled_paths(tmp)
        if isdir(folder):
            os.replace(folder, join(tmp, "old_unlabelled"))
        os.replace(new_organ_slices, organ_slices)
        os.replace(new_folder, folder)  # last: the folder appears complete, with its CSV beside it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoDataset(destination, num_scans, num_unlabelled=unlabelled, kept_labelled=True)


def make_demo_dataset(dataset_id: int = DEMO_DATASET_ID, num_scans: int = DEFAULT_NUM_SCANS, seed: int = 0,
                      raw_folder: str | None = None, overwrite: bool = False, unlabelled: int = 0) -> DemoDataset:
    """Generate the synthetic demo dataset into ``<raw_folder or $nnUNet_raw>/Dataset<ID>_PolyCLDemo``, with
    ``unlabelled`` further scans of the same series as its unlabelled folder (see :mod:`.unlabelled`).

    When the raw folder of this id already holds the demo dataset of this seed and number of scans, ``unlabelled``
    scans are added to it without touching its labelled scans (replacing unlabelled scans needs ``overwrite``).

    Raises PolyCLUserError when the id is in use (and ``overwrite`` is False), when nnUNet_raw is unset and no
    ``raw_folder`` is given, or for an invalid id / number of scans.
    """
    _validate(dataset_id, num_scans, unlabelled)
    raw = raw_folder or _raw_from_environment()
    existing = folders_with_id(dataset_id, raw)
    destination = join(raw, demo_dataset_name(dataset_id))
    if unlabelled and existing.get("nnUNet_raw") == [destination] and _holds_demo_scans(destination, num_scans, seed):
        return _add_unlabelled(destination, num_scans, unlabelled, seed, overwrite)
    if not overwrite:
        _refuse_existing(dataset_id, existing, unlabelled)
    os.makedirs(raw, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{demo_dataset_name(dataset_id)}.tmp-", dir=raw)
    try:
        _write_dataset(join(tmp, "new"), demo_dataset_name(dataset_id), num_scans, seed)
        if unlabelled:
            write_unlabelled(join(tmp, "new"), num_scans, unlabelled, seed)
        replaced = existing.get("nnUNet_raw", [])
        for i, old in enumerate(replaced):
            os.replace(old, join(tmp, f"old_{i}"))
        os.replace(join(tmp, "new"), destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoDataset(destination, num_scans, replaced, existing.get("nnUNet_preprocessed", []),
                       existing.get("nnUNet_results", []), num_unlabelled=unlabelled)
