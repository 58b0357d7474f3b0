"""``polycl_experiment``'s report writer on synthetic experiment folders (no training): the family of comparisons,
planned / finished / failed / missing runs, unreadable markers, unpaired runs and mixed settings in every report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_polycl.experiment.layout import ExperimentLayout, run_grid, run_settings, settings_tag
from nnunet_polycl.experiment.reports import write_reports
from nnunet_polycl.experiment.state import FORMAT_VERSION, check_experiment

IDENTITY = {"dataset": "Dataset990_PolyCLDemo", "fold": 0, "plans": "nnUNetPlans", "configuration": "2d",
            "schedule": "smoke", "pretrain_epochs": 1, "pretraining_seeds": "per-seed", "pair_by": "run",
            "interval": "t", "augmentation_workers": 0}
GRID = {"methods": ["baseline", "O"], "adaptations": ["default"], "seeds": [0, 1, 2, 3, 4, 5], "ks": [1, 2]}


def write_run(root: Path, run, dice: list[float], identity: dict, labelled: list[str]) -> None:
    """A finished run as the runner leaves it: evaluation/summary.json and finished.json (written last)."""
    folder = root / "runs" / run.name
    (folder / "evaluation").mkdir(parents=True)
    cases = [{"case": f"case_{i}", "metrics": {"liver": {"status": "ok", "dice": d, "hd": 10 * (1 - d),
                                                         "hd95": 5 * (1 - d), "volume_reference_ml": 1.0,
                                                         "volume_prediction_ml": 1.0}}}
             for i, d in enumerate(dice)]
    (folder / "evaluation" / "summary.json").write_text(json.dumps({"metric_per_case": cases}))
    settings = run_settings(identity, pretrained=True)
    (folder / "finished.json").write_text(json.dumps({
        **run.to_dict(), "trainer": "t", "settings": settings, "settings_id": settings_tag(settings),
        "labelled_cases": labelled, "redone_from_scratch_after": []}))


def make_experiment(root: Path, identity: dict = IDENTITY, grid: dict = GRID, skip=(), gain: float = 0.0,
                    unlabelled: int | None = None) -> list:
    """An experiment folder whose runs have no true difference (``gain`` 0) apart from those in ``skip``;
    ``unlabelled``: the number of unlabelled scans its pre-trainings used."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "experiment.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "identity": identity,
                                                      "history": [{"grid": grid, "identity": identity}]}))
    runs = run_grid(tuple(grid["methods"]), tuple(grid["adaptations"]), tuple(grid["seeds"]), tuple(grid["ks"]),
                    False, identity, unlabelled)
    rng = np.random.default_rng(3)
    for run in runs:
        if (run.method, run.seed, run.k) in skip:
            continue
        base = 0.6 + 0.02 * run.seed + (gain if run.method == "O" else 0.0)
        write_run(root, run, list(base + 0.01 * rng.standard_normal(4)), identity, [f"case_{run.seed}"])
    return runs


