"""The real-CT fixture: a tiny nnU-Net-preprocessed dataset made from ../shared/data/ct-abdomen-example."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, smoke_env

REAL_CT_ID = 991
REAL_CT_NAME = f"Dataset{REAL_CT_ID}_RealCTLiver"
# Second case: a crop of the scan (slices and in-plane), so the dataset has two scans of different sizes.
REAL_CT_CROP = (slice(30, 100), slice(8, -8), slice(6, -6))  # numpy (z, y, x)


def write_real_ct_raw(shared_ct: Path, raw: Path) -> Path:
    """nnU-Net raw dataset: the real CT (case ct_000) and a cropped copy (ct_001), label 1 = liver."""
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / REAL_CT_NAME
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    image, mask = sitk.ReadImage(str(shared_ct / "ct.nii.gz")), sitk.ReadImage(str(shared_ct / "liver.nii.gz"))
    z, y, x = REAL_CT_CROP  # SimpleITK indexes (x, y, z)
    for case, (img, seg) in {"ct_000": (image, mask), "ct_001": (image[x, y, z], mask[x, y, z])}.items():
        sitk.WriteImage(img, str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(seg, str(folder / "labelsTr" / f"{case}.nii.gz"))
    generate_dataset_json(str(folder), {0: "CT"}, {"background": 0, "liver": 1}, 2, ".nii.gz",
                          dataset_name=REAL_CT_NAME)
    return folder


@pytest.fixture(scope="session")
def preprocessed_real_ct(shared_ct, tmp_path_factory) -> Path:
    """``$nnUNet_preprocessed/Dataset991_RealCTLiver``: 2 real CT cases preprocessed by nnU-Net for ``2d``.

    Its nnU-Net root (raw / preprocessed / results) is ``preprocessed_real_ct.parents[1]``; use
    ``smoke_env(preprocessed_real_ct.parents[1])`` for subprocesses. 3 mm isotropic: nnU-Net does not resample.
    """
    root = tmp_path_factory.mktemp("real_ct")
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir()
    write_real_ct_raw(shared_ct, root / "raw")
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for the smoke setting 0
    env = dict(smoke_env(root), nnUNet_n_proc_DA="1")
    run_cli(["nnUNetv2_plan_and_preprocess", "-d", str(REAL_CT_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    folder = root / "preprocessed" / REAL_CT_NAME
    assert (folder / "nnUNetPlans_2d").is_dir()
    return folder
