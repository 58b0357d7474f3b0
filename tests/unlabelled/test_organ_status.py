"""Organ status of unlabelled scans for O / M: weak labels (--organ-slices) and pseudo-labels (--organ-status-from)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_polycl.paths import PolyCLUserError
from tests.conftest import run_cli
from tests.unlabelled.conftest import FEW_ID, FEW_NAME, cache_root, request

pytestmark = pytest.mark.e2e
CLI = ["polycl_pretrain", "-d", str(FEW_ID), "-f", "0", "-s", "O", "--epochs", "1", "-device", "cpu",
       "--batch-size", "8", "--num-workers", "0", "-np", "1", "--slice-fraction", "0.1"]


def unlabelled_cases(env: dict) -> list[str]:
    return sorted(p.name[:-len("_0000.nii.gz")] for p in Path(env["unlabelled"]).iterdir())


def blank_first_slices(path: Path, count: int) -> int:
    """Set the first ``count`` raw slices to 0, so that nnU-Net's nonzero crop drops them; returns the slice count."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[:count] = 0
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return array.shape[0]


def run_config(env: dict, proc) -> tuple[dict, str]:
    folder = Path(env["nnUNet_results"]) / FEW_NAME / "PolyCL_O__nnUNetPlans__2d" / "fold_0"
    return json.loads((folder / "config.json").read_text()), proc.stdout


def test_organ_strategy_with_weak_labels_maps_raw_slices_through_the_crop(few_env, tmp_path):
    from nnunet_polycl.slice_index import middle_slices

    a, b, c = unlabelled_cases(few_env)
    n_a = blank_first_slices(Path(few_env["unlabelled"]) / f"{a}_0000.nii.gz", 3)  # preprocessed z = raw z - 3
    table = tmp_path / "organ_slices.csv"
    table.write_text(f"case,first,last\n{a},5,9\n{a},14,15\n{b},,\n")
    proc = run_cli([*CLI, "--unlabelled", few_env["unlabelled"], "--organ-slices", str(table)], few_env)
    config, out = run_config(few_env, proc)

    scans = {Path(s["case"]).name: s for s in config["unlabelled"]["scans"]}
    assert scans[a]["status"] == "".join("1" if 5 <= r <= 9 or 14 <= r <= 15 else "0" for r in range(3, n_a))
    assert set(scans[b]["status"]) == {"0"} and scans[c]["status"] is None
    assert [scans[x]["status_source"] for x in (a, b, c)] == ["weak", "weak", None]
    n_c = json.loads((cache_root(few_env) / "records" / f"{c}.json").read_text())["shape"][1]
    left_out = int(np.diff(middle_slices(n_c, 0.1)).item())
    assert config["unlabelled"]["num_slices_left_out"] == left_out
    assert f"{left_out} slices without organ status left out of O" in out
    assert config["unlabelled"]["organ_slices"]["file"] == str(table)


def test_organ_slices_outside_a_scan_is_an_error_before_anything_is_written(few_env, tmp_path):
    from nnunet_polycl.pretraining.session import prepare

    a = unlabelled_cases(few_env)[0]
    table = tmp_path / "organ_slices.json"
    table.write_text(json.dumps([{"case": a, "first": 3, "last": 400}]))
    with pytest.raises(PolyCLUserError, match=rf"slice ranges outside their scan: {a}: 3-400 \(the scan has slices 0-"):
        prepare(request(few_env, strategy="O", organ_slices=str(table)))
    assert not list(Path(few_env["nnUNet_preprocessed"], FEW_NAME).glob("polycl_unlabelled__*"))
    assert list(Path(few_env["nnUNet_results"]).iterdir()) == []