def test_every_report_lists_planned_failed_missing_and_unreadable_runs_and_the_family(tmp_path):
    root = tmp_path / "exp"
    runs = make_experiment(root, skip={("baseline", 5, 1), ("O", 4, 2)})
    by_key = {(r.method, r.seed, r.k): r for r in runs}
    failed = root / "runs" / by_key[("baseline", 5, 1)].name
    failed.mkdir()
    (failed / "finetune.log").write_text("epoch 0\nRuntimeError: CUDA out of memory\n")
    (root / "runs" / by_key[("O", 3, 2)].name / "finished.json").write_text("{cut short")

    written = write_reports(ExperimentLayout(str(root)))
    table, verdict = Path(written["table1_md"]).read_text(), Path(written["verdict_md"]).read_text()
    for report in (table, verdict):
        assert "Runs planned: 24 (21 finished, 1 failed or unfinished, 1 missing, 1 unreadable marker)" in report
        assert f"- {failed.name}: failed or unfinished (finetune.log: RuntimeError: CUDA out of memory)" in report
        assert f"{by_key[('O', 4, 2)].name}: missing (not started)" in report
        assert f"{by_key[('O', 3, 2)].name}: unreadable marker (" in report and "JSONDecodeError" in report
        assert "Family of comparisons: Dice of every arm against its baseline at every k and label" in report
    assert "2 comparisons" in table and "p adjusted with Holm-Bonferroni" in table
    assert "Unpaired runs" in table and "O seed 5 k=1 (liver)" in table  # the baseline's seed 5 failed
    saved = json.loads(Path(written["table1_json"]).read_text())["comparisons"][0]
    o1 = next(e for e in saved["rows"] if (e["method"], e["k"]) == ("O", 1))
    assert o1["n_runs"] == 5 and o1["metrics"]["dice"]["vs_baseline"]["n_pairs"] == 5  # the same paired runs
    states = json.loads(Path(written["results_json"]).read_text())["planned_runs"]
    assert sum(s["state"] == "finished" for s in states) == 21


def test_runs_pre_trained_with_unlabelled_scans_are_counted_as_finished_not_missing(tmp_path):
    identity = {**IDENTITY, "unlabelled_folder": "/u", "unlabelled_count": 200, "unlabelled_scans_sha256": "ab"}
    runs = make_experiment(tmp_path / "exp", identity=identity, unlabelled=200)
    assert any(r.name.endswith(f"__N200__{r.tag}") for r in runs)  # O's folders carry __N200
    written = write_reports(ExperimentLayout(str(tmp_path / "exp")))
    assert "Runs planned: 24 (24 finished)." in Path(written["verdict_md"]).read_text()


def test_an_adaptation_for_one_method_is_compared_with_the_baseline_on_its_own_schedule(tmp_path):
    grid = {**GRID, "adaptations": ["default", "O=layerwise"]}
    runs = make_experiment(tmp_path / "exp", grid=grid, gain=0.1)
    assert {(r.method, r.adaptation) for r in runs} == {("baseline", "default"), ("O", "layerwise")}
    written = write_reports(ExperimentLayout(str(tmp_path / "exp")))
    table = json.loads(Path(written["table1_json"]).read_text())["comparisons"]
    assert [t["baseline"] for t in table] == ["baseline"]
    o1 = next(e for e in table[0]["rows"] if (e["method"], e["k"]) == ("O/layerwise", 1))
    assert o1["metrics"]["dice"]["vs_baseline"]["n_pairs"] == 6
    verdict = Path(written["verdict_md"]).read_text()
    assert "- O/layerwise: " in verdict and "was better" in verdict
    assert "Runs planned: 24 (24 finished)." in verdict
    assert "schedules_md" not in written  # Table 1 already holds that comparison
    make_experiment(tmp_path / "both", grid={**GRID, "adaptations": ["default", "layerwise"]})
    assert "schedules_md" in write_reports(ExperimentLayout(str(tmp_path / "both")))


def test_a_presets_adaptation_for_a_method_not_run_is_left_out():
    from nnunet_polycl.experiment.presets import PRESETS, preset_adaptations

    assert preset_adaptations(PRESETS["demo"], ("baseline", "O")) == ("default", "O=layerwise")
    assert preset_adaptations(PRESETS["demo"], ("baseline", "S")) == ("default",)  # --methods baseline S


def test_no_effect_experiment_gets_no_better_or_worse_verdict_through_the_writer(tmp_path):
    make_experiment(tmp_path / "exp")
    verdict = Path(write_reports(ExperimentLayout(str(tmp_path / "exp")))["verdict_md"]).read_text()
    assert "was better" not in verdict and "was worse" not in verdict


