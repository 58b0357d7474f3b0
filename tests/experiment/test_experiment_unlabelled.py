"""``polycl_experiment`` with unlabelled scans: the ``unlabelled`` preset's grid is paired by seed, every pre-training
gets the unlabelled options it needs (checked on the real ``polycl_pretrain`` command line and config.json of one
CI-sized experiment), and bad unlabelled input is refused before anything is written."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_polycl.demo import generate_scan
from nnunet_polycl.demo.unlabelled import organ_range, unlabelled_case_identifier, write_unlabelled
from tests.conftest import DEMO_ID, run_cli, smoke_env

NUM_SCANS, NUM_UNLABELLED = 20, 3  # the session's demo dataset, and unlabelled scans 20, 21, 22 of its seed 0


@pytest.fixture
def unlabelled(tmp_path) -> dict[str, str]:
    """The demo's first 3 unlabelled scans and their weak labels, written into a folder of their own."""
    write_unlabelled(str(tmp_path), NUM_SCANS, NUM_UNLABELLED, seed=0)
    return {"unlabelled": str(tmp_path / "imagesUnlabelled"),
            "organ_slices": str(tmp_path / "imagesUnlabelled_organ_slices.csv")}


def _request(tmp_path: Path, **changes):
    from nnunet_polycl.experiment.runner import ExperimentRequest

    return ExperimentRequest(**{"dataset": str(DEMO_ID), "preset": "unlabelled", "output_folder": str(tmp_path / "exp"),
                                "progress": False, **changes})


def test_the_log_line_names_the_unlabelled_scans_or_says_there_are_none():
    from nnunet_polycl.experiment.unlabelled import ExperimentUnlabelled

    assert ExperimentUnlabelled("/data/unl", None, 3).description() == (
        "Unlabelled scans: 3 of /data/unl, preprocessed once for every pre-training.")
    none = ExperimentUnlabelled(None, None, 0).description()
    assert "none (--unlabelled-count 0)" in none and "None" not in none


def test_unlabelled_preset_pairs_every_method_by_seed_and_passes_each_its_options(demo_in_process, tmp_path,
                                                                                unlabelled):
    from nnunet_polycl.experiment.run_queue import RunQueue
    from nnunet_polycl.experiment.runner import prepare
    from nnunet_polycl.experiment.steps import finetune_folder
    from nnunet_polycl.paths import PolyCLUserError

    ctx, runs, _ = prepare(_request(tmp_path, **unlabelled))
    seeds = sorted({r.seed for r in runs})
    assert len(seeds) >= 5 and {r.k for r in runs} == {1, 2, 4}
    for seed in seeds:
        for k in (1, 2, 4):
            paired = {r.arm: r for r in runs if r.seed == seed and r.k == k}
            assert sorted(paired) == sorted(["baseline", "S", "O", "O/layerwise", "O-pseudo"])  # one run per arm
            assert all(r.trainer("demo").endswith(f"_k{k}_seed{seed}") for r in paired.values())  # same subset
            assert paired["O-pseudo"].trainer("demo") == paired["O"].trainer("demo")
            assert paired["O-pseudo"].baseline.name == paired["baseline"].name
    pretrainings = {r.pretraining_name for r in runs if r.seed == 0}
    untagged = {name.rsplit("__", 1)[0] for name in pretrainings if name}  # without the settings tag
    assert {"S__seed0__N3", "O__seed0__N3", "O-pseudo__default__seed0__k1__N3"} <= untagged
    assert all("__N3__" in r.name for r in runs if r.method != "baseline")

    position = {r.name: i for i, r in enumerate(RunQueue(runs).order())}
    for run in runs:
        if run.method == "O-pseudo":
            assert position[run.name] > position[run.baseline.name]  # its pseudo-labels come from a finished run

    folder, organ_slices = (str(Path(p).resolve()) for p in (unlabelled["unlabelled"], unlabelled["organ_slices"]))
    common = ["--unlabelled", folder, "--unlabelled-count", "3"]
    model = str(Path(finetune_folder(ctx, runs[0].baseline)).parent)
    assert ctx.unlabelled.pretrain_arguments("S", None) == common
    assert ctx.unlabelled.pretrain_arguments("O", None) == [*common, "--organ-slices", organ_slices]
    assert ctx.unlabelled.pretrain_arguments("O-pseudo", model) == [*common, "--organ-status-from", model]
    identity = json.loads((tmp_path / "exp" / "experiment.json").read_text())["identity"]
    assert identity["unlabelled_folder"] == folder and identity["unlabelled_count"] == NUM_UNLABELLED
    assert identity["organ_slices_sha256"] == hashlib.sha256(Path(organ_slices).read_bytes()).hexdigest()

    with pytest.raises(PolyCLUserError, match="unlabelled_count: folder has 3, now 2"):  # other scans: not mixed
        prepare(_request(tmp_path, unlabelled_count=2, **unlabelled))
    with open(organ_slices, "a") as f:
        f.write(f"{unlabelled_case_identifier(NUM_SCANS)},0,1\n")  # one more weak range
    with pytest.raises(PolyCLUserError, match="organ_slices_sha256: folder has"):
        prepare(_request(tmp_path, **unlabelled))


