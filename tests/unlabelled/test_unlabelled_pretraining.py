"""Pre-training on labelled + unlabelled scans: S uses every slice, the cache is reused and invalidated per file,
an interrupted preprocessing run resumes, two runs started at once share the cache, and duplicates of dataset cases
are counted once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.unlabelled.conftest import FEW_NAME, NUM_UNLABELLED, cache_root, request

pytestmark = pytest.mark.e2e


def case_slices(folder: Path, case: str) -> int:
    import blosc2

    return blosc2.open(urlpath=str(folder / f"{case}.b2nd"), mode="r").shape[1]


def test_scan_strategy_uses_every_labelled_and_unlabelled_slice_once_per_epoch(few_env):
    import SimpleITK as sitk

    from nnunet_polycl.paths import PolyCLUserError
    from nnunet_polycl.pretraining.session import execute, prepare
    from nnunet_polycl.slice_index import middle_slices
    from nnunet_polycl.splits import training_cases

    run = prepare(request(few_env, num_processes=2, slice_fraction=0.1))  # 2 spawned nnU-Net preprocessor processes
    data = cache_root(few_env) / "data"
    unlabelled = sorted(p.name[:-len("_0000.nii.gz")] for p in Path(few_env["unlabelled"]).iterdir())
    assert sorted(p.stem for p in data.glob("*.pkl")) == unlabelled
    train, _ = training_cases(run.ctx, 0, write_missing=False)
    labelled = Path(run.ctx.data_folder)
    expected = {("labelled", c): case_slices(labelled, c) for c in train}
    expected.update({("unlabelled", c): case_slices(data, c) for c in unlabelled})
    expected = {key: np.diff(middle_slices(n, 0.1)).item() for key, n in expected.items()}

    index = run.index
    counted = {}
    for scan, (case, folder) in enumerate(zip(index.case_ids, index.case_folders, strict=True)):
        kind = "unlabelled" if Path(folder) == data else "labelled"
        counted[(kind, case)] = int(np.count_nonzero(index.scan == scan))
    assert counted == expected and len(index) == sum(expected.values())
    for epoch in (0, 1):
        anchors = run.task.sampler.make_epoch(epoch)[:, 0]
        assert np.array_equal(np.sort(anchors), np.arange(len(index)))  # every slice an anchor, exactly once

    folder = Path(execute(run))
    config = json.loads((folder / "config.json").read_text())
    assert config["num_slices"] == len(index) and config["unlabelled"]["num_scans"] == NUM_UNLABELLED
    assert config["unlabelled"]["num_slices_left_out"] == 0
    assert config["settings"]["unlabelled_fingerprint"] == config["unlabelled"]["fingerprint"]
    log = (folder / "training_log.txt").read_text()
    assert f"Unlabelled: {NUM_UNLABELLED} scans from 1 folder(s)" in log and "Epoch 1/1" in log

    source = sorted(Path(few_env["unlabelled"]).iterdir())[0]
    sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(source)), [True, False, False]), str(source.parent / "new_0000.nii.gz"))
    with pytest.raises(PolyCLUserError, match="different settings.*unlabelled_fingerprint"):
        prepare(request(few_env, num_processes=2, slice_fraction=0.1, continue_training=True, epochs=2))
    assert not (data / "new.pkl").exists()  # refused before the new scan was preprocessed


def test_rerun_reuses_the_cache_and_a_changed_file_invalidates_only_its_case(few_env, capsys):
    import SimpleITK as sitk

    from nnunet_polycl.pretraining.session import prepare

    prepare(request(few_env))
    data = cache_root(few_env) / "data"
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    capsys.readouterr()
    prepare(request(few_env))
    assert "need preprocessing" not in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before

    source = sorted(Path(few_env["unlabelled"]).iterdir())[0]
    changed = source.name[:-len("_0000.nii.gz")]
    image = sitk.ReadImage(str(source))
    sitk.WriteImage(image[:, :, 2:], str(source))  # the user replaced the scan: 2 slices fewer
    run = prepare(request(few_env))
    assert f"1 of {NUM_UNLABELLED} unlabelled scans" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    assert {n for n in after if after[n] != before[n]} == {f"{changed}{s}" for s in (".b2nd", "_seg.b2nd", ".pkl")}
    scan = run.index.case_ids.index(changed, len(run.index.case_ids) - NUM_UNLABELLED)
    assert np.count_nonzero(run.index.scan == scan) == image.GetSize()[2] - 2


PREPARE = ("import sys\nfrom nnunet_polycl.pretraining.session import prepare\n"
           "from nnunet_polycl.pretraining.settings import PretrainRequest\n"
           "prepare(PretrainRequest(986, fold=int(sys.argv[2]), strategy='S', device='cpu', epochs=1, batch_size=8, "
           "num_workers=0, num_processes=1, unlabelled=[sys.argv[1]]))\n")


def test_two_runs_started_at_once_take_turns_filling_the_cache(few_env):
    """Two pre-trainings (two folds, as a user starts them side by side) on the same new unlabelled folder: one
    preprocesses the scans, the other waits for it and reads them (unlocked, the second wiped the first's .tmp)."""
    env = {**os.environ, **few_env}
    runs = [subprocess.Popen([sys.executable, "-c", PREPARE, few_env["unlabelled"], str(fold)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for fold in (0, 1)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum("need preprocessing" in out for out in outputs) == 1, outputs
    records = sorted(p.stem for p in (cache_root(few_env) / "records").glob("*.json"))
    assert len(records) == NUM_UNLABELLED and not list((cache_root(few_env) / ".tmp").iterdir())


def test_interrupted_preprocessing_resumes_and_never_reads_a_half_written_case(few_env, capsys):
    from nnunet_polycl.pretraining.session import prepare

    prepare(request(few_env))
    root = cache_root(few_env)
    victim = sorted(p.stem for p in (root / "records").glob("*.json"))[1]
    (root / "records" / f"{victim}.json").unlink()  # killed after moving the files, before the record
    (root / "data" / f"{victim}.b2nd").write_bytes(b"half a file")
    (root / ".tmp" / "other_case").mkdir(parents=True)
    (root / ".tmp" / "other_case.b2nd").write_bytes(b"left over")
    capsys.readouterr()
    run = prepare(request(few_env))
    assert f"1 of {NUM_UNLABELLED} unlabelled scans" in capsys.readouterr().out
    assert sorted(os.listdir(root / ".tmp")) == []
    scan = run.index.case_ids.index(victim, len(run.index.case_ids) - NUM_UNLABELLED)
    image = run.task.dataset.slices.image(scan, 0)
    assert image.shape[1:] == tuple(run.ctx.patch_size) and np.isfinite(image).all()


def test_duplicate_of_a_validation_case_is_left_out_and_of_a_training_case_counted_once(few_env):
    from nnunet_polycl.network import load_plans_context
    from nnunet_polycl.pretraining.session import prepare
    from nnunet_polycl.splits import training_cases
    from nnunet_polycl.unlabelled import UnlabelledOptions, check_unlabelled

    raw = Path(few_env["nnUNet_raw"]) / FEW_NAME / "imagesTr"
    train, val = training_cases(load_plans_context(FEW_NAME), 0, write_missing=False)
    extra = Path(few_env["unlabelled"]).parent / "more"
    extra.mkdir()
    shutil.copy(raw / f"{val[0]}_0000.nii.gz", extra / "copy_of_val_0000.nii.gz")
    shutil.copy(raw / f"{train[0]}_0000.nii.gz", extra / "copy_of_train_0000.nii.gz")
    shutil.copy(next(Path(few_env["unlabelled"]).iterdir()), extra / "same_as_unlabelled_0000.nii.gz")

    run = prepare(request(few_env, unlabelled=[few_env["unlabelled"], str(extra)]))
    assert "copy_of_val" not in run.index.case_ids and "copy_of_train" not in run.index.case_ids
    assert "same_as_unlabelled" not in run.index.case_ids
    assert run.index.case_ids.count(train[0]) == 1 and val[0] not in run.index.case_ids
    plan = check_unlabelled(run.ctx, UnlabelledOptions((few_env["unlabelled"], str(extra))), train, val, None)
    roles = {Path(d["case"]).name: (d["same_as"], d["role"]) for d in plan.duplicates}
    assert roles["copy_of_val"] == (f"dataset case {val[0]}", "a validation case of the fold: left out of pre-training")
    assert roles["copy_of_train"][0] == f"dataset case {train[0]}" and "used once" in roles["copy_of_train"][1]
    assert roles["same_as_unlabelled"][1] == "another unlabelled scan: used once"
    assert not any(p.name.startswith("copy_of") for p in cache_root(few_env).parent.rglob("*.pkl"))


def test_truncated_scan_stops_the_run_naming_it_and_finished_cases_stay_cached(few_env):
    """A .nii.gz cut mid-data (``head -c 3000``) would be read as mostly zeros: it is refused, by name."""
    from nnunet_polycl.paths import PolyCLUserError
    from nnunet_polycl.pretraining.session import prepare

    *complete, cut = sorted(Path(few_env["unlabelled"]).iterdir())  # preprocessed in this order (num_processes=1)
    cut.write_bytes(cut.read_bytes()[:3000])
    with pytest.raises(PolyCLUserError, match="truncated") as error:
        prepare(request(few_env))
    assert str(error.value).startswith(str(cut)) and "\n" not in str(error.value)
    records = sorted(p.stem for p in (cache_root(few_env) / "records").glob("*.json"))
    assert records == [p.name[:-len("_0000.nii.gz")] for p in complete]


def test_unlabelled_count_uses_the_first_scans_and_keeps_the_others_cached(few_env):
    from nnunet_polycl.pretraining.session import prepare

    prepare(request(few_env))
    records = cache_root(few_env) / "records"
    assert len(list(records.glob("*.json"))) == NUM_UNLABELLED
    run = prepare(request(few_env, unlabelled_count=2))
    first_two = sorted(p.name[:-len("_0000.nii.gz")] for p in Path(few_env["unlabelled"]).iterdir())[:2]
    assert run.unlabelled.record("S")["count"] == 2 and run.unlabelled.record("S")["num_scans"] == 2
    assert [Path(s["case"]).name for s in run.unlabelled.record("S")["scans"]] == first_two
    assert list(run.index.case_ids[-2:]) == first_two
    assert len(list(records.glob("*.json"))) == NUM_UNLABELLED  # a smaller count deletes nothing from the cache

