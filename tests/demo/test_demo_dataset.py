"""The synthetic demo dataset: deterministic, valid for nnU-Net, organ in part of every scan, never clobbers data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_polycl.demo import (
    DEFAULT_NUM_SCANS,
    case_identifier,
    generate_scan,
    make_demo_dataset,
    organ_slice_counts,
)
from tests.conftest import DEMO_ID, run_cli, smoke_env

SMALL = 6  # scans per dataset in the fast tests


def read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory) -> Path:
    """A demo dataset with the default number of scans, written in-process into a fresh raw folder."""
    raw = tmp_path_factory.mktemp("demo_raw")
    return Path(make_demo_dataset(DEMO_ID, raw_folder=str(raw)).folder)


def nnunet_folders(tmp_path: Path) -> dict[str, str]:
    for sub in ("raw", "preprocessed", "results"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return smoke_env(tmp_path)


def test_same_seed_same_scan_other_seed_differs():
    for index in range(3):
        a, b, other = generate_scan(0, index), generate_scan(0, index), generate_scan(1, index)
        assert a.image.dtype == np.int16 and a.label.dtype == np.uint8
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.spacing == b.spacing
        assert a.image.shape != other.image.shape or not np.array_equal(a.image, other.image)


def test_scans_vary_and_stay_small():
    scans = [generate_scan(0, i) for i in range(8)]
    assert len({s.image.shape for s in scans}) > 1 and len({s.spacing for s in scans}) > 1
    for s in scans:
        nz, ny, nx = s.image.shape
        assert 16 <= nz <= 28 and 40 <= ny <= 52 and 40 <= nx <= 52
        assert 3.0 <= s.spacing[0] <= 5.0 and 1.5 <= s.spacing[1] == s.spacing[2] <= 2.0
        assert s.image[:, 0, 0].max() < -900  # air in the corner
        assert 30 < s.image[s.label > 0].mean() < 90  # liver-like HU
        assert s.image.max() > 300  # bone


def test_dataset_files_match_generator_and_nnunet_format(demo_raw):
    meta = json.loads((demo_raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "liver": 1}
    assert meta["numTraining"] == DEFAULT_NUM_SCANS and meta["file_ending"] == ".nii.gz"
    assert len(list((demo_raw / "imagesTr").iterdir())) == len(list((demo_raw / "labelsTr").iterdir())) == \
        DEFAULT_NUM_SCANS
    for index in (0, DEFAULT_NUM_SCANS - 1):
        scan, case = generate_scan(0, index), case_identifier(index)
        image, spacing = read(demo_raw / "imagesTr" / f"{case}_0000.nii.gz")
        label, label_spacing = read(demo_raw / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(image, scan.image)
        np.testing.assert_array_equal(label, scan.label)
        assert spacing == label_spacing == pytest.approx(tuple(reversed(scan.spacing)))


def test_nnunet_dataset_integrity_check_passes(demo_raw):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(demo_raw), num_processes=1)


def test_every_scan_has_slices_with_and_without_the_organ(demo_raw):
    for label_file in sorted((demo_raw / "labelsTr").iterdir()):
        label, _ = read(label_file)
        with_organ, without_organ = organ_slice_counts(label)
        assert with_organ >= 3 and without_organ >= 2, label_file.name
        assert set(np.unique(label)) == {0, 1}


def test_same_seed_writes_identical_voxels(tmp_path):
    first = Path(make_demo_dataset(DEMO_ID, SMALL, seed=3, raw_folder=str(tmp_path / "a")).folder)
    second = Path(make_demo_dataset(DEMO_ID, SMALL, seed=3, raw_folder=str(tmp_path / "b")).folder)
    other = Path(make_demo_dataset(DEMO_ID, SMALL, seed=4, raw_folder=str(tmp_path / "c")).folder)
    name = f"{case_identifier(SMALL - 1)}_0000.nii.gz"
    a, b, c = (read(folder / "imagesTr" / name)[0] for folder in (first, second, other))
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


@pytest.mark.parametrize("where", ["raw", "preprocessed", "results"])
def test_cli_refuses_an_id_in_use_and_writes_nothing(tmp_path, where):
    env = nnunet_folders(tmp_path)
    existing = tmp_path / where / f"Dataset{DEMO_ID}_MyOwnData"
    existing.mkdir()
    (existing / "dataset.json").write_text("mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    proc = run_cli(["polycl_demo", "make-dataset", "-d", str(DEMO_ID), "--num-scans", str(SMALL)], env, check=False)
    assert proc.returncode != 0
    assert str(existing) in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (existing / "dataset.json").read_text() == "mine"


def test_cli_overwrite_replaces_only_the_raw_dataset(tmp_path):
    env = nnunet_folders(tmp_path)
    old_raw = tmp_path / "raw" / f"Dataset{DEMO_ID}_MyOwnData"
    old_raw.mkdir()
    stale = tmp_path / "preprocessed" / f"Dataset{DEMO_ID}_PolyCLDemo"
    stale.mkdir()
    (stale / "nnUNetPlans.json").write_text("{}")

    proc = run_cli(["polycl_demo", "make-dataset", "-d", str(DEMO_ID), "--num-scans", str(SMALL), "--overwrite"],
                   env)
    new = tmp_path / "raw" / f"Dataset{DEMO_ID}_PolyCLDemo"
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [new.name]
    assert len(list((new / "imagesTr").iterdir())) == SMALL
    assert (stale / "nnUNetPlans.json").read_text() == "{}"
    assert str(new) in proc.stdout and str(old_raw) in proc.stdout and str(stale) in proc.stdout
    assert f"nnUNetv2_plan_and_preprocess -d {DEMO_ID} -c 2d" in proc.stdout


def test_cli_without_nnunet_raw_explains_and_raw_flag_works(tmp_path):
    env = {k: v for k, v in smoke_env(tmp_path).items() if k != "nnUNet_raw"}
    proc = run_cli(["polycl_demo", "make-dataset"], env, check=False)
    assert proc.returncode != 0
    assert "nnUNet_raw" in proc.stderr and "--raw" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())

    run_cli(["polycl_demo", "make-dataset", "-d", "7", "--num-scans", "5", "--raw", str(tmp_path / "mine")], env)
    assert len(list((tmp_path / "mine" / "Dataset007_PolyCLDemo" / "labelsTr").iterdir())) == 5


@pytest.mark.parametrize("args, message", [(["--num-scans", "3"], "--num-scans 3"), (["-d", "1000"], "1000")])
def test_invalid_arguments_are_refused(tmp_path, args, message):
    proc = run_cli(["polycl_demo", "make-dataset", *args], nnunet_folders(tmp_path), check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not any((tmp_path / "raw").iterdir())


@pytest.mark.e2e
def test_preprocessed_demo_has_one_2d_case_per_scan_with_48x48_patches(preprocessed_demo):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    plans = json.loads((preprocessed_demo / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    assert plans["patch_size"] == [48, 48]  # small enough for CPU runs: a 4-stage U-Net
    folder = preprocessed_demo / "nnUNetPlans_2d"
    cases = sorted(p.name[:-len(".b2nd")] for p in folder.glob("*.b2nd") if not p.name.endswith("_seg.b2nd"))
    assert cases == [case_identifier(i) for i in range(DEFAULT_NUM_SCANS)]
    dataset = infer_dataset_class(str(folder))(str(folder))
    for case in cases[:4]:
        data, seg, _, _ = dataset.load_case(case)
        has_organ = (np.asarray(seg[0]) > 0).reshape(seg.shape[1], -1).any(axis=1)
        assert has_organ.any() and not has_organ.all(), case
        assert data.shape[2:] == seg.shape[2:] and max(data.shape[2:]) <= 64


def test_no_leftover_temporary_folders(demo_raw):
    assert os.listdir(demo_raw.parent) == [demo_raw.name]


def _organ_slices_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_unlabelled_scans_are_further_scans_of_the_generator_with_their_organ_ranges(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunet_polycl.demo.unlabelled import unlabelled_case_identifier
    from nnunet_polycl.unlabelled.weak_labels import read_organ_slices

    result = make_demo_dataset(DEMO_ID, SMALL, seed=2, raw_folder=str(tmp_path / "a"), unlabelled=3)
    folder, csv_file = Path(result.unlabelled_folder), Path(result.organ_slices_file)
    assert folder == Path(result.folder) / "imagesUnlabelled" and csv_file.name == "imagesUnlabelled_organ_slices.csv"
    cases = [unlabelled_case_identifier(i) for i in range(SMALL, SMALL + 3)]  # generator indices after the labelled
    assert sorted(p.name for p in folder.iterdir()) == [f"{c}_0000.nii.gz" for c in cases]
    labelled = [read(p)[0] for p in sorted((Path(result.folder) / "imagesTr").iterdir())]
    rows = _organ_slices_rows(csv_file)
    assert [r["case"] for r in rows] == cases
    for index, case, row in zip(range(SMALL, SMALL + 3), cases, rows, strict=True):
        image, spacing = read(folder / f"{case}_0000.nii.gz")
        scan = generate_scan(2, index)
        np.testing.assert_array_equal(image, scan.image)
        assert spacing == pytest.approx(tuple(reversed(scan.spacing)))
        assert not any(image.shape == other.shape and np.array_equal(image, other) for other in labelled)
        organ = np.flatnonzero([(scan.label[z] > 0).any() for z in range(scan.label.shape[0])])
        assert (int(row["first"]), int(row["last"])) == (organ[0], organ[-1])
    assert read_organ_slices(str(csv_file), cases) == {  # what --organ-slices reads
        case: [(int(r["first"]), int(r["last"]))] for case, r in zip(cases, rows, strict=True)}
    verify_dataset_integrity(result.folder, num_processes=1)  # nnU-Net ignores the unlabelled folder

    again = make_demo_dataset(DEMO_ID, SMALL, seed=2, raw_folder=str(tmp_path / "b"), unlabelled=3)
    for case in cases:
        np.testing.assert_array_equal(read(folder / f"{case}_0000.nii.gz")[0],
                                      read(Path(again.unlabelled_folder) / f"{case}_0000.nii.gz")[0])
    assert Path(again.organ_slices_file).read_text() == csv_file.read_text()
    assert sorted(os.listdir(tmp_path / "a")) == [f"Dataset{DEMO_ID}_PolyCLDemo"]  # no temporary folder left


def test_cli_adds_unlabelled_scans_to_an_existing_demo_without_touching_its_labelled_scans(tmp_path):
    env = nnunet_folders(tmp_path)
    make = ["polycl_demo", "make-dataset", "-d", str(DEMO_ID), "--num-scans", str(SMALL)]
    run_cli(make, env)
    dataset = tmp_path / "raw" / f"Dataset{DEMO_ID}_PolyCLDemo"
    (tmp_path / "preprocessed" / dataset.name).mkdir()  # as after nnUNetv2_plan_and_preprocess

    def labelled_files() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in dataset.rglob("*") if "Unlabelled" not in str(p)}

    before = labelled_files()
    proc = run_cli([*make, "--unlabelled", "2"], env)
    assert labelled_files() == before
    assert len(list((dataset / "imagesUnlabelled").iterdir())) == 2 and "Kept the" in proc.stdout
    assert str(dataset / "imagesUnlabelled") in proc.stdout and "stale" not in proc.stdout

    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    again = run_cli([*make, "--unlabelled", "3"], env, check=False)
    assert again.returncode == 1 and "already has unlabelled scans" in again.stderr and "--overwrite" in again.stderr
    other_seed = run_cli([*make, "--unlabelled", "3", "--seed", "1"], env, check=False)
    assert other_seed.returncode == 1 and "same --seed and --num-scans" in other_seed.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # refused: nothing written

    run_cli([*make, "--unlabelled", "3", "--overwrite"], env)
    assert labelled_files() == before
    assert len(list((dataset / "imagesUnlabelled").iterdir())) == 3
    assert len(_organ_slices_rows(dataset / "imagesUnlabelled_organ_slices.csv")) == 3
    assert os.listdir(tmp_path / "raw") == [dataset.name]
