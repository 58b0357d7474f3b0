"""``polycl_experiment`` end to end on the demo dataset, as a user types it, with a CI-sized protocol.

One experiment (methods baseline and O, one seed, k in {all, 2}, one pre-training epoch, the ``_smoke`` fine-tuning
schedule) is run once for the module; the tests then check its reports, that a second call skips the finished runs,
that a run without its marker is redone, and that a folder of another configuration is refused.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_ID, run_cli, smoke_env

METHODS, KS = ("baseline", "O"), ("all", "2")
ARGS = ["polycl_experiment", "-d", str(DEMO_ID), "-f", "0", "--preset", "demo", "--methods", *METHODS, "--seeds", "0",
        "--k", *KS, "--schedule", "smoke", "--pretrain-epochs", "1", "--batch-size", "8", "--slice-fraction", "0.5",
        "--no-progress"]
RUNS = [f"{m}__seed0__k{k}" for m in METHODS for k in KS]


@pytest.fixture(scope="module")
def experiment(nnunet_root, preprocessed_demo, tmp_path_factory) -> dict:
    """The CI-sized experiment, run once: its environment, folder and the first call's output and wall time."""
    results = tmp_path_factory.mktemp("experiment_results")
    env = smoke_env(nnunet_root, results)
    folder = results / "exp"
    start = time.time()
    proc = run_cli([*ARGS, "-o", str(folder)], env)
    return {"env": env, "folder": folder, "proc": proc, "seconds": time.time() - start}