@pytest.mark.parametrize("changes, message", [
    ({"methods": ("S", "O-pseudo")}, "O-pseudo pre-trains on pseudo-labels .* add baseline to --methods"),
    ({"pretraining_seeds": "shared"}, "O-pseudo pre-trains per seed and k .* --pretraining-seeds per-seed"),
    ({"unlabelled_count": 0}, "O-pseudo gives unlabelled scans .* drop it from --methods"),
    ({"unlabelled_count": 4}, "--unlabelled-count 4: .* hold only 3 scans"),
    ({"unlabelled": "/nowhere"}, "--unlabelled folder /nowhere does not exist"),
    ({"organ_slices": "/nowhere.csv"}, "--organ-slices file /nowhere.csv does not exist"),
    ({"preset": "demo", "unlabelled": None, "unlabelled_count": 2}, "describe unlabelled scans: add --unlabelled"),
    ({"preset": "demo", "unlabelled": None, "organ_slices": None, "methods": ("baseline", "O-pseudo")},
     "uses no unlabelled scans"),
    ({"unlabelled": None}, "polycl_demo make-dataset -d 990 --unlabelled 200"),  # the raw demo has none
])
def test_bad_unlabelled_input_is_refused_before_anything_is_written(demo_in_process, tmp_path, unlabelled, changes,
                                                                     message):
    from nnunet_polycl.experiment.runner import run_experiment
    from nnunet_polycl.paths import PolyCLUserError

    with pytest.raises(PolyCLUserError, match=message):
        run_experiment(_request(tmp_path, **{**unlabelled, **changes}))
    assert not (tmp_path / "exp").exists()


@pytest.fixture(scope="module")
def unlabelled_demo(nnunet_root, preprocessed_demo, tmp_path_factory) -> dict:
    """A demo dataset with 3 unlabelled scans written by ``polycl_demo make-dataset --unlabelled 3`` (same seed: the
    same labelled scans, so the session's preprocessed data is copied, not made again) and a CI-sized run of the
    unlabelled preset on it (baseline, O both ways, O-pseudo; seed 0; k = 1; the first 2 unlabelled scans)."""
    root = tmp_path_factory.mktemp("unlabelled_demo")
    for sub in ("raw", "results"):
        (root / sub).mkdir()
    env = smoke_env(root)
    run_cli(["polycl_demo", "make-dataset", "-d", str(DEMO_ID), "--unlabelled", str(NUM_UNLABELLED)], env)
    shutil.copytree(preprocessed_demo, root / "preprocessed" / preprocessed_demo.name)
    proc = run_cli(["polycl_experiment", "-d", str(DEMO_ID), "--preset", "unlabelled", "--methods", "baseline", "O",
                    "O-pseudo", "--seeds", "0", "--k", "1", "--unlabelled-count", "2", "--schedule", "smoke",
                    "--pretrain-epochs", "1", "--batch-size", "8", "--budgets", "1", "--jobs", "2", "--no-progress"],
                   env)
    raw = root / "raw" / preprocessed_demo.name
    return {"proc": proc, "raw": raw, "folder": root / "results" / preprocessed_demo.name /
            "PolyCL_experiment__unlabelled__N2__fold_0"}


def _one(folder: Path, pattern: str) -> Path:
    """The one folder matching ``pattern`` (run and pre-training names end in a settings tag)."""
    (match,) = [p for p in folder.glob(pattern) if p.is_dir()]
    return match


