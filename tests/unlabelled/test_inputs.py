"""Bad unlabelled input is a clear error naming the offending file and the fix (fast: nothing is preprocessed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.unlabelled import UnlabelledOptions, check_options
from nnunet_polycl.unlabelled.discovery import discover_folder, discover_unlabelled
from nnunet_polycl.unlabelled.weak_labels import check_ranges, read_organ_slices, weak_status
from tests.conftest import run_cli
from tests.unlabelled.conftest import FEW_ID, FEW_NAME

CT = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
CT_PET = {"channel_names": {"0": "CT", "1": "PET"}, "file_ending": ".nii.gz"}


def folder_with(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_images_are_found_by_nnunets_imagests_naming(tmp_path):
    folder = folder_with(tmp_path, "b_0001.nii.gz", "b_0000.nii.gz", "a_1_0000.nii.gz", "a_1_0001.nii.gz", ".hidden")
    (folder / "sub_0000.nii.gz").mkdir()  # folders are ignored
    cases = discover_folder(str(folder), CT_PET)
    assert [(c.case_id, [Path(f).name for f in c.files]) for c in cases] == [
        ("a_1", ["a_1_0000.nii.gz", "a_1_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    assert cases[0].source == str(folder) and cases[0].key == str(folder / "a_1")
    assert len(discover_unlabelled([str(folder), str(folder) + "/"], CT_PET)) == 2  # a folder given twice counts once


@pytest.mark.parametrize("names, dataset, fragments", [
    ((), CT, ["holds no images", "CASE_0000.nii.gz"]),
    ((".DS_Store",), CT, ["holds no images"]),
    (("a_0000.nii.gz", "b_0000.nii", "notes.txt"), CT, ["do not end in the dataset's file ending '.nii.gz'",
                                                        "b_0000.nii, notes.txt"]),
    (("a_0000.nii.gz", "b.nii.gz", "c_000.nii.gz"), CT, ["b.nii.gz, c_000.nii.gz do not follow nnU-Net's naming",
                                                        "CASE_0000.nii.gz"]),
    (("a_0000.nii.gz", "a_0001.nii.gz"), CT, ["another channel count", "1 channel(s) (0000=CT)", "a: 0000, 0001"]),
    (("a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"), CT_PET, ["mixed channels", "a: 0000",
                                                                   "CASE_0000.nii.gz to CASE_0001.nii.gz"]),
    (("a_0001.nii.gz",), CT, ["another channel count", "a: 0001"]),
])
def test_bad_folders_are_refused_with_the_reason(tmp_path, names, dataset, fragments):
    folder = folder_with(tmp_path, *names)
    with pytest.raises(PolyCLUserError) as error:
        discover_folder(str(folder), dataset)
    assert str(folder) in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(PolyCLUserError, match="does not exist or is not a folder"):
        discover_unlabelled([str(tmp_path / "nope")], CT)


def test_organ_slices_csv_and_json_give_inclusive_ranges(tmp_path):
    csv_file = tmp_path / "weak.csv"
    csv_file.write_text("Case, First ,last\nscan_1,3,5\nscan_1,9,9\nscan_2,,\n")
    json_file = tmp_path / "weak.json"
    json_file.write_text(json.dumps([{"case": "scan_1", "first": 3, "last": 5}, {"case": "scan_1", "first": 9,
                                     "last": 9}, {"case": "scan_2", "first": None, "last": None}]))
    for path in (csv_file, json_file):
        ranges = read_organ_slices(str(path), ["scan_1", "scan_2", "scan_3"])
        assert ranges == {"scan_1": [(3, 5), (9, 9)], "scan_2": []}
    record = {"first_slice": 2, "shape": [1, 10, 64, 64]}  # nnU-Net's crop dropped raw slices 0 and 1
    organ, known = weak_status(ranges["scan_1"], record)
    assert organ.tolist() == [r in (3, 4, 5, 9) for r in range(2, 12)] and known.all()
    check_ranges(ranges, {"scan_1": 10, "scan_2": 4}, "weak.csv")
    with pytest.raises(PolyCLUserError, match=r"outside their scan: scan_1: 9-9 \(the scan has slices 0-8\)"):
        check_ranges(ranges, {"scan_1": 9, "scan_2": 4}, "weak.csv")


@pytest.mark.parametrize("text, fragment", [
    ("case,first\nscan_1,3\n", "needs the columns case, first, last"),
    ("case,first,last\nscan_9,3,4\n", "row 1: case 'scan_9' is not one of the --unlabelled scans"),
    ("case,first,last\nscan_1,3,4\nscan_1,x,4\n", "row 2: first must be a slice index"),
    ("case,first,last\nscan_1,-1,4\n", "first must be a slice index (an integer >= 0), got '-1'"),
    ("case,first,last\nscan_1,6,4\n", "first slice 6 is after last slice 4"),
    ("case,first,last\nscan_1,6,\n", "give both first and last"),
])
def test_bad_organ_slices_files_are_refused(tmp_path, text, fragment):
    path = tmp_path / "weak.csv"
    path.write_text(text)
    with pytest.raises(PolyCLUserError) as error:
        read_organ_slices(str(path), ["scan_1"])
    assert fragment in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("name", ["weak.csv", "weak.json"])
@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", bytes(range(256))])
def test_a_binary_organ_slices_file_is_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PolyCLUserError) as error:
        read_organ_slices(str(path), ["scan_1"])
    message = str(error.value)
    assert message.startswith(f"--organ-slices file {path} is not ") and "\n" not in message


def test_organ_slices_file_kinds(tmp_path):
    with pytest.raises(PolyCLUserError, match="does not exist"):
        read_organ_slices(str(tmp_path / "missing.csv"), ["a"])
    (tmp_path / "weak.txt").write_text("a,1,2")
    with pytest.raises(PolyCLUserError, match="use a .csv or .json file"):
        read_organ_slices(str(tmp_path / "weak.txt"), ["a"])
    (tmp_path / "weak.json").write_text(json.dumps({"a": [1, 2]}))
    with pytest.raises(PolyCLUserError, match="JSON list of objects with the keys case, first, last"):
        read_organ_slices(str(tmp_path / "weak.json"), ["a"])


@pytest.mark.parametrize("options, strategy, fragment", [
    (UnlabelledOptions((), organ_slices="w.csv"), "O", "add --unlabelled FOLDER"),
    (UnlabelledOptions(("u",), organ_status_from="m"), "S", "strategy S uses no organ status"),
    (UnlabelledOptions(("u",), other_dataset_model=True), "O", "only applies together with --organ-status-from"),
    (UnlabelledOptions(("u",), min_organ_area=0), "O", "--min-organ-area must be >= 1"),
    (UnlabelledOptions(("u",), num_processes=0), "S", "-np must be >= 1"),
    (UnlabelledOptions((), count=3), "S", "--unlabelled-count needs --unlabelled FOLDER"),
    (UnlabelledOptions(("u",), count=0), "S", "--unlabelled-count must be >= 1"),
])
def test_conflicting_flags_are_refused_before_anything_is_read(options, strategy, fragment):
    with pytest.raises(PolyCLUserError, match=fragment):
        check_options(options, strategy)
    check_options(UnlabelledOptions(("u",), organ_slices="w.csv", organ_status_from="m"), "M")


def test_unlabelled_count_takes_the_first_scans_in_name_order(tmp_path):
    from nnunet_polycl.unlabelled.scans import first_scans

    cases = discover_folder(str(folder_with(tmp_path, "c_0000.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz")), CT)
    assert [c.case_id for c in first_scans(cases, 2)] == ["a", "b"] and first_scans(cases, None) == cases
    with pytest.raises(PolyCLUserError, match="--unlabelled-count 4: .* hold only 3 scans"):
        first_scans(cases, 4)


def test_pseudo_label_status_needs_the_minimum_area_in_the_crop():
    from nnunet_polycl.unlabelled.pseudo_labels import organ_areas, pseudo_status

    seg = np.zeros((3, 100, 100), dtype=np.int16)
    seg[0, 0:10, 0:10] = 1  # outside the centred 64 x 64 crop (rows / columns 18-81)
    seg[1, 40:43, 40:43] = 1  # 9 pixels inside
    seg[2, 40:45, 40:45] = 2  # 25 pixels of another label inside
    areas = organ_areas(seg, (64, 64))
    assert areas == {"1": [0, 9, 0], "2": [0, 0, 25]}
    assert pseudo_status(areas, 3, None, 10)[0].tolist() == [False, False, True]
    assert pseudo_status(areas, 3, (1,), 9)[0].tolist() == [False, True, False]
    assert pseudo_status({}, 3, None, 1)[1].all()  # known: the model saw no organ


@pytest.mark.e2e
def test_command_line_error_is_one_line_and_nothing_is_written(few_env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(["polycl_pretrain", "-d", str(FEW_ID), "-s", "S", "-device", "cpu", "--unlabelled", str(empty)],
                   few_env, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("polycl_pretrain: error: --unlabelled folder "), proc.stderr
    assert "holds no images" in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert list(Path(few_env["nnUNet_results"]).iterdir()) == []
    assert not list(Path(few_env["nnUNet_preprocessed"], FEW_NAME).glob("polycl_*"))
