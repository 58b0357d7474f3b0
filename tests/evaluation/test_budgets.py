"""Dice against training budget and the end-of-training label, on synthetic results (issue 16, section 1)."""
from __future__ import annotations

import csv
import io

import pytest

from nnunet_polycl.evaluation.budgets import budget_table, budgets_csv, budgets_figure, budgets_markdown
from nnunet_polycl.evaluation.convergence import END, NOT_CHECKED, ONE_SEED, PAST_BEST, STILL, end_of_training
from nnunet_polycl.evaluation.reports import method_table
from nnunet_polycl.finetuning.budgets import budget_epoch, budget_plan, parse_budgets
from nnunet_polycl.paths import PolyCLUserError

SEEDS = range(5)


def rows(dice: dict[tuple[str, float], list[float]], epochs: int = 12) -> list[dict]:
    """Two cases per run, both with the run's Dice: ``dice[(method, budget)]`` = one value per seed."""
    out = []
    for (method, budget), values in dice.items():
        for seed, value in enumerate(values):
            for case in ("a", "b"):
                out.append(dict(method=method, adaptation="default", seed=seed, k=1, case=case, label="liver",
                                dice=value, hd=1.0, hd95=1.0, budget=budget,
                                epoch=budget_epoch(budget, epochs), iterations=3 * budget_epoch(budget, epochs)))
    return out


def test_end_of_training_when_the_baseline_moved_less_than_001_over_the_last_doubling():
    half = {s: 0.70 + 0.01 * s for s in SEEDS}
    full = {s: half[s] + d for s, d in zip(SEEDS, (0.004, -0.006, 0.003, -0.002, 0.006), strict=True)}  # mean +0.001, spans 0
    result = end_of_training(half, full)
    assert result["status"] == "end" and result["text"] == END
    assert result["change"]["low"] < 0 < result["change"]["high"] and result["change"]["n_pairs"] == 5


@pytest.mark.parametrize("changes", [
    (0.03, 0.02, 0.04, 0.05, 0.01),  # moved by +0.03: still improving
    (0.008, 0.009, 0.007, 0.008, 0.009),  # less than 0.01, but every seed rose: the interval excludes 0
    (-0.008, -0.009, -0.007, -0.008, -0.009),  # fell by less than 0.01 on every seed: not at rest either
])
def test_still_training_otherwise(changes):
    half = {s: 0.40 + 0.02 * s for s in SEEDS}
    result = end_of_training(half, {s: half[s] + d for s, d in zip(SEEDS, changes, strict=True)})
    assert result["status"] == "still"
    assert result["text"] == STILL == "still training: this compares speed, not end points"


@pytest.mark.parametrize("changes", [
    (-0.05, -0.04, -0.06, -0.05, -0.03),  # every seed fell
    (-0.08, 0.03, -0.10, 0.02, -0.02),  # the mean fell by 0.03, the interval includes 0
])
def test_a_baseline_that_lost_dice_over_the_last_doubling_is_past_its_best_not_still_training(changes):
    half = {s: 0.70 + 0.02 * s for s in SEEDS}
    result = end_of_training(half, {s: half[s] + d for s, d in zip(SEEDS, changes, strict=True)})
    assert result["status"] == "past_best" and result["text"] == PAST_BEST
    assert "over-fitting" in PAST_BEST and result["change"]["difference"] < -0.01


def test_not_checked_without_the_half_budget_or_with_one_small_pair():
    assert end_of_training({}, {0: 0.5})["text"] == NOT_CHECKED
    assert "run with --budgets 0.5 1 or more" in NOT_CHECKED
    assert end_of_training({0: 0.5}, {0: 0.501})["text"] == ONE_SEED  # no interval from one seed
    assert end_of_training({0: 0.5}, {0: 0.6})["status"] == "still"  # moved by 0.1: no interval needed


