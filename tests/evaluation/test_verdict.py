"""The one-line verdict: what the paired runs support, in words, never more than their interval carries."""
from __future__ import annotations

import numpy as np
from scipy import stats

from nnunet_polycl.evaluation import comparison_verdict, method_table
from nnunet_polycl.evaluation.reports import adjust_family, table_markdown
from nnunet_polycl.evaluation.statistics import conclusive, holm_adjust
from tests.evaluation.test_reports import correlated_rows, synthetic_rows

STUDY_ARMS, STUDY_KS, STUDY_SEEDS = ("S", "O"), (1, 2, 4, None), 5  # the study preset's grid: 2 x 4 comparisons


def null_experiments(n: int, rng: np.random.Generator) -> np.ndarray:
    """Run means of ``n`` study-grid experiments without any effect: (experiment, method, k, seed), baseline first;
    a seed effect shared by the methods (same labelled subset) and run noise."""
    seed_effect = 0.05 * rng.standard_normal((n, 1, len(STUDY_KS), STUDY_SEEDS))
    return 0.6 + seed_effect + 0.03 * rng.standard_normal((n, 1 + len(STUDY_ARMS), len(STUDY_KS), STUDY_SEEDS))


def experiment_rows(runs: np.ndarray) -> list[dict]:
    """One experiment's run means as result rows (one case per run)."""
    return [dict(method=method, seed=s, k=k, case="c", label="liver", dice=float(runs[m, i, s]), hd=1.0, hd95=1.0)
            for m, method in enumerate(("baseline", *STUDY_ARMS)) for i, k in enumerate(STUDY_KS)
            for s in range(STUDY_SEEDS)]


def test_a_clear_gain_is_called_better_with_its_interval_and_scope():
    verdict = comparison_verdict(method_table(synthetic_rows(seeds=tuple(range(6)))), "O", 5)
    assert "O was better than baseline on Dice" in verdict and "6 paired seeds" in verdict
    assert "95% t-interval" in verdict and "this dataset, fold and label budget" in verdict


def test_noise_is_called_noise():
    verdict = comparison_verdict(method_table(correlated_rows()), "O", 2)
    assert "interval includes 0" in verdict and "do not show a difference" in verdict
    assert "better" not in verdict


def test_few_seeds_say_no_test_and_one_seed_says_no_comparison():
    three = comparison_verdict(method_table(synthetic_rows(seeds=(0, 1, 2))), "simclr", 2)
    assert "interval includes 0" in three and "n < 5: no test" in three and "p =" not in three
    one = comparison_verdict(method_table(synthetic_rows(seeds=(0,))), "O", 2)
    assert "One pair cannot separate" in one and "p =" not in one


def test_hd_and_hd95_are_secondary_and_get_no_verdict():
    table = method_table(synthetic_rows(seeds=tuple(range(6))))
    for metric in ("hd", "hd95"):
        verdict = comparison_verdict(table, "O", 5, metric=metric)
        assert "secondary metric: shown, no verdict" in verdict and "better" not in verdict
    assert "HD95 (mm) (secondary)" in table_markdown(table)


def test_a_clear_difference_over_fewer_than_five_seeds_is_not_called_a_result():
    verdict = comparison_verdict(method_table(synthetic_rows(seeds=(0, 1, 2))), "O", 5)
    assert "interval excludes 0" in verdict and "too few to conclude" in verdict and "n < 5: no test" in verdict
    assert "was better" not in verdict and "p =" not in verdict


def test_each_label_gets_its_own_verdict():
    from nnunet_polycl.experiment.reports import verdicts

    liver = synthetic_rows(seeds=tuple(range(6)))
    tumour = [dict(r, label="tumour", dice=r["dice"] - (0.05 if r["method"] == "O" else 0.0)) for r in liver]
    text = verdicts([method_table(liver + tumour)], {})
    line = {label: next(x for x in text.splitlines() if x.startswith(f"- O ({label})") and "k = 5" in x)
            for label in ("liver", "tumour")}
    assert "O was better" in line["liver"] and "O was better" not in line["tumour"]


