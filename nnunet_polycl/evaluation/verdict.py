"""One sentence that says what a comparison in Table 1 supports, and what it does not.

The verdict reads the paired difference to the baseline, its 95% t-interval and the paired t-test's p-value adjusted
over the report's family of comparisons (Holm-Bonferroni), whichever extra interval the table shows; one rule,
:func:`~nnunet_polycl.evaluation.statistics.conclusive`:

- a secondary metric (HD, HD95): no verdict, the numbers are shown only;
- no pair, or one run per method (any pairing): no comparison is possible;
- no spread (all paired differences equal): the test is undefined, no verdict;
- the interval contains 0: the runs do not separate the methods (which is not evidence that they are equal);
- the interval excludes 0 with fewer than :data:`MIN_PAIRS_FOR_TEST` pairs (or, per case, runs): a direction, but too
  few runs to conclude (no test);
- the interval excludes 0 but the adjusted p >= 0.05: not a conclusion among the family's comparisons;
- otherwise: the method was better (or worse) in these runs, on this dataset, fold and label budget only.
"""
from __future__ import annotations

from nnunet_polycl.evaluation.reports import HIGHER_IS_BETTER, METRIC_TITLES, PRIMARY_METRIC
from nnunet_polycl.evaluation.statistics import ALPHA, NO_SPREAD_NOTE, ONE_RUN_NOTE, conclusive


def _k_text(k) -> str:
    return "all labelled scans" if k is None else f"k = {k} labelled scan{'s' if k != 1 else ''}"


def find_entry(table: dict, method: str, k, label: str | None = None) -> dict | None:
    """The Table 1 entry of ``method`` at ``k`` (first label unless ``label``), or None."""
    return next((e for e in table["rows"] if e["method"] == method and e["k"] == k
                 and (label is None or e["label"] == label)), None)


def _family(table: dict) -> str:
    family = table.get("family") or {}
    return f"{family.get('size', '?')} comparisons ({family.get('method', 'Holm-Bonferroni')})"


def _undecided(table: dict, test: dict, method: str, where: str, title: str) -> str | None:
    """The verdict when the comparison cannot carry one (no pair, one run, no spread), else None."""
    baseline, n = table["baseline"], test["n_pairs"]
    if test["note"] == ONE_RUN_NOTE:
        return (f"Verdict ({where}): {ONE_RUN_NOTE}; no p-value and no verdict for {method} against {baseline}: "
                f"run at least 5 seeds.")
    if n < 2 or test["low"] is None:
        return (f"Verdict ({where}): {n} paired run{'s' if n != 1 else ''} of {method} and {baseline}. One pair "
                f"cannot separate a difference between the methods from run-to-run noise: run more seeds.")
    if test["note"] == NO_SPREAD_NOTE:
        return (f"Verdict ({where}): {method} minus {baseline} = {test['difference']:+.3f} {title} in every one of "
                f"the {n} pairs; {NO_SPREAD_NOTE}, no verdict.")
    return None


def comparison_verdict(table: dict, method: str, k, metric: str = PRIMARY_METRIC, label: str | None = None) -> str:
    """The verdict on ``method`` against the table's baseline at ``k`` for ``metric`` (one line)."""
    entry = find_entry(table, method, k, label)
    baseline, title, where = table["baseline"], METRIC_TITLES[metric], _k_text(k)
    if metric != PRIMARY_METRIC:
        return f"Verdict ({where}): {title} is a secondary metric: shown, no verdict."
    if entry is None or entry["metrics"][metric]["vs_baseline"] is None:
        return f"Verdict ({where}): no {method} runs paired with {baseline} runs; nothing can be compared."
    test = entry["metrics"][metric]["vs_baseline"]
    undecided = _undecided(table, test, method, where, title)
    if undecided:
        return undecided
    n = test["n_pairs"]
    pairs = "paired cases (PER-CASE PAIRING)" if table.get("pair_by") == "case" else "paired seeds"
    diff = f"{test['difference']:+.3f} {title} [{test['interval']} {test['low']:+.3f}, {test['high']:+.3f}], " \
           f"{n} {pairs}"
    p = "" if test["ttest_p"] is None else (f", paired t-test p = {test['ttest_p']:.3g}, adjusted p = "
                                            f"{test['ttest_p_adjusted']:.3g} over the family's {_family(table)}")
    tested = p or f"; {test['note']}"
    if test["low"] <= 0 <= test["high"]:
        return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. The interval includes 0: these runs "
                f"do not show a difference between {method} and {baseline} (nor that they are equal).")
    direction = "better" if (test["difference"] > 0) == HIGHER_IS_BETTER[metric] else "worse"
    if test["ttest_p"] is None:
        return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. The interval excludes 0, but "
                f"these runs are too few to conclude that {method} is {direction}: run at least 5 seeds.")
    if not conclusive(n, test["low"], test["high"], test["ttest_p_adjusted"]):
        return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. The interval excludes 0, but the "
                f"adjusted p is not below {ALPHA}: among the family's comparisons this is no evidence that {method} "
                f"is {direction}.")
    return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. In these runs {method} was {direction} "
            f"than {baseline} on {title}; this holds for this dataset, fold and label budget, not beyond.")