def test_budget_table_pairs_by_seed_at_every_budget_and_labels_the_comparison():
    baseline = {0.25: [0.3, 0.32, 0.28, 0.31, 0.29], 0.5: [0.5, 0.52, 0.48, 0.51, 0.49],
                1.0: [0.7, 0.72, 0.68, 0.71, 0.69]}
    ours = {b: [v + 0.05 for v in values] for b, values in baseline.items()}
    table = budget_table(rows({**{("baseline", b): v for b, v in baseline.items()},
                               **{("O", b): v for b, v in ours.items()}}))
    assert [(e["method"], e["budget"]) for e in table["rows"]] == [
        (m, b) for b in (0.25, 0.5, 1.0) for m in ("baseline", "O")]
    for e in table["rows"]:
        assert e["n_runs"] == 5 and e["dice"]["low"] < e["dice"]["mean"] < e["dice"]["high"]
        if e["method"] == "O":
            assert e["vs_baseline"]["difference"] == pytest.approx(0.05) and e["vs_baseline"]["n_pairs"] == 5
    assert [e["epochs"] for e in table["rows"] if e["method"] == "O"] == [[3], [6], [12]]
    (label,) = table["end_of_training"]
    assert label["status"] == "still" and label["change"]["difference"] == pytest.approx(0.2)

    md = budgets_markdown(table, ["Adam lr 0.001, one cosine cycle, 12 epochs x 3 iterations (36 in all) (10 runs)"])
    assert "Fine-tuning schedule: Adam lr 0.001, one cosine cycle, 12 epochs x 3 iterations" in md
    assert "rounded to the nearest epoch boundary (at least 1 epoch)" in md
    assert "| O | 1 | liver | 0.5 | 6 | 18 | 5 |" in md and "+0.0500 [" in md
    assert f"End of training (baseline, k = 1, liver): **{STILL}** (baseline Dice 0.500 at 0.5 -> 0.700 at 1" in md
    lines = list(csv.DictReader(io.StringIO(budgets_csv(table))))
    assert len(lines) == 6 and {line["end_of_training"] for line in lines} == {"still"}
    assert budgets_figure([table]).axes[0].get_title().endswith(STILL)


def test_a_still_training_baseline_that_was_better_earlier_is_described_as_wandering_not_climbing():
    """Fold 1's `_long` baseline (evidence 0e): best at a quarter of its steps, down at half, partly back at the end.
    The rule's label stays "still training"; the line beside it says the mean was higher at 0.25."""
    baseline = {0.25: [0.60, 0.58, 0.55, 0.52, 0.45], 0.5: [0.50, 0.52, 0.47, 0.50, 0.46],
                1.0: [0.53, 0.52, 0.50, 0.53, 0.49]}  # 0.54 -> 0.49 -> 0.514
    table = budget_table(rows({**{("baseline", b): v for b, v in baseline.items()},
                               **{("O", b): [0.7] * 5 for b in baseline}}))
    (label,) = table["end_of_training"]
    assert label["status"] == "still" and label["change"]["difference"] == pytest.approx(0.024)
    assert label["earlier_peak"]["budget"] == 0.25 and label["earlier_peak"]["mean"] == pytest.approx(0.54)
    md = budgets_markdown(table)
    assert f"**{STILL}** (baseline Dice 0.490 at 0.5 -> 0.514 at 1: change +0.024 [95% t-interval" in md
    assert "its mean was higher at 0.25 of the schedule (0.540) than at the end: not climbing but wandering" in md

    climbing = {0.25: [0.48] * 5, 0.5: baseline[0.5], 1.0: baseline[1.0]}  # 0.48 -> 0.49 -> 0.514: climbing
    table = budget_table(rows({**{("baseline", b): v for b, v in climbing.items()},
                               **{("O", b): [0.7] * 5 for b in climbing}}))
    (label,) = table["end_of_training"]
    assert label["status"] == "still" and "earlier_peak" not in label
    assert "wandering" not in budgets_markdown(table)


