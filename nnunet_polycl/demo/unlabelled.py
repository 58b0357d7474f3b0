"""The demo's unlabelled scans (``polycl_demo make-dataset --unlabelled N``) and their weak organ labels.

Unlabelled scan ``i`` is scan ``num_scans + i`` of the seed's series (:func:`generate_scan` draws each scan from
``default_rng([seed, index])``), so the unlabelled scans are never labelled ones and the same seed gives the same
scans. They go where a raw dataset keeps its unlabelled scans (see ``nnunet_polycl.paths``)::

    Dataset990_PolyCLDemo/imagesUnlabelled/PolyCLDemoUnlabelled_0020_0000.nii.gz   (named as in imagesTs)
    Dataset990_PolyCLDemo/imagesUnlabelled_organ_slices.csv                        (case,first,last)

The CSV is what ``--organ-slices`` reads: per scan the first and last slice that hold the organ in the generator's
label (0-based, inclusive, along the image's slice axis: the NIfTI file's third axis, which nnU-Net's 2d configuration
slices for these scans), the quick annotation a radiologist gives instead of a segmentation.
"""
from __future__ import annotations

import csv
import os
from os.path import join

import numpy as np

from nnunet_polycl.demo.synthetic_ct import FILE_ENDING, generate_scan
from nnunet_polycl.paths import raw_unlabelled_paths

UNLABELLED_CASE_PREFIX = "PolyCLDemoUnlabelled"
MAX_UNLABELLED = 5000  # 4-digit case numbers keep the sorted order of the files the generator's order


def unlabelled_case_identifier(index: int) -> str:
    """Case identifier of the unlabelled scan with generator index ``index`` (``PolyCLDemoUnlabelled_0020``)."""
    return f"{UNLABELLED_CASE_PREFIX}_{index:04d}"


def organ_range(label: np.ndarray) -> tuple[int, int]:
    """First and last slice (axis 0, inclusive) that contain the organ."""
    slices = np.flatnonzero((label > 0).reshape(label.shape[0], -1).any(axis=1))
    return int(slices[0]), int(slices[-1])


def write_unlabelled(dataset_folder: str, first_index: int, count: int, seed: int) -> None:
    """Write scans ``first_index`` .. ``first_index + count - 1`` of the seed's series into ``dataset_folder``'s
    unlabelled folder and their organ slice ranges into the CSV beside it (both must not exist yet)."""
    images, organ_slices = raw_unlabelled_paths(dataset_folder)
    os.makedirs(images)
    rows = []
    for index in range(first_index, first_index + count):
        scan, case = generate_scan(seed, index), unlabelled_case_identifier(index)
        scan.save(join(images, f"{case}_0000{FILE_ENDING}"))
        rows.append((case, *organ_range(scan.label)))
    with open(organ_slices, "x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("case", "first", "last"))
        writer.writerows(rows)