def test_the_family_keeps_false_verdicts_at_5_percent_on_the_study_grid():
    """No true effect, the study grid (S and O against the baseline at 4 ks, 5 seeds): the rate of experiments with
    any better/worse verdict stays at most 5%, where the unadjusted rule gave about 30%."""
    n = 4000
    runs = null_experiments(n, np.random.default_rng(17))
    d = (runs[:, 1:] - runs[:, :1]).reshape(n, -1, STUDY_SEEDS)  # (experiment, comparison, seed)
    test = stats.ttest_1samp(d, 0.0, axis=-1)
    low, high = test.confidence_interval(0.95)
    adjusted = holm_adjust(test.pvalue)
    any_verdict = conclusive(STUDY_SEEDS, low, high, adjusted).any(axis=-1)
    rate, unadjusted = any_verdict.mean(), conclusive(STUDY_SEEDS, low, high, test.pvalue).any(axis=-1).mean()
    print(f"\n{n} no-effect study-grid experiments: any better/worse verdict in {rate:.2%} (unadjusted: {unadjusted:.2%})")
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n) and unadjusted > 0.15

    for i in [*np.flatnonzero(any_verdict)[:3], 0, 1]:  # the report functions decide as the vectorised rule
        table = method_table(experiment_rows(runs[i]))
        said = [("was better" in v or "was worse" in v) for v in
                (comparison_verdict(table, m, k) for k in STUDY_KS for m in STUDY_ARMS)]
        assert any(said) == bool(any_verdict[i]) and table["family"]["size"] == 8


def test_holm_adjustment_is_the_textbook_one():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    assert np.allclose(holm_adjust(p), [0.04, 0.09, 0.09, np.nan, 0.025], equal_nan=True)  # m = 5, NaN counted


def test_bootstrap_interval_excluding_zero_gives_no_better_verdict():
    """With 5 pairs the percentile bootstrap excludes 0 whenever all differences are positive: it is only shown."""
    d = [0.001, 0.002, 0.003, 0.004, 0.10]
    rows = [dict(method=m, seed=s, k=1, case="c", label="liver", dice=0.5 + (d[s] if m == "O" else 0.0), hd=1.0,
                 hd95=1.0) for m in ("baseline", "O") for s in range(5)]
    table = method_table(rows, interval="bootstrap")
    test = table["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert test["bootstrap_low"] > 0 and test["low"] < 0 < test["high"]
    verdict = comparison_verdict(table, "O", 1)
    assert "better" not in verdict and "interval includes 0" in verdict and "p = 0.322" in verdict


def test_one_seed_under_per_case_pairing_gives_no_p_value_and_no_verdict():
    rows = synthetic_rows(seeds=(0,), cases=5)
    table = method_table(rows, pair_by="case")
    test = table["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert (test["n_pairs"], test["n_runs"], test["ttest_p"], test["wilcoxon_p"], test["low"]) == (5, 1, None, None, None)
    verdict = comparison_verdict(table, "simclr", 2)
    assert "one run per method: its cases are not independent" in verdict and "p =" not in verdict
    assert "better" not in comparison_verdict(table, "O", 5) and "p =" not in comparison_verdict(table, "O", 5)
    three = method_table(synthetic_rows(seeds=(0, 1, 2), cases=5), pair_by="case")
    assert three["rows"][1]["metrics"]["dice"]["vs_baseline"]["note"] == "n < 5 runs per method: no test"


def test_zero_spread_says_test_undefined_and_gives_no_verdict():
    rows = [dict(method=m, seed=s, k=1, case=c, label="liver", dice=0.5 + 0.01 * s + (0.02 if m == "O" else 0.0),
                 hd=1.0, hd95=1.0) for m in ("baseline", "O") for s in range(5) for c in ("a", "b")]
    table = method_table(rows)
    test = table["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert test["note"] == "no spread: test undefined" and test["ttest_p"] is None
    verdict = comparison_verdict(table, "O", 1)
    assert "no spread: test undefined, no verdict" in verdict and "better" not in verdict
    assert "no spread: test undefined" in table_markdown(table)
    half = [dict(r, dice=r["dice"] + (0.01 if r["method"] == "O" and r["seed"] > 1 else 0.0)) for r in rows]
    test = method_table(half)["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert test["wilcoxon_n"] == 5 and test["ttest_p"] is not None
    same = [dict(r, dice=0.5) for r in rows]
    zero = method_table(same)["rows"][1]["metrics"]["dice"]["vs_baseline"]
    assert zero["wilcoxon_n"] == 0 and "(0 non-zero)" not in table_markdown(method_table(same))


def test_a_family_spanning_several_tables_counts_all_their_comparisons():
    tables = [method_table(synthetic_rows(seeds=tuple(range(6)))), method_table(synthetic_rows(seeds=tuple(range(6))))]
    single = tables[0]["rows"][2]["metrics"]["dice"]["vs_baseline"]["ttest_p_adjusted"]
    family = adjust_family(tables, "two adaptations")
    assert family["size"] == 12 and tables[1]["family"]["name"] == "two adaptations"
    assert tables[0]["rows"][2]["metrics"]["dice"]["vs_baseline"]["ttest_p_adjusted"] >= single
    assert "Family of comparisons: two adaptations; 12 comparisons" in table_markdown(tables[0])