def test_the_end_of_training_label_counts_only_the_seeds_the_comparisons_use():
    """Baseline seeds 0-9, O only 0-4 (a grid still being extended): the comparisons use seeds 0-4, so must the label.
    Seeds 0-4 are at rest; seeds 5-9 alone still rise by 0.1."""
    flat = [0.70, 0.72, 0.68, 0.71, 0.69]
    baseline = {0.5: flat + [0.4] * 5, 1.0: [v + d for v, d in zip(flat, (0.004, -0.006, 0.003, -0.002, 0.006),
                                                                       strict=True)] + [0.5] * 5}
    table = budget_table(rows({**{("baseline", b): v for b, v in baseline.items()},
                               **{("O", b): [0.7] * 5 for b in baseline}}))
    (label,) = table["end_of_training"]
    assert label["status"] == "end" and label["change"]["n_pairs"] == 5
    assert {e["n_runs"] for e in table["rows"]} == {5}


def test_the_budget_table_counts_only_the_paired_runs_as_table_1_does_and_names_the_others():
    """Real-CT evidence 5g: the baseline and O-pseudo had a seed that S lacked, scored 0 on another labelled scan and
    trained for more steps. Its runs must not enter the arms' means, intervals or iteration spans beside an n that
    leaves them out."""
    budgets = (0.5, 1.0)
    paired = rows({**{("baseline", b): [0.78, 0.80, 0.80, 0.79, 0.81] for b in budgets},
                   **{("O", b): [0.77, 0.80, 0.79, 0.80, 0.80] for b in budgets}})
    extra = [dict(r, seed=r["seed"] + 5) for r in rows({("baseline", b): [0.0] for b in budgets}, epochs=20)]
    table = budget_table(paired + extra)
    end = [r for r in paired if r["budget"] == 1.0]
    table_1 = method_table(end, "baseline")
    (base,) = [e for e in table["rows"] if e["method"] == "baseline" and e["budget"] == 1.0]
    (in_table_1,) = [e for e in table_1["rows"] if e["method"] == "baseline"]
    assert base["n_runs"] == 5 and base["dice"]["mean"] == pytest.approx(0.796)
    assert base["dice"]["mean"] == pytest.approx(in_table_1["metrics"]["dice"]["mean"])
    assert base["dice"]["low"] > 0.77 and base["iterations"] == [36]  # not the unpaired run's 60 iterations
    assert table["unpaired_runs"] == [dict(method="baseline", seed=5, k=1, label="liver")]
    md = budgets_markdown(table)
    assert "| baseline | 1 | liver | 1 | 12 | 36 | 5 | 0.7960 [" in md
    assert "Unpaired runs (left out of means, spreads and differences: another method lacks their seed): " \
           "baseline seed 5 k=1 (liver)" in md


def test_budget_fractions_map_to_the_nearest_epoch_and_at_least_one():
    assert parse_budgets(["0.5", "0.125", "0.5"]) == (0.125, 0.5, 1.0)  # 1 always included, sorted, distinct
    for bad in ("0", "1.5", "half"):
        with pytest.raises(PolyCLUserError, match=f"--budgets '{bad}' is invalid"):
            parse_budgets([bad])
    assert [budget_epoch(f, 12) for f in (0.125, 0.25, 0.5, 1)] == [2, 3, 6, 12]  # 1.5 rounds up to 2
    assert [budget_epoch(f, 100) for f in (0.125, 0.25, 0.5)] == [13, 25, 50]
    assert [budget_epoch(f, 2) for f in (0.125, 0.5, 0.9)] == [1, 1, 2]
    plan = budget_plan((0.5, 0.9, 1.0), 2, 3)
    assert [(b["epoch"], b["iterations"], b["checkpoint"]) for b in plan] == [
        (1, 3, "checkpoint_budget_0.5.pth"), (2, 6, "checkpoint_final.pth"), (2, 6, "checkpoint_final.pth")]
