"""``polycl_experiment`` end to end on the demo dataset, as a user types it, with a CI-sized protocol.

One experiment (methods baseline and O, seeds 0 and 1, k = 2, one pre-training epoch per seed, the ``_smoke``
fine-tuning schedule, training budgets 0.5 and 1, two runs at a time) is run once for the module; the tests then check
its reports, the budgets, that a second call skips the finished runs, that a run without its marker is redone, and
that a folder of another configuration or statistic is refused.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import DEMO_ID, run_cli, smoke_env

METHODS, SEEDS = ("baseline", "O"), ("0", "1")
ARGS = ["polycl_experiment", "-d", str(DEMO_ID), "-f", "0", "--preset", "demo", "--methods", *METHODS, "--adaptations",
        "default", "--seeds",
        *SEEDS, "--k", "2", "--schedule", "smoke", "--pretrain-epochs", "1", "--batch-size", "8", "--slice-fraction",
        "0.5", "--pretraining-seeds", "per-seed", "--budgets", "0.5", "1", "--jobs", "2", "--no-progress"]
RUNS = [(m, s) for m in METHODS for s in SEEDS]


def run_folder(folder: Path, method: str, seed: str) -> Path:
    """The run's folder: its name carries the schedule and a tag of its settings."""
    found = [p for p in (folder / "runs").glob(f"{method}__default__smoke__seed{seed}__k2__*") if p.is_dir()
             and ".interrupted-" not in p.name]
    assert len(found) == 1, found
    return found[0]


