"""One sentence that says what a comparison in Table 1 supports, and what it does not.

The verdict reads the paired difference to the baseline and its 95% confidence interval (never a p-value alone):

- no or one pair of runs: no comparison is possible;
- the interval contains 0: the runs do not separate the methods (which is not evidence that they are equal);
- the interval excludes 0 with fewer than :data:`MIN_PAIRS_FOR_TEST` pairs: a direction, but too few runs to
  conclude (no test);
- the interval excludes 0: the method was better (or worse) in these runs, with the interval as the size of the
  effect, on this dataset, fold and label budget only.
"""
from __future__ import annotations

from nnunet_polycl.evaluation.reports import HIGHER_IS_BETTER, METRIC_TITLES
from nnunet_polycl.evaluation.statistics import MIN_PAIRS_FOR_TEST


def _k_text(k) -> str:
    return "all labelled scans" if k is None else f"k = {k} labelled scan{'s' if k != 1 else ''}"


def find_entry(table: dict, method: str, k, label: str | None = None) -> dict | None:
    """The Table 1 entry of ``method`` at ``k`` (first label unless ``label``), or None."""
    return next((e for e in table["rows"] if e["method"] == method and e["k"] == k
                 and (label is None or e["label"] == label)), None)


def comparison_verdict(table: dict, method: str, k, metric: str = "dice", label: str | None = None) -> str:
    """The verdict on ``method`` against the table's baseline at ``k`` for ``metric`` (one line)."""
    entry = find_entry(table, method, k, label)
    baseline, title, where = table["baseline"], METRIC_TITLES[metric], _k_text(k)
    if entry is None or entry["metrics"][metric]["vs_baseline"] is None:
        return f"Verdict ({where}): no {method} runs paired with {baseline} runs; nothing can be compared."
    test = entry["metrics"][metric]["vs_baseline"]
    n = test["n_pairs"]
    if n < 2 or test["low"] is None:
        return (f"Verdict ({where}): {n} paired run{'s' if n != 1 else ''} of {method} and {baseline}. One pair "
                f"cannot separate a difference between the methods from run-to-run noise: run more seeds.")
    pairs = "paired cases (PER-CASE PAIRING)" if table.get("pair_by") == "case" else "paired seeds"
    diff = f"{test['difference']:+.3f} {title} [{test['interval']} {test['low']:+.3f}, {test['high']:+.3f}], " \
           f"{n} {pairs}"
    tested = "" if test["ttest_p"] is not None else f"; {test['note']}"
    if test["low"] <= 0 <= test["high"]:
        return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. The interval includes 0: these runs "
                f"do not show a difference between {method} and {baseline} (nor that they are equal).")
    better = (test["difference"] > 0) == HIGHER_IS_BETTER[metric]
    if n < MIN_PAIRS_FOR_TEST:
        return (f"Verdict ({where}): {method} minus {baseline} = {diff}{tested}. The interval excludes 0, but "
                f"{n} pairs are too few to conclude that {method} is {'better' if better else 'worse'}: run at least "
                f"{MIN_PAIRS_FOR_TEST} seeds.")
    p = "" if test["ttest_p"] is None else f", paired t-test p = {test['ttest_p']:.3g}"
    return (f"Verdict ({where}): {method} minus {baseline} = {diff}{p}. In these runs {method} was "
            f"{'better' if better else 'worse'} than {baseline} on {title}; this holds for this dataset, fold and "
            f"label budget, not beyond.")