def _predicted_areas(env: dict, model: Path, cases: list[str], out: Path) -> dict[str, dict]:
    """What nnUNetv2_predict predicts, preprocessed as a training label by nnU-Net: areas in the encoder's crop."""
    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.unlabelled.pseudo_labels import organ_areas

    images = out / "images"
    images.mkdir(parents=True)
    for case in cases:
        shutil.copy(Path(env["unlabelled"]) / f"{case}_0000.nii.gz", images)
    run_cli(["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(out), "-m", str(model), "-f", "0",
             "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    ctx = load_plans_context(FEW_NAME)
    preprocessor = ctx.configuration_manager.preprocessor_class(verbose=False)
    areas = {}
    for case in cases:
        _, seg, _ = preprocessor.run_case([str(images / f"{case}_0000.nii.gz")], str(out / f"{case}.nii.gz"),
                                          ctx.plans_manager, ctx.configuration_manager, ctx.dataset_json)
        areas[case] = organ_areas(seg[0], ctx.patch_size)
    return areas


def test_organ_strategy_with_pseudo_labels_of_a_smoke_trained_baseline(few_env, smoke_baseline, tmp_path):
    from nnunet_polycl.pretraining.session import prepare

    a, b, c = unlabelled_cases(few_env)
    table = tmp_path / "organ_slices.csv"
    table.write_text(f"case,first,last\n{b},,\n")  # a weak label wins over the pseudo-label
    flags = ["--unlabelled", few_env["unlabelled"], "--organ-status-from", str(smoke_baseline), "--min-organ-area",
             "3", "--organ-slices", str(table)]
    config, out = run_config(few_env, run_cli([*CLI, *flags], few_env))
    model = config["unlabelled"]["organ_status_from"]
    assert model["folder"] == str(smoke_baseline) and model["folds"] == ["0"] and model["min_organ_area"] == 3
    assert model["other_dataset_opt_in"] is False and "2 pseudo-labelled" in out
    scans = {Path(s["case"]).name: s for s in config["unlabelled"]["scans"]}
    assert [scans[x]["status_source"] for x in (a, b, c)] == ["pseudo", "weak", "pseudo"]

    cached = sorted((cache_root(few_env) / "organ_status" / model["cache_key"]).glob("*.json"))
    assert [p.stem for p in cached] == [a, c]
    for path in cached:
        areas = json.loads(path.read_text())["areas"]
        total = np.sum(list(areas.values()), axis=0) if areas else np.zeros(len(scans[path.stem]["status"]))
        assert scans[path.stem]["status"] == "".join("1" if t >= 3 else "0" for t in total)
    expected = _predicted_areas(few_env, smoke_baseline, [a], tmp_path / "predicted")  # one scan: test time
    assert json.loads(cached[0].read_text())["areas"] == expected[a]

    stamps = [p.stat().st_mtime_ns for p in cached]
    run = prepare(request(few_env, strategy="O", organ_status_from=str(smoke_baseline), min_organ_area=3,
                          organ_slices=str(table), slice_fraction=0.1, overwrite=True))
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # predicted once: the rerun reads the cache
    assert run.unlabelled.status_sources == ["pseudo", "weak", "pseudo"]


def _model_copy(model: Path, target: Path, **plans_changes) -> Path:
    shutil.copytree(model, target, ignore=shutil.ignore_patterns("validation", "*.png", "*.txt"))
    plans = json.loads((target / "plans.json").read_text())
    plans.update(plans_changes)
    (target / "plans.json").write_text(json.dumps(plans))
    return target


def test_pseudo_label_model_with_other_plans_or_of_another_dataset_is_refused(few_env, smoke_baseline, tmp_path):
    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.pretraining.session import prepare
    from nnunet_polycl.unlabelled.pseudo_labels import check_model_folder

    replanned = _model_copy(smoke_baseline, tmp_path / "replanned", transpose_backward=[0, 2, 1])
    with pytest.raises(PolyCLUserError, match=r"plans that differ from .*differences: transpose_backward"):
        prepare(request(few_env, strategy="O", organ_status_from=str(replanned)))
    other = _model_copy(smoke_baseline, tmp_path / "other", dataset_name="Dataset123_Spleen")
    with pytest.raises(PolyCLUserError, match="is a model of Dataset123_Spleen.*--organ-status-other-dataset"):
        prepare(request(few_env, strategy="O", organ_status_from=str(other)))
    with pytest.raises(PolyCLUserError, match="is not an nnU-Net model folder"):
        prepare(request(few_env, strategy="O", organ_status_from=str(tmp_path)))
    assert not list(Path(few_env["nnUNet_preprocessed"], FEW_NAME).glob("polycl_unlabelled__*"))
    assert list(Path(few_env["nnUNet_results"]).iterdir()) == []

    accepted = check_model_folder(str(other), load_plans_context(FEW_NAME), None, other_dataset_ok=True)
    assert accepted.other_dataset and accepted.target_values == (1,) and accepted.record()["dataset_name"] == \
        "Dataset123_Spleen"
    labels = json.loads((other / "dataset.json").read_text())
    labels["labels"] = {"background": 0, "spleen": 1}
    (other / "dataset.json").write_text(json.dumps(labels))
    with pytest.raises(PolyCLUserError, match="has no label named liver; it predicts spleen"):
        check_model_folder(str(other), load_plans_context(FEW_NAME), None, other_dataset_ok=True)