def pretraining_folder(folder: Path, seed: str) -> Path:
    return next(p for p in (folder / "pretraining").glob(f"O__seed{seed}__*") if p.is_dir())


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
def test_protocol_writes_table_verdict_figure_and_json(experiment):
    folder = experiment["folder"]
    reports = folder / "reports"
    rows = _table_rows(folder)
    assert sorted((r["method"], r["k"]) for r in rows) == [("O", "2"), ("baseline", "2")]
    for row in rows:
        assert 0.0 <= float(row["dice_mean"]) <= 1.0 and math.isfinite(float(row["hd95_mean"]))
        assert row["n_runs"] == "2" and row["n_cases"] == "8" and row["baseline"] == "baseline"
    o = next(r for r in rows if r["method"] == "O")
    assert o["dice_n_pairs"] == "2"  # paired by seed: one pair per seed, never per case
    assert o["dice_diff_low"] and not o["dice_p_ttest"] and not o["dice_p_wilcoxon"]  # an interval, no test
    markdown = (reports / "table1.md").read_text()
    assert all(f"| {m} |" in markdown for m in METHODS) and "n < 5: no test" in markdown
    verdict = (reports / "verdict.md").read_text()
    assert "O: Verdict (k = 2 labelled scans)" in verdict and "2 paired seeds" in verdict
    assert markdown in experiment["proc"].stdout and verdict in experiment["proc"].stdout  # printed at the end
    assert experiment["proc"].stdout.strip().splitlines()[-1].startswith(f"Verdict: {reports / 'verdict.md'}")

    assert (reports / "fig4.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    figure = json.loads((reports / "fig4.json").read_text())
    assert {(p["method"], p["metric"], p["k"]) for p in figure["points"]} == {
        (m, metric, 2) for m in METHODS for metric in ("dice", "hd95")}
    assert all(p["n_runs"] == 2 and p["low"] <= p["mean"] <= p["high"] for p in figure["points"])

    results = json.loads((reports / "results.json").read_text())
    assert len(results["rows"]) == len(RUNS) * 4 and {r["trainer"] for r in results["runs"]} == {
        f"nnUNetTrainerPolyCL_{m}_smoke_k2_seed{s}" for m in ("Baseline", "O") for s in SEEDS}


@pytest.mark.e2e
def test_each_seed_pretrains_its_encoder_and_draws_its_labelled_cases(experiment):
    folder = experiment["folder"]
    assert sorted(p.name.rsplit("__", 1)[0] for p in (folder / "pretraining").iterdir() if p.is_dir()) == [
        "O__seed0", "O__seed1"]
    for s in SEEDS:
        weights = pretraining_folder(folder, s) / "pretrained_weights.pth"
        record = json.loads((run_folder(folder, "O", s) / "finished.json").read_text())
        assert record["pretrained_weights"] == str(weights) and record["pretrain_seed"] == int(s)
        log = (run_folder(folder, "O", s) / "finetune.log").read_text()
        assert f"Loaded the encoder from {weights}" in log and f"seed {s}" in log
        config = json.loads((pretraining_folder(folder, s) / "config.json").read_text())
        assert config["settings"]["seed"] == int(s)
    chosen = {}
    for m in METHODS:
        for s in SEEDS:
            trainer = f"nnUNetTrainerPolyCL_{'Baseline' if m == 'baseline' else m}_smoke_k2_seed{s}"
            subset = next(run_folder(folder, m, s).glob(
                f"nnUNet_results/*/{trainer}__nnUNetPlans__2d/fold_0/polycl_labelled_cases.json"))
            chosen[(m, s)] = json.loads(subset.read_text())["cases"]
    assert chosen[("baseline", "0")] == chosen[("O", "0")] and chosen[("baseline", "1")] == chosen[("O", "1")]
    baseline_log = (run_folder(folder, "baseline", "0") / "finetune.log").read_text()
    assert "random" in baseline_log and "seed 0" in baseline_log
    config = json.loads((folder / "experiment.json").read_text())
    assert config["identity"]["pretrain_epochs"] == 1 and config["identity"]["schedule"] == "smoke"
    assert config["identity"]["pair_by"] == "run" and config["identity"]["interval"] == "t"
    assert config["identity"]["augmentation_workers"] == 0 and config["format_version"] == 2
    assert config["identity"]["dataset"] == f"Dataset{DEMO_ID}_PolyCLDemo" and config["identity"]["fold"] == 0
    assert len(config["identity"]["evaluated_cases"]) == 4


def _fold_folder(folder: Path, run: str) -> Path:
    return next((folder / "runs" / run / "nnUNet_results").glob("*/*/fold_0"))


@pytest.mark.e2e
def test_budgets_come_from_checkpoints_of_the_same_run_and_end_at_the_end_point(experiment):
    folder, reports = experiment["folder"], experiment["folder"] / "reports"
    budgets = json.loads((reports / "budgets.json").read_text())["comparisons"][0]
    assert [(e["method"], e["budget"], e["epochs"], e["iterations"]) for e in budgets["rows"]] == [
        (m, b, [e], [3 * e]) for b, e in ((0.5, 1), (1.0, 2)) for m in METHODS]  # _smoke: 2 epochs x 3 iterations
    o_rows = [e for e in budgets["rows"] if e["method"] == "O"]
    assert all(e["vs_baseline"]["n_pairs"] == 2 and e["vs_baseline"]["low"] is not None for e in o_rows)
    table1 = {r["method"]: r for r in _table_rows(folder)}
    for e in (e for e in budgets["rows"] if e["budget"] == 1.0):  # budget 1 is the end point, number for number
        assert e["dice"]["mean"] == pytest.approx(float(table1[e["method"]]["dice_mean"]), abs=1e-12)
    for method, seed in RUNS:
        run = run_folder(folder, method, seed).name
        record = json.loads((folder / "runs" / run / "finished.json").read_text())
        half = next(b for b in record["budgets"] if b["fraction"] == 0.5)
        fold = _fold_folder(folder, run)
        assert half["checkpoint"] == "checkpoint_budget_0.5.pth" and half["predictions"] == str(
            fold / "validation_budget_0.5")
        assert torch.load(fold / half["checkpoint"], weights_only=False)["current_epoch"] == 1
        summary = json.loads((folder / "runs" / run / "evaluation_budget_0.5" / "summary.json").read_text())
        assert summary["prediction_folder"] == half["predictions"]
        assert "2 epochs x 3 iterations (6 in all)" in record["training_schedule"]["description"]
    markdown, verdict = (reports / "budgets.md").read_text(), (reports / "verdict.md").read_text()
    label = next(line for line in markdown.splitlines() if line.startswith("End of training (baseline, k = 2"))
    assert ("**end of training**" in label) != ("**still training: this compares speed, not end points**" in label)
    assert label in (reports / "table1.md").read_text() and "Fine-tuning schedule: Adam lr 0.001" in markdown
    assert "O: Verdict (k = 2 labelled scans)" in verdict and "[baseline: " in verdict
    assert (reports / "fig_budgets.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.e2e
def test_validation_from_a_checkpoint_repeats_the_trainers_own_exactly(experiment):
    """polycl_validate from checkpoint_final.pth gives nnU-Net's end-point validation, and from the budget's
    checkpoint the validation the trainer made itself at the end of nnUNetv2_train, byte for byte."""
    run = run_folder(experiment["folder"], "baseline", "0").name
    fold = _fold_folder(experiment["folder"], run)
    assert "PolyCL training budget 0.5: nnU-Net's validation from checkpoint_budget_0.5.pth" in (
        experiment["folder"] / "runs" / run / "finetune.log").read_text()
    assert not (experiment["folder"] / "runs" / run / "budgets.log").exists()  # no polycl_validate was needed
    cases = sorted(p.name for p in (fold / "validation").glob("*.nii.gz"))
    by_trainer = {c: (fold / "validation_budget_0.5" / c).read_bytes() for c in cases}
    env = {**experiment["env"], "nnUNet_results": str(experiment["folder"] / "runs" / run / "nnUNet_results")}
    run_cli(["polycl_validate", str(DEMO_ID), "2d", "0", "-tr", "nnUNetTrainerPolyCL_Baseline_smoke_k2_seed0",
             "-device", "cpu", "-chk", "checkpoint_final.pth", "checkpoint_budget_0.5.pth"], env)
    assert len(cases) == 4 and cases == sorted(p.name for p in (fold / "validation_final").glob("*.nii.gz"))
    assert all((fold / "validation" / c).read_bytes() == (fold / "validation_final" / c).read_bytes() for c in cases)
    assert all((fold / "validation_budget_0.5" / c).read_bytes() == by_trainer[c] for c in cases)
    end, again = (json.loads((fold / f / "summary.json").read_text()) for f in ("validation", "validation_final"))
    assert again["foreground_mean"] == end["foreground_mean"]


@pytest.mark.e2e
def test_a_budget_the_trainer_did_not_validate_is_validated_by_polycl_validate(experiment):
    """A run fine-tuned before the trainer validated its budgets itself (its fold folder has no
    validation_budget_0.5): the next call validates it with polycl_validate, to the same numbers."""
    folder = experiment["folder"]
    run = run_folder(folder, "O", "1")
    fold = _fold_folder(folder, run.name)
    before = json.loads((run / "finished.json").read_text())["budgets"]
    shutil.rmtree(fold / "validation_budget_0.5")
    (run / "finished.json").unlink()
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    assert "Ran 1 run(s)" in proc.stdout and "validation at the budgets" in proc.stdout + proc.stderr
    assert "Validation written to" in (run / "budgets.log").read_text()
    after = json.loads((run / "finished.json").read_text())["budgets"]
    assert [b["foreground_mean"] for b in after] == [b["foreground_mean"] for b in before]


@pytest.mark.e2e
def test_second_call_skips_finished_runs(experiment):
    folder = experiment["folder"]
    logs = {run: (run_folder(folder, *run) / "finetune.log").stat().st_mtime for run in RUNS}
    start = time.time()
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    assert time.time() - start < 60
    assert "Ran 0 run(s)" in proc.stdout and f"{len(RUNS)} run(s) were already finished and skipped" in proc.stdout
    assert proc.stderr.count("already finished: skipped") == len(RUNS)
    assert logs == {run: (run_folder(folder, *run) / "finetune.log").stat().st_mtime for run in RUNS}


@pytest.mark.e2e
@pytest.mark.parametrize("extra, difference", [
    (["--pretrain-epochs", "2"], "pretrain_epochs: folder has 1, now 2"),
    (["--pair-by", "case"], "pair_by: folder has 'run', now 'case'"),
    (["--interval", "bootstrap"], "interval: folder has 't', now 'bootstrap'"),
    (["--budgets", "0.25", "1"], "budgets: folder has [0.5, 1.0], now [0.25, 1.0]"),
])
def test_other_configuration_or_statistic_is_refused_and_nothing_is_touched(experiment, extra, difference):
    folder = experiment["folder"]
    before = (folder / "experiment.json").read_text()
    proc = run_cli([*ARGS, "-o", str(folder), *extra], experiment["env"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert difference in proc.stderr and "--force-mix" in proc.stderr
    assert (folder / "experiment.json").read_text() == before
    assert all((run_folder(folder, *run) / "finished.json").is_file() for run in RUNS)


@pytest.mark.e2e
def test_run_without_its_marker_is_redone(experiment):
    folder = experiment["folder"]
    run = run_folder(folder, "baseline", "0")
    (run / "finished.json").unlink()  # as after a crash during the run's evaluation
    finetune_log = (run / "finetune.log").read_text()
    old_summary = (run / "evaluation" / "summary.json").stat().st_mtime
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    assert "Ran 1 run(s)" in proc.stdout and "3 run(s) were already finished and skipped" in proc.stdout
    assert f"[{run.name}] evaluation" in proc.stderr
    assert (run / "finetune.log").read_text() == finetune_log  # its fine-tuning had finished: kept, not repeated
    record = json.loads((run / "finished.json").read_text())
    assert record["predictions"].endswith("fold_0/validation")  # nnU-Net's own validation predictions
    assert (run / "evaluation" / "summary.json").stat().st_mtime > old_summary
    results = json.loads((folder / "reports" / "results.json").read_text())
    assert sorted(f"{r['method']}__{r['adaptation']}__{r['schedule']}__seed{r['seed']}__k{r['k']}__{r['tag']}"
                  for r in results["runs"]) == sorted(run_folder(folder, *run).name for run in RUNS)


@pytest.mark.e2e
def test_interrupted_finetuning_is_moved_aside_and_redone_to_the_same_weights(experiment):
    """A kill during fine-tuning leaves a started fine-tuning without its markers: the next call moves it aside and
    redoes it from scratch, giving the weights of the uninterrupted run, and the run's record says so."""
    import torch

    folder = experiment["folder"]
    run = run_folder(folder, "baseline", "1")
    fold = next(run.glob("nnUNet_results/*/*/fold_0"))
    uninterrupted = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for marker in ("finished.json", "finetune.finished.json"):
        (run / marker).unlink()
    (fold / "checkpoint_final.pth").unlink()  # killed before the end of training
    proc = run_cli([*ARGS, "-o", str(folder)], experiment["env"])
    moved = list((folder / "runs").glob(f"{run.name}.interrupted-*"))
    assert len(moved) == 1 and (moved[0] / "finetune.log").is_file() and "redone from scratch" in proc.stderr
    assert "Ran 1 run(s)" in proc.stdout
    redone = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = uninterrupted["network_weights"]
    assert weights.keys() == redone["network_weights"].keys()
    assert all(torch.equal(weights[k], redone["network_weights"][k]) for k in weights)
    record = json.loads((run / "finished.json").read_text())
    assert record["redone_from_scratch_after"] == [str(moved[0])] and record["augmentation_workers"] == 0
    table = (folder / "reports" / "table1.md").read_text()
    assert "Runs planned: 4 (4 finished)" in table and moved[0].name not in table


def _fold0(preprocessed_demo: Path) -> dict:
    return json.loads((preprocessed_demo / "splits_final.json").read_text())[0]


@pytest.mark.parametrize("changes, message", [
    ({"methods": ("baseline", "X")}, r"Unknown method\(s\) X"),
    ({"ks": ("all", "50")}, "k=50 exceed the 16 training cases of fold 0"),
    ({"ks": ("0",)}, "Invalid label budget k='0'"),
    ({"test_cases": ["nope"]}, "'nope' was not found in .*imagesTr"),
    ({"preset": "huge"}, "Unknown preset 'huge'"),
    ({"slice_fraction": 1.5}, "--slice-fraction 1.5 is invalid"),
    ({"adaptations": ("warmup", "slow")}, r"Unknown adaptation\(s\) slow"),
    ({"adaptations": ("default", "S=layerwise")}, "--adaptations S=layerwise names a method that is not run"),
    ({"methods": ("baseline", "O-pseudo"), "adaptations": ("default", "O-pseudo=layerwise")},
     "the baseline does not run layerwise: add baseline=layerwise"),
    ({"jobs": 0}, "--jobs 0 is invalid"),
    ({"cpu_threads": 0}, "--cpu-threads 0 is invalid"),
    ({"augmentation_workers": -1}, "--augmentation-workers -1 is invalid"),
    ({"budgets": ("0",)}, "--budgets '0' is invalid"),
    ({"pair_by": "slice"}, "Unknown --pair-by 'slice'"),
    ({"methods": ("baseline", "O"), "pretrained": {"O": "/nowhere/pretrained_weights.pth"}}, "no such file"),
    ({"methods": ("baseline", "O"), "pretrained": {"baseline": "x.pth"}}, "baseline is not a pre-trained method"),
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


def test_cpu_jobs_get_the_fixed_thread_count_and_share_the_cores_in_nnunet_workers(monkeypatch):
    """The torch thread count changes the weights a seed gives: it is the experiment's setting, not the machine's."""
    from nnunet_polycl.experiment.steps import job_environment

    env = {"nnUNet_def_n_proc": "8", "PATH": "/bin"}
    for cores in (2, 8, 64):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        shared = job_environment(env, jobs=2, device="cpu", cpu_threads=1)
        assert shared["OMP_NUM_THREADS"] == shared["POLYCL_CPU_THREADS"] == "1"
        assert shared["nnUNet_def_n_proc"] == str(cores // 2)
    assert shared["PATH"] == "/bin" and env["nnUNet_def_n_proc"] == "8"  # the caller's environment is not changed
    assert job_environment(env, jobs=1, device="cpu", cpu_threads=3)["OMP_NUM_THREADS"] == "3"
    assert job_environment(env, jobs=128, device="cpu", cpu_threads=1)["nnUNet_def_n_proc"] == "1"
    assert job_environment(env, jobs=4, device="cuda", cpu_threads=1) == env


def test_shared_pretraining_with_another_first_seed_is_refused(demo_in_process, tmp_path):
    """A later call whose first seed differs would fine-tune new seeds from another encoder than the finished runs."""
    from nnunet_polycl.experiment.runner import ExperimentRequest, prepare
    from nnunet_polycl.paths import PolyCLUserError

    def request(seeds):
        return ExperimentRequest(dataset=str(DEMO_ID), output_folder=str(tmp_path / "exp"), seeds=seeds,
                                 pretraining_seeds="shared", schedule="smoke", progress=False)

    prepare(request((0, 1)))
    prepare(request((0, 2)))  # more seeds, same shared pre-training: allowed
    with pytest.raises(PolyCLUserError, match="shared_pretraining_seed: folder has 0, now 1"):
        prepare(request((1, 2)))


def test_without_budgets_every_comparison_says_the_end_of_training_was_not_checked():
    from nnunet_polycl.evaluation import method_table
    from nnunet_polycl.evaluation.budgets import budget_table
    from nnunet_polycl.evaluation.convergence import END, NOT_CHECKED
    from nnunet_polycl.experiment.reports import verdicts

    rows = [dict(method=m, seed=s, k=1, case=c, label="liver", dice=0.5 + 0.01 * s + (0.02 if m == "O" else 0),
                 hd=1.0, hd95=1.0) for m in METHODS for s in range(5) for c in ("a", "b")]
    tables = [method_table(rows)]
    text = verdicts(tables, {})
    assert text.count(f"[baseline: {NOT_CHECKED}]") == 1 and "O: Verdict (k = 1 labelled scan)" in text
    settled = budget_table([{**r, "budget": b, "epoch": 1, "iterations": 1} for r in rows for b in (0.5, 1.0)])
    assert f"[baseline: {END}]" in verdicts(tables, {}, {"baseline": settled})  # the same Dice at 0.5 and 1