@pytest.mark.e2e
def test_runner_passes_the_unlabelled_options_to_each_pretraining(unlabelled_demo):
    folder, raw = unlabelled_demo["folder"], unlabelled_demo["raw"]
    images, organ_slices = raw / "imagesUnlabelled", raw / "imagesUnlabelled_organ_slices.csv"
    model = (_one(folder / "runs", "baseline__default__smoke__seed0__k1__*") / "nnUNet_results" / raw.name /
             "nnUNetTrainerPolyCL_Baseline_smoke_k1_seed0__nnUNetPlans__2d")
    first_two = [unlabelled_case_identifier(i) for i in (NUM_SCANS, NUM_SCANS + 1)]
    weak_folder = _one(folder / "pretraining", "O__seed0__N2__*")
    pseudo_folder = _one(folder / "pretraining", "O-pseudo__default__seed0__k1__N2__*")
    expected = {weak_folder.name: ["--organ-slices", str(organ_slices)],
                pseudo_folder.name: ["--organ-status-from", str(model)]}
    for name, organ_options in expected.items():
        command = (folder / "pretraining" / f"{name}.log").read_text().split("$ ", 1)[1].splitlines()[0]
        assert command.endswith(" ".join(["--unlabelled", str(images), "--unlabelled-count", "2", *organ_options]))
        assert ("--organ-slices" in command) != ("--organ-status-from" in command)
        record = json.loads((folder / "pretraining" / name / "config.json").read_text())["unlabelled"]
        assert record["folders"] == [str(images)] and record["count"] == 2
        assert [Path(s["case"]).name for s in record["scans"]] == first_two
    weak = json.loads((weak_folder / "config.json").read_text())["unlabelled"]
    assert weak["organ_slices"]["file"] == str(organ_slices) and weak["organ_status_from"] is None
    for scan, index in zip(weak["scans"], (NUM_SCANS, NUM_SCANS + 1), strict=True):
        first, last = organ_range(generate_scan(0, index).label)  # no crop along z: raw slice = preprocessed slice
        assert scan["status_source"] == "weak" and scan["status"] == "".join(
            "1" if first <= z <= last else "0" for z in range(len(scan["status"])))
    pseudo = json.loads((pseudo_folder / "config.json").read_text())
    assert pseudo["unlabelled"]["organ_slices"] is None and pseudo["unlabelled"]["organ_status_from"]["folder"] == \
        str(model)
    assert {s["status_source"] for s in pseudo["unlabelled"]["scans"]} == {"pseudo"}

    results = json.loads((folder / "reports" / "results.json").read_text())
    runs = {r["arm"]: r for r in results["runs"]}
    assert runs["O-pseudo"]["trainer"] == runs["O"]["trainer"] == "nnUNetTrainerPolyCL_O_smoke_k1_seed0"
    # the preset also fine-tunes O layer-wise, from the same O encoder
    assert runs["O/layerwise"]["trainer"] == "nnUNetTrainerPolyCL_O_smoke_layerwise_k1_seed0"
    assert runs["O/layerwise"]["pretrained_weights"] == runs["O"]["pretrained_weights"]
    assert runs["O-pseudo"]["pretrained_weights"] == str(
        pseudo_folder / "pretrained_weights.pth")
    chosen = [json.loads(next(_one(folder / "runs", name).rglob("polycl_labelled_cases.json")).read_text())["cases"]
              for name in ("baseline__default__smoke__seed0__k1__*", "O__default__smoke__seed0__k1__N2__*",
                           "O-pseudo__default__smoke__seed0__k1__N2__*")]
    assert chosen[0] == chosen[1] == chosen[2]  # paired: the same labelled scan for every method of seed 0
    table = (folder / "reports" / "table1.md").read_text()
    assert "| O-pseudo |" in table and "| O/layerwise |" in table and table in unlabelled_demo["proc"].stdout
    assert np.isfinite([r["foreground_mean"]["dice"]["mean"] for r in results["runs"]]).all()


@pytest.mark.e2e
def test_no_progress_leaves_out_the_unlabelled_preprocessing_bar_but_says_what_it_preprocesses(unlabelled_demo):
    output = unlabelled_demo["proc"].stdout + unlabelled_demo["proc"].stderr
    assert f"2 of 2 unlabelled scans of {unlabelled_demo['raw'] / 'imagesUnlabelled'} need preprocessing" in output
    assert "Preprocessing unlabelled scans" not in output  # the tqdm bar's description
