"""``polycl_evaluate`` / ``evaluate_folders`` on small NIfTI folders with known answers, run as a user runs it."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from os.path import dirname, join
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunet_polycl.evaluation import evaluate_folders, summary_rows
from nnunet_polycl.evaluation.cli import evaluate_entry
from nnunet_polycl.metrics import mask_metrics
from nnunet_polycl.paths import PolyCLUserError

SITK_SPACING = (0.8, 1.5, 3.0)  # x, y, z: array axes (z, y, x) have spacing (3.0, 1.5, 0.8)
SHAPE = (16, 24, 28)
LABELS = {"background": 0, "liver": 1, "tumor": 2}


def write_seg(array: np.ndarray, path: Path, spacing=SITK_SPACING) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def liver(offset=(0, 0, 0)) -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    z, y, x = 3 + offset[0], 5 + offset[1], 6 + offset[2]
    seg[z:z + 8, y:y + 12, x:x + 14] = 1
    return seg


def with_tumor(seg: np.ndarray, value: int = 2, inside: bool = True) -> np.ndarray:
    """A small tumor inside the liver (a hole in the liver label) or outside it (liver unchanged)."""
    seg = seg.copy()
    seg[(slice(6, 8), slice(9, 12), slice(10, 13)) if inside else (slice(12, 14), slice(1, 3), slice(1, 3))] = value
    return seg


# case: (reference, prediction, expected liver HD in mm, expected tumor status)
CASES = {
    "case_000": (with_tumor(liver()), with_tumor(liver((2, 0, 0))), 2 * 3.0, "ok"),
    "case_001": (with_tumor(liver()), with_tumor(liver(), value=0), 0.0, "empty_prediction"),
    "case_002": (liver(), liver((0, 0, 3)), 3 * 0.8, "both_empty"),
    "case_003": (liver(), with_tumor(liver((0, 1, 0)), inside=False), 1.5, "empty_reference"),
}


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    ref, pred = tmp_path / "labelsTr", tmp_path / "predictions"
    ref.mkdir()
    pred.mkdir()
    for case, (r, p, _, _) in CASES.items():
        write_seg(r, ref / f"{case}.nii.gz")
        write_seg(p, pred / f"{case}.nii.gz")
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz", "channel_names": {"0": "CT"},
                              "numTraining": len(CASES)}))
    return dict(ref=ref, pred=pred, dj=dj, out=tmp_path / "evaluation")


def cli_args(folders: dict[str, Path], *extra: str) -> list[str]:
    return ["-ref", str(folders["ref"]), "-pred", str(folders["pred"]), "-djfile", str(folders["dj"]), *extra]


def polycl_evaluate(folders: dict[str, Path], *extra: str) -> subprocess.CompletedProcess:
    """The installed command in a subprocess, as a user types it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([join(dirname(sys.executable), "polycl_evaluate"), *cli_args(folders, *extra)], env=env,
                          capture_output=True, text=True, timeout=300)


def polycl_evaluate_in_process(folders: dict[str, Path], capsys, *extra: str) -> tuple[int, str]:
    """The same command line through ``evaluate_entry`` in this process (cheaper): exit code and stderr."""
    code = 0
    try:
        evaluate_entry(cli_args(folders, "-np", "1", *extra))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def strict_json(path: Path) -> dict:
    def no_nan(token: str):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=no_nan)