def _table_rows(folder: Path) -> list[dict]:
    with open(folder / "reports" / "table1.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.e2e
def test_protocol_writes_table_figure_and_json(experiment):
    folder = experiment["folder"]
    reports = folder / "reports"
    rows = _table_rows(folder)
    assert sorted((r["method"], r["k"]) for r in rows) == sorted((m, "" if k == "all" else k) for m in METHODS
                                                                 for k in KS)
    for row in rows:
        assert 0.0 <= float(row["dice_mean"]) <= 1.0 and math.isfinite(float(row["hd95_mean"]))
        assert row["n_runs"] == "1"
    o_all = next(r for r in rows if r["method"] == "O" and r["k"] == "")
    assert o_all["dice_n_pairs"] == "4"  # O paired with the baseline on the 4 validation cases of fold 0
    markdown = (reports / "table1.md").read_text()
    assert all(f"| {m} |" in markdown for m in METHODS)
    assert markdown in experiment["proc"].stdout  # the table is printed at the end

    png = (reports / "fig4.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    assert matplotlib.image.imread(str(reports / "fig4.png")).shape[0] > 100
    figure = json.loads((reports / "fig4.json").read_text())
    assert {(p["method"], p["metric"], p["k"]) for p in figure["points"]} == {
        (m, metric, k) for m in METHODS for metric in ("dice", "hd95") for k in (None, 2)}

    results = json.loads((reports / "results.json").read_text())
    assert len(results["rows"]) == len(RUNS) * 4 and {r["trainer"] for r in results["runs"]} == {
        "nnUNetTrainerPolyCL_Baseline_smoke", "nnUNetTrainerPolyCL_Baseline_smoke_k2", "nnUNetTrainerPolyCL_O_smoke",
        "nnUNetTrainerPolyCL_O_smoke_k2"}
    assert all(isinstance(r["dice"], float) for r in results["rows"])


@pytest.mark.e2e
def test_one_pretraining_per_method_and_seed_is_shared_by_every_k(experiment):
    folder = experiment["folder"]
    assert sorted(p.name for p in (folder / "pretraining").iterdir() if p.is_dir()) == ["O__seed0"]
    weights = folder / "pretraining" / "O__seed0" / "pretrained_weights.pth"
    for k in KS:
        record = json.loads((folder / "runs" / f"O__seed0__k{k}" / "finished.json").read_text())
        assert record["pretrained_weights"] == str(weights)
        assert f"Loaded the encoder from {weights}" in (folder / "runs" / f"O__seed0__k{k}" / "finetune.log").read_text()
    baseline_log = (folder / "runs" / "baseline__seed0__kall" / "finetune.log").read_text()
    assert "random" in baseline_log and str(weights) not in baseline_log
    config = json.loads((folder / "experiment.json").read_text())
    assert config["identity"]["pretrain_epochs"] == 1 and config["identity"]["schedule"] == "smoke"
    assert config["identity"]["dataset"] == f"Dataset{DEMO_ID}_PolyCLDemo" and config["identity"]["fold"] == 0
    assert len(config["identity"]["evaluated_cases"]) == 4


@pytest.mark.e2e
def test_second_call_skips_finished_runs(experiment):
    folder = experiment["folder"]
    logs = {run: (folder / "runs" / run / "finetune.log").stat().st_mtime for run in RUNS}
    start = time.time()
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    assert time.time() - start < 60
    assert "Ran 0 run(s)" in proc.stdout and f"{len(RUNS)} run(s) were already finished and skipped" in proc.stdout
    assert proc.stderr.count("already finished: skipped") == len(RUNS)
    assert logs == {run: (folder / "runs" / run / "finetune.log").stat().st_mtime for run in RUNS}


@pytest.mark.e2e
def test_other_configuration_is_refused_and_nothing_is_touched(experiment):
    folder = experiment["folder"]
    before = (folder / "experiment.json").read_text()
    proc = run_cli([*ARGS, "-o", str(folder), "--pretrain-epochs", "2"], experiment["env"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pretrain_epochs: folder has 1, now 2" in proc.stderr and "--force-mix" in proc.stderr
    assert (folder / "experiment.json").read_text() == before
    assert all((folder / "runs" / run / "finished.json").is_file() for run in RUNS)


@pytest.mark.e2e
def test_run_without_its_marker_is_redone(experiment):
    folder = experiment["folder"]
    run = folder / "runs" / "baseline__seed0__k2"
    (run / "finished.json").unlink()  # as after a crash during the run's prediction or evaluation
    finetune_log = (run / "finetune.log").read_text()
    old_prediction = next((run / "predictions").glob("*.nii.gz")).stat().st_mtime
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    assert "Ran 1 run(s)" in proc.stdout and "3 run(s) were already finished and skipped" in proc.stdout
    assert "[baseline__seed0__k2] prediction" in proc.stderr and "[baseline__seed0__k2] evaluation" in proc.stderr
    assert (run / "finetune.log").read_text() == finetune_log  # its fine-tuning had finished: kept, not repeated
    assert (run / "finished.json").is_file()
    assert next((run / "predictions").glob("*.nii.gz")).stat().st_mtime > old_prediction
    results = json.loads((folder / "reports" / "results.json").read_text())
    assert sorted(f"{r['method']}__seed{r['seed']}__k{r['k']}" for r in results["runs"]) == sorted(RUNS)


def _fold0(preprocessed_demo: Path) -> dict:
    return json.loads((preprocessed_demo / "splits_final.json").read_text())[0]


@pytest.mark.parametrize("changes, message", [
    ({"methods": ("baseline", "X")}, r"Unknown method\(s\) X"),
    ({"ks": ("all", "50")}, "k=50 exceed the 12 training cases of fold 0"),
    ({"ks": ("0",)}, "Invalid label budget k='0'"),
    ({"test_cases": ["nope"]}, "'nope' was not found in .*imagesTr"),
    ({"preset": "huge"}, "Unknown preset 'huge'"),
    ({"slice_fraction": 1.5}, "--slice-fraction 1.5 is invalid"),
])
def test_bad_input_is_refused_before_anything_is_written(demo_in_process, tmp_path, changes, message):
    from nnunet_polycl.experiment.runner import ExperimentRequest, run_experiment
    from nnunet_polycl.paths import PolyCLUserError

    with pytest.raises(PolyCLUserError, match=message):
        run_experiment(ExperimentRequest(dataset=str(DEMO_ID), output_folder=str(tmp_path / "exp"), **changes))
    assert not (tmp_path / "exp").exists()


def test_training_cases_are_refused_as_test_cases(demo_in_process, preprocessed_demo, tmp_path):
    from nnunet_polycl.experiment.runner import ExperimentRequest, run_experiment
    from nnunet_polycl.paths import PolyCLUserError

    train_case = _fold0(preprocessed_demo)["train"][0]
    with pytest.raises(PolyCLUserError, match=f"{train_case} are training cases of fold 0"):
        run_experiment(ExperimentRequest(dataset=str(DEMO_ID), output_folder=str(tmp_path / "exp"),
                                         test_cases=[train_case]))


def test_test_cases_from_a_file_are_linked_with_their_labels(demo_in_process, preprocessed_demo, tmp_path):
    from nnunet_polycl.experiment.cases import link_cases, read_case_list, select_cases
    from nnunet_polycl.network import load_plans_context

    chosen = _fold0(preprocessed_demo)["val"][:2]
    (tmp_path / "cases.txt").write_text("# held-out cases\n" + "\n".join(reversed(chosen)) + "\n\n")
    cases = select_cases(load_plans_context(preprocessed_demo.name), 0, read_case_list([str(tmp_path / "cases.txt")]))
    assert cases.cases == tuple(sorted(chosen)) and "2 given test cases" in cases.description
    link_cases(cases, str(tmp_path / "images"), str(tmp_path / "labels"))
    raw = Path(demo_in_process["nnUNet_raw"]) / preprocessed_demo.name
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{c}_0000.nii.gz" for c in sorted(chosen)]
    for case in chosen:
        assert (tmp_path / "labels" / f"{case}.nii.gz").resolve() == (raw / "labelsTr" / f"{case}.nii.gz").resolve()
