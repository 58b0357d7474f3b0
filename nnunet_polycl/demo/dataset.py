"""Write the synthetic demo scans as an nnU-Net raw dataset, without ever clobbering a user's dataset.

Layout (nnU-Net v2 raw format)::

    $nnUNet_raw/Dataset990_PolyCLDemo/dataset.json
    $nnUNet_raw/Dataset990_PolyCLDemo/imagesTr/PolyCLDemo_000_0000.nii.gz   (int16 HU, channel "CT")
    $nnUNet_raw/Dataset990_PolyCLDemo/labelsTr/PolyCLDemo_000.nii.gz        (uint8, 0 = background, 1 = liver)

The dataset is written into a hidden temporary folder next to its destination and moved into place at the end, so an
interrupted run never leaves a half-written dataset. A dataset id already used in nnUNet_raw, nnUNet_preprocessed or
nnUNet_results is refused unless ``overwrite`` is set; ``overwrite`` replaces only the raw folder(s) of that id and
reports the preprocessed and results folders of that id as stale (it never deletes them: results hold trained models,
and ``nnUNetv2_plan_and_preprocess`` rewrites the preprocessed data).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from glob import glob
from os.path import isdir, join

import SimpleITK as sitk

from nnunet_polycl.demo.synthetic_ct import LIVER_LABEL, SyntheticScan, generate_scan
from nnunet_polycl.paths import PolyCLUserError, require_nnunet_folder

DEMO_DATASET_ID = 990
DEMO_DATASET_SUFFIX = "PolyCLDemo"
DEFAULT_NUM_SCANS = 20
MIN_NUM_SCANS = 5  # nnU-Net's 5-fold cross-validation needs at least 5 training cases
FILE_ENDING = ".nii.gz"


@dataclass
class DemoDataset:
    """What :func:`make_demo_dataset` did: the new raw folder, the raw folders it replaced, and the (kept) folders of
    the same id in nnUNet_preprocessed and nnUNet_results that were made from the replaced data."""

    folder: str
    num_scans: int
    replaced: list[str] = field(default_factory=list)
    stale_preprocessed: list[str] = field(default_factory=list)
    stale_results: list[str] = field(default_factory=list)


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


def _validate(dataset_id: int, num_scans: int) -> None:
    if not 1 <= dataset_id <= 999:
        raise PolyCLUserError(f"Dataset id {dataset_id} is invalid: nnU-Net dataset ids are 1 to 999 "
                              f"(pass e.g. -d {DEMO_DATASET_ID}).")
    if num_scans < MIN_NUM_SCANS:
        raise PolyCLUserError(f"--num-scans {num_scans} is too small: nnU-Net's 5-fold cross-validation needs at "
                              f"least {MIN_NUM_SCANS} training cases (default {DEFAULT_NUM_SCANS}).")


def _raw_from_environment() -> str:
    try:
        return require_nnunet_folder("nnUNet_raw")
    except PolyCLUserError as e:
        raise PolyCLUserError(f"{e} Or pass the raw folder to write to with --raw FOLDER.") from None


def _refuse_existing(dataset_id: int, existing: dict[str, list[str]]) -> None:
    found = [p for paths in existing.values() for p in paths]
    if found:
        raise PolyCLUserError(
            f"Dataset id {dataset_id} is already in use: {', '.join(found)}. Nothing was written. Choose another id "
            f"with -d, or pass --overwrite to replace the raw dataset folder of id {dataset_id} (preprocessed data "
            f"and results of that id are kept but become stale).")


def _write_scan(scan: SyntheticScan, images_dir: str, labels_dir: str, case: str) -> None:
    for array, path in ((scan.image, join(images_dir, f"{case}_0000{FILE_ENDING}")),
                        (scan.label, join(labels_dir, f"{case}{FILE_ENDING}"))):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing(tuple(reversed(scan.spacing)))  # SimpleITK wants x, y, z
        sitk.WriteImage(itk, path, useCompression=True)


def _write_dataset(folder: str, name: str, num_scans: int, seed: int) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    images_dir, labels_dir = join(folder, "imagesTr"), join(folder, "labelsTr")
    os.makedirs(images_dir)
    os.makedirs(labels_dir)
    for index in range(num_scans):
        _write_scan(generate_scan(seed, index), images_dir, labels_dir, case_identifier(index))
    generate_dataset_json(
        folder, channel_names={0: "CT"}, labels={"background": 0, "liver": LIVER_LABEL},
        num_training_cases=num_scans, file_ending=FILE_ENDING, dataset_name=name,
        description=f"Synthetic abdominal CT-like scans with a liver-like organ made by nnunet-polycl "
                    f"(polycl_demo make-dataset, seed {seed}). For demos and tests only.",
        license="CC0 (synthetic data)", converted_by="polycl_demo make-dataset")


def make_demo_dataset(dataset_id: int = DEMO_DATASET_ID, num_scans: int = DEFAULT_NUM_SCANS, seed: int = 0,
                      raw_folder: str | None = None, overwrite: bool = False) -> DemoDataset:
    """Generate the synthetic demo dataset into ``<raw_folder or $nnUNet_raw>/Dataset<ID>_PolyCLDemo``.

    Raises PolyCLUserError when the id is in use (and ``overwrite`` is False), when nnUNet_raw is unset and no
    ``raw_folder`` is given, or for an invalid id / number of scans.
    """
    _validate(dataset_id, num_scans)
    raw = raw_folder or _raw_from_environment()
    existing = folders_with_id(dataset_id, raw)
    if not overwrite:
        _refuse_existing(dataset_id, existing)
    os.makedirs(raw, exist_ok=True)
    destination = join(raw, demo_dataset_name(dataset_id))
    tmp = tempfile.mkdtemp(prefix=f".{demo_dataset_name(dataset_id)}.tmp-", dir=raw)
    try:
        _write_dataset(join(tmp, "new"), demo_dataset_name(dataset_id), num_scans, seed)
        replaced = existing.get("nnUNet_raw", [])
        for i, old in enumerate(replaced):
            os.replace(old, join(tmp, f"old_{i}"))
        os.replace(join(tmp, "new"), destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoDataset(destination, num_scans, replaced, existing.get("nnUNet_preprocessed", []),
                       existing.get("nnUNet_results", []))