def test_cli_writes_summaries_with_the_expected_numbers(folders):
    proc = polycl_evaluate(folders, "-o", str(folders["out"]), "-np", "1")
    assert proc.returncode == 0, proc.stderr
    assert "liver: Dice" in proc.stdout
    summary = strict_json(folders["out"] / "summary.json")
    assert summary["cases"] == sorted(CASES)
    for entry in summary["metric_per_case"]:
        ref, pred, liver_hd, tumor_status = CASES[entry["case"]]
        assert entry["spacing"] == pytest.approx([3.0, 1.5, 0.8])
        assert entry["metrics"]["liver"]["hd"] == pytest.approx(liver_hd, abs=1e-5)
        assert entry["metrics"]["tumor"]["status"] == tumor_status
        nnunet = compute_metrics(entry["reference_file"], entry["prediction_file"], SimpleITKIO(), [1, 2])
        for label, value in (("liver", 1), ("tumor", 2)):  # nnU-Net's own Dice is the oracle (NaN = both empty)
            ours, theirs = entry["metrics"][label]["dice"], nnunet["metrics"][value]["Dice"]
            assert ours == pytest.approx(theirs) if ours is not None else np.isnan(theirs)
    tumor = summary["aggregates"]["tumor"]
    assert (tumor["n_cases"], tumor["n_ok"], tumor["n_empty_prediction"], tumor["n_empty_reference"],
            tumor["n_both_empty"]) == (4, 1, 1, 1, 1)
    assert (tumor["dice"]["n"], tumor["hd"]["n"]) == (3, 1)
    assert tumor["dice"]["mean"] == pytest.approx(1 / 3)
    assert summary["aggregates"]["liver"]["hd"]["mean"] == pytest.approx(np.mean([c[2] for c in CASES.values()]),
                                                                         abs=1e-5)
    with open(folders["out"] / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(CASES) * 2
    assert {r["status"] for r in rows if r["label"] == "tumor"} == {c[3] for c in CASES.values()}
    assert all(r["hd"] == "" for r in rows if r["status"] != "ok")
    md = (folders["out"] / "summary.md").read_text()
    assert "| tumor |" in md and "| case_003 | tumor | empty_reference |" in md


def test_serial_run_matches_the_worker_pool_and_selects_labels(folders):
    pooled = evaluate_folders(str(folders["ref"]), str(folders["pred"]), str(folders["dj"]), num_processes=2,
                              progress=False)
    serial = evaluate_folders(str(folders["ref"]), str(folders["pred"]), str(folders["dj"]), labels=["2"],
                              num_processes=1, progress=False)
    assert list(serial["labels"]) == ["tumor"]
    assert summary_rows(serial) == [r for r in summary_rows(pooled) if r["label"] == "tumor"]
    assert not (folders["pred"] / "polycl_evaluation").exists()  # output_folder=None writes nothing


def test_missing_case_is_listed_and_intersection_evaluates_the_rest(folders, capsys):
    (folders["pred"] / "case_003.nii.gz").unlink()
    proc = polycl_evaluate(folders, "-np", "1")
    assert proc.returncode != 0
    assert "case_003" in proc.stderr and "--intersection" in proc.stderr and "Traceback" not in proc.stderr
    code, err = polycl_evaluate_in_process(folders, capsys, "--intersection")
    assert code == 0, err
    summary = strict_json(folders["pred"] / "polycl_evaluation" / "summary.json")
    assert summary["missing_in_prediction"] == ["case_003"] and len(summary["metric_per_case"]) == 3


@pytest.mark.parametrize("problem, expected", [
    ("shape", ["case_002", "shape"]),
    ("spacing", ["case_001", "spacing"]),
    ("label", ["spleen", "liver=1", "tumor=2"]),
    ("undeclared_value", ["case_003", "label values [3", "does not declare"]),
    ("dataset_json", ["dataset.json", "does not exist"]),
])
def test_bad_input_gives_a_clear_error_without_traceback(folders, capsys, problem, expected):
    extra = []
    if problem == "shape":
        write_seg(np.zeros((16, 24, 20)), folders["pred"] / "case_002.nii.gz")
    elif problem == "spacing":
        write_seg(liver(), folders["pred"] / "case_001.nii.gz", spacing=(0.8, 1.5, 2.5))
    elif problem == "undeclared_value":
        write_seg(with_tumor(liver(), value=3), folders["pred"] / "case_003.nii.gz")
    elif problem == "label":
        extra = ["--labels", "liver", "spleen"]
    else:
        folders["dj"] = folders["dj"].with_name("missing_dataset.json")
    code, err = polycl_evaluate_in_process(folders, capsys, *extra)
    assert code != 0
    assert "\npolycl_evaluate: error:" in "\n" + err and "Traceback" not in err
    assert all(word in err for word in expected), err


@pytest.mark.parametrize("inside", [False, True])
def test_an_output_folder_that_is_a_file_is_one_line(folders, capsys, inside):
    existing = folders["out"].parent / "results.txt"
    existing.write_text("keep me")
    output = existing / "sub" if inside else existing
    code, err = polycl_evaluate_in_process(folders, capsys, "-o", str(output))
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [f"polycl_evaluate: error: The output folder {output} "
                                        f"{'lies inside the file ' + str(existing) if inside else 'is a file'}, not a "
                                        f"folder: the summaries (summary.json, summary.csv, summary.md) are written "
                                        f"into a folder. Choose another -o."]
    assert existing.read_text() == "keep me"


def test_existing_summaries_are_kept_unless_overwrite(folders):
    first = evaluate_folders(str(folders["ref"]), str(folders["pred"]), str(folders["dj"]), str(folders["out"]),
                             num_processes=1, progress=False)
    before = (folders["out"] / "summary.json").read_text()
    with pytest.raises(PolyCLUserError, match="already exists"):
        evaluate_folders(str(folders["ref"]), str(folders["pred"]), str(folders["dj"]), str(folders["out"]),
                         labels=["liver"], num_processes=1, progress=False)
    assert (folders["out"] / "summary.json").read_text() == before
    again = evaluate_folders(str(folders["ref"]), str(folders["pred"]), str(folders["dj"]), str(folders["out"]),
                             labels=["liver"], num_processes=1, overwrite=True, progress=False)
    assert list(again["aggregates"]) == ["liver"] and list(first["aggregates"]) == ["liver", "tumor"]
    assert sorted(p.name for p in folders["out"].iterdir()) == ["summary.csv", "summary.json", "summary.md"]


def test_regions_are_evaluated_as_unions_of_labels(folders):
    regions = {"labels": {"background": 0, "liver_and_tumor": [1, 2], "tumor": 2}, "regions_class_order": [1, 2],
               "file_ending": ".nii.gz"}
    summary = evaluate_folders(str(folders["ref"]), str(folders["pred"]), regions, num_processes=1, progress=False)
    assert summary["labels"] == {"liver_and_tumor": (1, 2), "tumor": 2}
    case_001 = next(c for c in summary["metric_per_case"] if c["case"] == "case_001")["metrics"]
    ref, pred = CASES["case_001"][:2]
    union = mask_metrics(ref > 0, pred > 0, (3.0, 1.5, 0.8))
    assert case_001["liver_and_tumor"]["dice"] == pytest.approx(union.dice)
    assert case_001["liver_and_tumor"]["hd95"] == pytest.approx(union.hd95)
