"""The demo dataset split into a labelled and an unlabelled part.

``Dataset986_PolyCLFewLabels`` holds the 5 demo scans with the fewest slices as its labelled cases: nnU-Net's raw
files (imagesTr, labelsTr) and nnU-Net's preprocessed output of the demo (plans, cases and gt_segmentations copied,
so no second planning run). The raw images of the next 3 demo scans, named as nnU-Net's imagesTs, are the unlabelled
folder. With 5 cases nnU-Net's 5-fold split has 4 training cases and 1 validation case in fold 0.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, smoke_env
from tests.pretraining.conftest import smallest_cases

FEW_ID, FEW_NAME = 986, "Dataset986_PolyCLFewLabels"
NUM_LABELLED, NUM_UNLABELLED = 5, 3
SMOKE_BASELINE = "nnUNetTrainerPolyCL_Baseline_smoke"


def request(env: dict, **kwargs):
    """A PretrainRequest on Dataset986 fold 0 with the unlabelled folder of ``env`` and tiny CPU settings."""
    from nnunet_polycl.pretraining.settings import PretrainRequest

    settings = dict(fold=0, strategy="S", device="cpu", epochs=1, batch_size=8, num_workers=0, num_processes=1,
                    unlabelled=[env["unlabelled"]])
    return PretrainRequest(FEW_ID, **{**settings, **kwargs})


def cache_root(env: dict) -> Path:
    """The cache folder of the unlabelled folder of ``env``."""
    [folder] = Path(env["nnUNet_preprocessed"], FEW_NAME).glob("polycl_unlabelled__unlabelled-*__nnUNetPlans_2d")
    return folder


def _copy_labelled(demo_pre: Path, demo_raw: Path, root: Path, cases: list[str]) -> None:
    pre, raw = root / "preprocessed" / FEW_NAME, root / "raw" / FEW_NAME
    for sub in ("nnUNetPlans_2d", "gt_segmentations"):
        (pre / sub).mkdir(parents=True)
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    shutil.copy(demo_pre / "dataset_fingerprint.json", pre / "dataset_fingerprint.json")
    plans = json.loads((demo_pre / "nnUNetPlans.json").read_text())
    plans["dataset_name"] = FEW_NAME
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans, indent=4))
    dataset_json = json.loads((demo_pre / "dataset.json").read_text())
    dataset_json["numTraining"] = len(cases)
    for folder in (pre, raw):
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
    for case in cases:
        for suffix in (".b2nd", ".pkl", "_seg.b2nd"):
            shutil.copy(demo_pre / "nnUNetPlans_2d" / f"{case}{suffix}", pre / "nnUNetPlans_2d" / f"{case}{suffix}")
        shutil.copy(demo_pre / "gt_segmentations" / f"{case}.nii.gz", pre / "gt_segmentations" / f"{case}.nii.gz")
        shutil.copy(demo_raw / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(demo_raw / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")


@pytest.fixture(scope="session")
def few_labels_root(preprocessed_demo, nnunet_root, tmp_path_factory) -> Path:
    """nnU-Net root with Dataset986 (5 labelled demo scans) and ``root/unlabelled_source`` (3 more, raw images)."""
    root = tmp_path_factory.mktemp("few_labels")
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir()
    demo_raw = nnunet_root / "raw" / preprocessed_demo.name
    ordered = smallest_cases(preprocessed_demo, NUM_LABELLED + NUM_UNLABELLED)
    _copy_labelled(preprocessed_demo, demo_raw, root, sorted(ordered[:NUM_LABELLED]))
    (root / "unlabelled_source").mkdir()
    for case in ordered[NUM_LABELLED:]:
        shutil.copy(demo_raw / "imagesTr" / f"{case}_0000.nii.gz", root / "unlabelled_source" / f"{case}_0000.nii.gz")
    return root


@pytest.fixture
def few_env(few_labels_root, tmp_path, monkeypatch) -> dict[str, str]:
    """Per test: a fresh copy of the unlabelled folder (``unlabelled`` key) and a fresh nnUNet_preprocessed copy and
    nnUNet_results, also set in this process's environment (for in-process calls)."""
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(few_labels_root / "preprocessed", preprocessed)
    shutil.copytree(few_labels_root / "unlabelled_source", tmp_path / "unlabelled")
    (tmp_path / "results").mkdir()
    env = smoke_env(few_labels_root, tmp_path / "results")
    env.update(nnUNet_preprocessed=str(preprocessed), unlabelled=str(tmp_path / "unlabelled"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_def_n_proc",
                "nnUNet_compile"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture(scope="session")
def smoke_baseline(few_labels_root, tmp_path_factory) -> Path:
    """A baseline trained by the real ``nnUNetv2_train`` on fold 0 of the labelled part (2 epochs x 3 iterations);
    returns its nnU-Net model folder."""
    results = tmp_path_factory.mktemp("few_labels_results")
    preprocessed = tmp_path_factory.mktemp("few_labels_pre") / "preprocessed"
    shutil.copytree(few_labels_root / "preprocessed", preprocessed)
    env = dict(smoke_env(few_labels_root, results), nnUNet_preprocessed=str(preprocessed))
    run_cli(["nnUNetv2_train", str(FEW_ID), "2d", "0", "-tr", SMOKE_BASELINE, "-device", "cpu"], env)
    folder = results / FEW_NAME / f"{SMOKE_BASELINE}__nnUNetPlans__2d"
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    return folder
