"""Table 1 and Fig. 4 reports over repeated runs: aggregation order, p-values against scipy, files a user opens."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread
from PIL import Image
from scipy import stats

from nnunet_polycl.evaluation import (
    evaluate_folders,
    method_table,
    plot_against_k,
    summary_rows,
    write_method_table,
)
from nnunet_polycl.evaluation.reports import table_markdown
from nnunet_polycl.paths import PolyCLUserError

METHODS = ("baseline", "simclr", "O")


def synthetic_rows(seeds=(0, 1, 2), ks=(2, 5, None), cases=4, seed=0) -> list[dict]:
    """Runs where method O is better than the baseline by about 0.05 Dice, simclr equal up to noise."""
    rng = np.random.default_rng(seed)
    gain = {"baseline": 0.0, "simclr": 0.0, "O": 0.05}
    rows = []
    for method in METHODS:
        for s in seeds:
            for k in ks:
                for c in range(cases):
                    dice = 0.7 + gain[method] + 0.01 * (k or 8) + 0.02 * rng.standard_normal()
                    rows.append(dict(method=method, seed=s, k=k, case=f"case_{c}", label="liver", dice=dice,
                                     hd=30 * (1 - dice), hd95=15 * (1 - dice)))
    return rows


def entry(table: dict, method: str, k=None, label: str = "liver") -> dict:
    return next(e for e in table["rows"] if (e["method"], e["k"], e["label"]) == (method, k, label))


def test_runs_are_averaged_over_cases_first_then_over_runs():
    rows = [dict(method="baseline", seed=0, k=None, case="a", label="liver", dice=0.5, hd=4.0, hd95=2.0),
            dict(method="baseline", seed=0, k=None, case="b", label="liver", dice=0.7, hd=None, hd95=None),
            dict(method="baseline", seed=1, k=None, case="a", label="liver", dice=0.8, hd=6.0, hd95=3.0)]
    dice = entry(method_table(rows), "baseline")["metrics"]["dice"]
    assert dice["mean"] == pytest.approx((0.6 + 0.8) / 2)  # not the pooled (0.5 + 0.7 + 0.8) / 3
    assert dice["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    hd = entry(method_table(rows), "baseline")["metrics"]["hd"]
    assert (hd["mean"], hd["n_runs"]) == (pytest.approx(5.0), 2)  # the undefined HD of case b is left out


def paired_dice(rows: list[dict], method: str, pair_by: str, k=5) -> list[float]:
    """The documented pairing, written out: sorted by (seed, case), or one mean per seed."""
    chosen = [r for r in rows if r["method"] == method and r["k"] == k]
    if pair_by == "case":
        return [r["dice"] for r in sorted(chosen, key=lambda r: (r["seed"], r["case"]))]
    return [np.mean([r["dice"] for r in chosen if r["seed"] == s]) for s in sorted({r["seed"] for r in chosen})]


@pytest.mark.parametrize("pair_by", ["case", "run"])
def test_p_values_and_intervals_are_scipys_on_the_documented_pairs(pair_by):
    rows = synthetic_rows(seeds=tuple(range(6)))
    table = method_table(rows, pair_by=pair_by)
    for method in ("simclr", "O"):
        x, y = paired_dice(rows, method, pair_by), paired_dice(rows, "baseline", pair_by)
        test = entry(table, method, 5)["metrics"]["dice"]["vs_baseline"]
        assert test["n_pairs"] == (24 if pair_by == "case" else 6)
        assert test["wilcoxon_p"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
        assert test["ttest_p"] == pytest.approx(stats.ttest_rel(x, y).pvalue)
        d = np.subtract(x, y)
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert (test["difference"], test["low"], test["high"]) == (pytest.approx(d.mean()), pytest.approx(low),
                                                                   pytest.approx(high))
    assert entry(table, "O", 5)["metrics"]["dice"]["vs_baseline"]["low"] > 0  # the 0.05 Dice gain is seen
    assert entry(table, "baseline", 5)["metrics"]["dice"]["vs_baseline"] is None
    assert ("PER-CASE" in table_markdown(table)) == (pair_by == "case")


def correlated_rows(n_seeds: int = 5, n_cases: int = 30) -> list[dict]:
    """Runs whose cases share a large run effect (which network was trained) and differ by little case noise: the
    method gains 0.01 Dice, much less than the spread between runs."""
    rng = np.random.default_rng(7)
    rows = []
    for s in range(n_seeds):
        for method, gain in (("baseline", 0.0), ("O", 0.01)):
            run_effect = 0.05 * rng.standard_normal()
            for c in range(n_cases):
                dice = 0.8 + gain + run_effect + 0.005 * rng.standard_normal()
                rows.append(dict(method=method, seed=s, k=2, case=f"case_{c}", label="liver", dice=dice,
                                 hd=10 * (1 - dice), hd95=5 * (1 - dice)))
    return rows


def test_cases_correlated_within_runs_are_tested_over_runs_unless_per_case_is_asked_for():
    rows = correlated_rows()
    per_run = method_table(rows)["rows"][1]["metrics"]["dice"]["vs_baseline"]
    run_means = {m: [np.mean([r["dice"] for r in rows if r["method"] == m and r["seed"] == s]) for s in range(5)]
                 for m in ("baseline", "O")}
    assert per_run["n_pairs"] == 5
    assert per_run["ttest_p"] == pytest.approx(stats.ttest_rel(run_means["O"], run_means["baseline"]).pvalue)
    per_case = method_table(rows, pair_by="case")["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert per_case["n_pairs"] == 150
    # pseudo-replication: the 150 dependent pairs claim a precision the 5 runs do not have
    assert per_case["ttest_p"] < per_run["ttest_p"] / 10
    assert (per_case["high"] - per_case["low"]) < (per_run["high"] - per_run["low"]) / 3


def test_fewer_than_five_pairs_give_no_p_value_but_an_interval():
    table = method_table(synthetic_rows(seeds=(0, 1, 2), cases=2))
    test = entry(table, "O", 2)["metrics"]["hd95"]["vs_baseline"]
    assert (test["n_pairs"], test["wilcoxon_p"], test["ttest_p"]) == (3, None, None)
    assert test["note"] == "n < 5: no test" and test["low"] is not None
    md = table_markdown(table)
    assert "n < 5: no test" in md and "p Wilcoxon" not in md


def test_one_seed_gives_neither_interval_nor_p_value():
    table = method_table(synthetic_rows(seeds=(0,), cases=2))
    test = entry(table, "O", 2)["metrics"]["dice"]["vs_baseline"]
    assert (test["n_pairs"], test["low"], test["high"], test["ttest_p"]) == (1, None, None, None)


def test_bootstrap_interval_is_an_extra_column_with_its_warning():
    table = method_table(synthetic_rows(seeds=tuple(range(6))), interval="bootstrap")
    test = entry(table, "O", 5)["metrics"]["dice"]["vs_baseline"]
    assert test["bootstrap_low"] < test["difference"] < test["bootstrap_high"] and "bootstrap" in table["extra_interval"]
    assert test["low"] < test["difference"] < test["high"] and test["interval"] == "95% t-interval"  # the verdict's
    md = table_markdown(table)
    assert "| bootstrap CI |" in md and "too narrow at small n" in md


def test_empty_predictions_and_undefined_hd_are_counted():
    rows = synthetic_rows(seeds=(0, 1), cases=3)
    for r in rows[:2]:
        r.update(status="empty_prediction", dice=0.0, hd=None, hd95=None)
    counts = entry(method_table(rows), rows[0]["method"], rows[0]["k"])["counts"]
    assert (counts["n_empty_prediction"], counts["n_hd_undefined"], counts["n_cases"]) == (2, 2, 6)
    assert "| 2/6 | 2/6 |" in table_markdown(method_table(rows))


def test_table_files_have_a_row_per_method_with_finite_numbers(tmp_path):
    table = write_method_table(synthetic_rows(ks=(None,)), str(tmp_path))
    md = (tmp_path / "table1.md").read_text()
    assert [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:] == list(METHODS)
    with open(tmp_path / "table1.csv") as f:
        lines = list(csv.DictReader(f))
    assert [r["method"] for r in lines] == list(METHODS)
    for r in lines:
        assert all(math.isfinite(float(r[f"{m}_mean"])) and float(r[f"{m}_std"]) > 0 for m in ("dice", "hd", "hd95"))
    assert all(r["dice_diff_low"] and not r["dice_p_ttest"] for r in lines if r["method"] != "baseline")  # 3 seeds
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(table["rows"]))
    assert len(saved["runs"]) == len(METHODS) * 3
    with pytest.raises(PolyCLUserError, match="already exists"):
        write_method_table(synthetic_rows(), str(tmp_path))


def test_figure_is_a_valid_png_with_its_numbers_in_json(tmp_path):
    png = tmp_path / "fig4.png"
    result = plot_against_k(synthetic_rows(), str(png))
    with Image.open(png) as image:
        image.verify()
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05
    saved = json.loads((tmp_path / "fig4.json").read_text())
    assert saved["points"] == json.loads(json.dumps(result["points"]))
    by_key = {(p["method"], p["metric"], p["k"]): p for p in saved["points"]}
    assert set(by_key) == {(m, metric, k) for m in METHODS for metric in ("dice", "hd95") for k in (2, 5, None)}
    assert all(p["n_runs"] == 3 and math.isfinite(p["mean"]) and p["low"] < p["mean"] < p["high"]
               for p in saved["points"])
    one = by_key[("O", "dice", 5)]
    values = [np.mean([r["dice"] for r in synthetic_rows() if (r["method"], r["k"], r["seed"]) == ("O", 5, s)])
              for s in range(3)]
    assert (one["low"], one["high"]) == tuple(pytest.approx(v) for v in stats.t.interval(
        0.95, 2, loc=np.mean(values), scale=stats.sem(values)))
    assert "95% t-interval" in saved["error_bars"]
    assert by_key[("O", "dice", 5)]["mean"] > by_key[("baseline", "dice", 5)]["mean"]


def test_bad_rows_are_refused_with_value_errors(tmp_path):
    rows = synthetic_rows()
    with pytest.raises(ValueError, match="lacks \\['hd95'\\]"):
        method_table([{k: v for k, v in rows[0].items() if k != "hd95"}])
    with pytest.raises(ValueError, match="baseline method 'unet'"):
        method_table(rows, baseline="unet")
    with pytest.raises(ValueError, match="pair_by"):
        method_table(rows, pair_by="slice")
    with pytest.raises(ValueError, match="numeric k"):
        plot_against_k(synthetic_rows(ks=(None,)), str(tmp_path / "f.png"))


def test_reports_from_polycl_evaluate_summaries(tmp_path):
    """The runner's path: evaluate each run's predictions, turn the summaries into rows, build the table."""
    reference = np.zeros((12, 20, 20), dtype=np.uint8)
    reference[3:9, 5:15, 5:15] = 1
    (tmp_path / "ref").mkdir()
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    rows = []
    for method, shift in (("baseline", 2), ("O", 0)):
        for seed in range(3):
            pred_dir = tmp_path / f"{method}_{seed}"
            pred_dir.mkdir()
            for case in range(2):
                for folder, array in ((tmp_path / "ref", reference),
                                      (pred_dir, np.roll(reference, shift * (1 + seed % 2 * case), axis=2))):
                    image = sitk.GetImageFromArray(array)
                    image.SetSpacing((0.7, 0.7, 2.0))
                    sitk.WriteImage(image, str(folder / f"case_{case}.nii.gz"))
            summary = evaluate_folders(str(tmp_path / "ref"), str(pred_dir), str(dj), num_processes=1,
                                       progress=False)
            rows += summary_rows(summary, method=method, seed=seed, k=None)
    table = method_table(rows)
    perfect = entry(table, "O")["metrics"]
    assert (perfect["dice"]["mean"], perfect["hd"]["mean"]) == (1.0, 0.0)
    assert entry(table, "baseline")["metrics"]["hd"]["mean"] > 2 * 0.7 - 1e-6
    assert perfect["dice"]["vs_baseline"]["n_pairs"] == 3  # one pair per seed (run-level pairing is the default)


def test_paired_hd_uses_the_cases_both_runs_define_and_counts_the_excluded():
    """O predicts nothing on the hardest case: its own HD mean leaves that case out, the paired difference too."""
    rows = []
    for method in ("baseline", "O"):
        for seed in range(5):
            for case, hd in (("easy", 2.0 + seed), ("mid", 4.0), ("hard", 30.0)):
                empty = method == "O" and case == "hard" and seed == 0
                rows.append(dict(method=method, seed=seed, k=1, case=case, label="liver", dice=0.0 if empty else 0.8,
                                 hd=None if empty else hd, hd95=None if empty else hd / 2,
                                 status="empty_prediction" if empty else "ok"))
    table = method_table(rows)
    o = entry(table, "O", 1)["metrics"]
    assert o["hd"]["mean"] < entry(table, "baseline", 1)["metrics"]["hd"]["mean"]  # its own mean skips "hard"
    for metric in ("hd", "hd95"):
        test = o[metric]["vs_baseline"]
        assert test["difference"] == 0.0 and test["excluded_cases"] == 1 and test["n_pairs"] == 5
    assert "+0.00 [+0.00, +0.00] (n=5, 1 case excluded) | no spread: test undefined" in table_markdown(table)


def test_means_and_differences_use_the_same_paired_runs_and_list_the_unpaired():
    """The baseline's fifth seed is still training: O's extra run is shown apart, not in O's mean."""
    rows = synthetic_rows(seeds=tuple(range(5)), ks=(2,))
    rows = [r for r in rows if not (r["method"] == "baseline" and r["seed"] == 4)]
    table = method_table(rows)
    o = entry(table, "O", 2)
    assert o["n_runs"] == 4 and o["seeds"] == [0, 1, 2, 3] and o["metrics"]["dice"]["vs_baseline"]["n_pairs"] == 4
    means = [np.mean([r["dice"] for r in rows if (r["method"], r["seed"]) == ("O", s)]) for s in range(4)]
    assert o["metrics"]["dice"]["mean"] == pytest.approx(np.mean(means))
    assert {(u["method"], u["seed"]) for u in table["unpaired_runs"]} == {("simclr", 4), ("O", 4)}
    assert "Unpaired runs" in table_markdown(table) and "O seed 4 k=2 (liver)" in table_markdown(table)
