"""The one-line verdict: what the paired runs support, in words, never more than their interval carries."""
from __future__ import annotations

from nnunet_polycl.evaluation import comparison_verdict, method_table
from tests.evaluation.test_reports import correlated_rows, synthetic_rows


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


def test_hd_lower_is_better():
    rows = synthetic_rows(seeds=tuple(range(6)))
    verdict = comparison_verdict(method_table(rows), "O", 5, metric="hd95")
    assert "O was better than baseline on HD95" in verdict


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
