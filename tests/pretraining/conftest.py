"""Fixtures of the pre-training tests: small copies of the preprocessed demo dataset, and the real-CT dataset.

The demo's 2D encoder costs about 1.6 GFLOP per slice and pass; a whole fold of the demo is too slow for CPU test
budgets, and PolyCL-O needs whole scans (the middle slices of every demo scan contain the liver). So the end-to-end
tests pre-train on a few whole scans copied from nnU-Net's preprocessed output of the demo (cases, plans and
fingerprint unchanged; ``-f all``, as nnU-Net requires for fewer than 5 cases).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, smoke_env

SMALL_ID, SMALL_NAME = 989, "Dataset989_PolyCLSmall"
NO_ORGAN_ID, NO_ORGAN_NAME = 988, "Dataset988_PolyCLNoOrgan"
SMALL_CASES = 2
# PolyCL-S on the middle 20% of two demo scans (6 slices): batches of 4 and 2 triplets, a few seconds per epoch on CPU.
S_ARGS = ["-d", str(SMALL_ID), "-f", "all", "-s", "S", "-device", "cpu", "--batch-size", "4",
          "--slice-fraction", "0.2", "--num-workers", "1"]
S_EPOCHS = 3
# Metrics of a run that do not depend on timing: equal between equivalent runs.
RESULT_METRICS = ("loss", "cos_pos", "cos_neg", "accuracy", "lr")


def smallest_cases(preprocessed: Path, count: int) -> list[str]:
    """The ``count`` demo cases with the fewest slices (read with nnU-Net's dataset class)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = str(preprocessed / "nnUNetPlans_2d")
    dataset_class = infer_dataset_class(folder)
    ids = sorted(dataset_class.get_identifiers(folder))
    dataset = dataset_class(folder, ids)
    return sorted(ids, key=lambda c: (dataset.load_case(c)[0].shape[1], c))[:count]


def copy_preprocessed(source: Path, root: Path, name: str, cases: list[str], empty_segmentations: bool) -> Path:
    """Copy ``cases`` of a preprocessed dataset into ``root/preprocessed/name``; optionally blank their labels."""
    target = root / "preprocessed" / name
    (target / "nnUNetPlans_2d").mkdir(parents=True)
    for file in ("dataset.json", "dataset_fingerprint.json"):
        shutil.copy(source / file, target / file)
    plans = json.loads((source / "nnUNetPlans.json").read_text())
    plans["dataset_name"] = name
    (target / "nnUNetPlans.json").write_text(json.dumps(plans, indent=4))
    for case in cases:
        for suffix in (".b2nd", ".pkl", "_seg.b2nd"):
            shutil.copy(source / "nnUNetPlans_2d" / f"{case}{suffix}", target / "nnUNetPlans_2d" / f"{case}{suffix}")
        if empty_segmentations:
            _blank_segmentation(target / "nnUNetPlans_2d", case)
    return target


def _blank_segmentation(folder: Path, case: str) -> None:
    """Set every labelled voxel of a case to background, keeping -1 outside the crop mask (nnU-Net's writer)."""
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    seg = np.asarray(nnUNetDatasetBlosc2(str(folder), [case]).load_case(case)[1][:])
    seg[seg > 0] = 0
    (folder / f"{case}_seg.b2nd").unlink()
    nnUNetDatasetBlosc2.save_seg(seg, str(folder / f"{case}_seg"))


@pytest.fixture(scope="session")
def small_demo_root(preprocessed_demo, tmp_path_factory) -> Path:
    """nnU-Net root holding Dataset989_PolyCLSmall (the demo's smallest whole scans) and Dataset988_PolyCLNoOrgan
    (the same scans without any labelled voxel)."""
    root = tmp_path_factory.mktemp("pretrain_small")
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir()
    cases = smallest_cases(preprocessed_demo, SMALL_CASES)
    copy_preprocessed(preprocessed_demo, root, SMALL_NAME, cases, empty_segmentations=False)
    copy_preprocessed(preprocessed_demo, root, NO_ORGAN_NAME, cases, empty_segmentations=True)
    return root


@pytest.fixture
def small_env(small_demo_root, tmp_path) -> dict[str, str]:
    """Subprocess environment on the small datasets with a fresh, per-test nnUNet_results."""
    results = tmp_path / "results"
    results.mkdir()
    return smoke_env(small_demo_root, results)


def s_folder(results: Path) -> Path:
    return results / SMALL_NAME / "PolyCL_S__nnUNetPlans__2d" / "fold_all"


@pytest.fixture(scope="session")
def s_reference(small_demo_root, tmp_path_factory) -> Path:
    """An uninterrupted single-process run of ``S_ARGS`` for ``S_EPOCHS`` epochs; returns its folder."""
    results = tmp_path_factory.mktemp("s_reference")
    run_cli(["polycl_pretrain", *S_ARGS, "--epochs", str(S_EPOCHS)], smoke_env(small_demo_root, results))
    return s_folder(results)