def test_mixed_settings_are_listed_and_their_rows_marked(tmp_path):
    root = tmp_path / "exp"
    make_experiment(root, grid={**GRID, "ks": [1]})
    other = {**IDENTITY, "pretrain_epochs": 2}
    later = run_grid(("O",), ("default",), (0, 1, 2, 3, 4, 5), (2,), False, other)
    for run in later:
        write_run(root, run, [0.7, 0.7, 0.71, 0.69], other, [f"case_{run.seed}"])
    baselines = run_grid(("baseline",), ("default",), (0, 1, 2, 3, 4, 5), (2,), False, IDENTITY)
    for run in baselines:
        write_run(root, run, [0.6, 0.61, 0.6, 0.62], IDENTITY, [f"case_{run.seed}"])
    saved = json.loads((root / "experiment.json").read_text())
    saved["history"].append({"grid": {**GRID, "methods": ["O"], "ks": [2]}, "identity": other})
    (root / "experiment.json").write_text(json.dumps(saved))
    assert later[0].name != run_grid(("O",), ("default",), (0,), (2,), False, IDENTITY)[0].name  # own folders

    written = write_reports(ExperimentLayout(str(root)))
    for report in ("table1_md", "verdict_md"):
        text = Path(written[report]).read_text()
        assert "MIXED SETTINGS (--force-mix): the finished runs come from 2 settings sets" in text
        assert "pretrain_epochs=1" in text and "pretrain_epochs=2" in text
    table = Path(written["table1_md"]).read_text()
    o_rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| O |")}
    assert "MIXED" in o_rows["2"] and "MIXED" not in o_rows["1"]


def test_baseline_runs_reused_across_unlabelled_counts_are_not_mixed_settings(tmp_path):
    """The N sweep: a baseline uses no unlabelled scan, so its runs copied from the N = 200 experiment into the N = 0
    one differ only in settings they ignore; an O run pre-trained on other scans is still mixed."""
    root = tmp_path / "exp"
    n0 = {**IDENTITY, "unlabelled_count": 0}
    make_experiment(root, identity=n0, grid={**GRID, "ks": [1]}, unlabelled=0)
    n200 = {**IDENTITY, "unlabelled_count": 200, "unlabelled_folder": "/u"}
    copied = run_settings(n200, pretrained=True)
    for record_file in (root / "runs").glob("baseline__*/finished.json"):
        record = json.loads(record_file.read_text())
        record_file.write_text(json.dumps({**record, "settings": copied, "settings_id": settings_tag(copied)}))
    assert "MIXED" not in Path(write_reports(ExperimentLayout(str(root)))["table1_md"]).read_text()

    record_file = next((root / "runs").glob("O__*seed0__*/finished.json"))
    record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "settings": copied,
                                       "settings_id": settings_tag(copied)}))
    table = Path(write_reports(ExperimentLayout(str(root)))["table1_md"]).read_text()
    assert "MIXED SETTINGS (--force-mix)" in table and "unlabelled_count=200" in table


def test_seeds_sharing_a_labelled_subset_are_reported(tmp_path):
    root = tmp_path / "exp"
    make_experiment(root, grid={**GRID, "ks": [1]})
    for name in ("baseline", "O"):
        record_file = next((root / "runs").glob(f"{name}__default__smoke__seed4__k1__*")) / "finished.json"
        record = json.loads(record_file.read_text())
        record_file.write_text(json.dumps({**record, "labelled_cases": ["case_2"]}))  # the same scan as seed 2
    table = Path(write_reports(ExperimentLayout(str(root)))["table1_md"]).read_text()
    assert "k = 1: 6 seeds cover only 5 distinct labelled subsets" in table


def test_a_folder_of_the_old_format_is_refused_clearly(tmp_path):
    from nnunet_polycl.paths import PolyCLUserError

    (tmp_path / "experiment.json").write_text(json.dumps({"format_version": 1, "identity": IDENTITY, "history": []}))
    with pytest.raises(PolyCLUserError, match="made by an older polycl_experiment .*Use a new folder with -o"):
        check_experiment(str(tmp_path / "experiment.json"), IDENTITY, force_mix=True)
