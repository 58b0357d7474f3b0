"""Statistics over repeated runs: descriptive summaries, 95% confidence intervals and paired tests.

The unit of analysis is a run (method, seed, k). Intervals and tests take one value per run (or one paired
difference per seed); they never pool the cases of a run, which are not independent samples. Below
:data:`MIN_PAIRS_FOR_TEST` pairs no p-value is computed at all (the report says "n < 5: no test"): with so few
independent runs a p-value is too unstable to carry a conclusion, while the interval still shows the spread.

Verdicts follow one rule (:func:`conclusive`): the 95% t-interval of the paired differences excludes 0, the paired
t-test's p-value *adjusted over the report's family of comparisons* (Holm-Bonferroni, :func:`holm_adjust`) is below
:data:`ALPHA`, and at least :data:`MIN_PAIRS_FOR_TEST` independent pairs. A difference with no spread (all paired
differences equal) has no test ("no spread: test undefined") and no verdict.

Two kinds of 95% interval (:data:`INTERVALS`); the t-interval is always computed (the verdict reads it), the
bootstrap one only when asked for, as an extra column:

- ``"t"`` (default): Student's t-interval ``mean ± t(0.975, n-1) · sd / √n``; exact for normal values, needs n >= 2.
- ``"bootstrap"``: percentile bootstrap over the runs (resampled with replacement, :data:`BOOTSTRAP_RESAMPLES`
  resamples, fixed seed so the report is reproducible); assumes nothing about the shape, but is too narrow for small
  n (it never extends beyond the observed values).
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np
from scipy import stats

MIN_PAIRS_FOR_TEST = 5
ALPHA = 0.05
NO_TEST_NOTE = f"n < {MIN_PAIRS_FOR_TEST}: no test"
NO_SPREAD_NOTE = "no spread: test undefined"
ONE_RUN_NOTE = "one run per method: its cases are not independent"
FEW_RUNS_NOTE = f"n < {MIN_PAIRS_FOR_TEST} runs per method: no test"
BOOTSTRAP_WARNING = (f"the percentile bootstrap is too narrow at small n (with {MIN_PAIRS_FOR_TEST} pairs it excludes "
                     f"0 whenever all differences share a sign); the verdict follows the t-interval and the "
                     f"adjusted test")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
INTERVALS = {
    "t": "95% t-interval",
    "bootstrap": f"95% percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples)",
}


def defined(values: Iterable[float | None]) -> list[float]:
    """The values that are neither None nor NaN/inf."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def describe(values: Iterable[float | None]) -> dict:
    """``{n, mean, std, median, min, max}`` of the defined values; ``std`` is the sample standard deviation
    (ddof=1) and None below two values; every statistic is None when no value is defined."""
    x = np.asarray(defined(values), dtype=float)
    if x.size == 0:
        return dict(n=0, mean=None, std=None, median=None, min=None, max=None)
    return dict(n=int(x.size), mean=float(x.mean()), std=float(x.std(ddof=1)) if x.size > 1 else None,
                median=float(np.median(x)), min=float(x.min()), max=float(x.max()))


def check_interval(kind: str) -> str:
    """``kind`` if it names an interval of :data:`INTERVALS`; raises ValueError listing them otherwise."""
    if kind not in INTERVALS:
        raise ValueError(f"unknown confidence interval {kind!r}; choose one of {list(INTERVALS)}")
    return kind


def mean_interval(values: Iterable[float | None], kind: str = "t") -> dict:
    """95% confidence interval of the mean of the defined ``values``: ``{n, mean, low, high, interval}``.

    ``low`` and ``high`` are None below two values (no interval can be given for one run).
    """
    x = np.asarray(defined(values), dtype=float)
    result = dict(n=int(x.size), mean=float(x.mean()) if x.size else None, low=None, high=None,
                  interval=INTERVALS[check_interval(kind)])
    if x.size < 2:
        return result
    if kind == "t":
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        result.update(low=float(x.mean()) - half, high=float(x.mean()) + half)
    else:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        means = x[rng.integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))].mean(axis=1)
        tail = 100 * (1 - CONFIDENCE) / 2
        result.update(low=float(np.percentile(means, tail)), high=float(np.percentile(means, 100 - tail)))
    return result


def holm_adjust(p_values, family_size: int | None = None) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values along the last axis (vectorised over the others).

    NaN (a comparison without a test) stays NaN but counts in the family size, which is the last axis' length unless
    ``family_size`` is given: ``p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j))`` over the ascending p-values.
    """
    p = np.asarray(p_values, dtype=float)
    m = p.shape[-1] if family_size is None else family_size
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1)
    factors = m - np.arange(p.shape[-1])
    adjusted = np.minimum(1.0, np.fmax.accumulate(ranked * factors, axis=-1))
    adjusted = np.where(np.isnan(ranked), np.nan, adjusted)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def conclusive(n_pairs, low, high, adjusted_p):
    """The verdict rule: at least :data:`MIN_PAIRS_FOR_TEST` pairs, a 95% t-interval that excludes 0 and an adjusted
    p-value below :data:`ALPHA`. Works elementwise on numpy arrays (NaN = no interval / no test: not conclusive)."""
    low, high, adjusted_p = (np.asarray(v, dtype=float) for v in (low, high, adjusted_p))
    with np.errstate(invalid="ignore"):
        return (np.asarray(n_pairs) >= MIN_PAIRS_FOR_TEST) & ((low > 0) | (high < 0)) & (adjusted_p < ALPHA)


def _p_value(test, x: np.ndarray, y: np.ndarray) -> tuple[float | None, str | None]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            p = float(test(x, y).pvalue)
        except ValueError as e:
            return None, f"no test ({e})"
    if not math.isfinite(p):
        return None, "no test (the paired differences have no spread)"
    return p, None


def _gate(n_pairs: int, n_runs: int | None) -> str | None:
    """Why no test may be made (None when one may): too few pairs, or, under per-case pairing, too few runs."""
    if n_runs is not None and n_runs <= 1:
        return ONE_RUN_NOTE
    if n_runs is not None and n_runs < MIN_PAIRS_FOR_TEST:
        return FEW_RUNS_NOTE
    return NO_TEST_NOTE if n_pairs < MIN_PAIRS_FOR_TEST else None


def paired_tests(x: Iterable[float], y: Iterable[float], n_runs: int | None = None) -> dict:
    """Two-sided Wilcoxon signed-rank and paired t-test of ``x`` against ``y`` (pairs in the same order).

    ``n_runs``: the independent runs per method behind the pairs when they are not the pairs themselves (per-case
    pairing); a test then also needs :data:`MIN_PAIRS_FOR_TEST` runs. Returns ``{n_pairs, wilcoxon_p, wilcoxon_n,
    ttest_p, note}`` (``wilcoxon_n``: the non-zero differences Wilcoxon ranks); both p-values are None, and ``note``
    says why, below the gate, when the differences have no spread, or when a test is undefined.
    """
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
    d = x - y
    result = dict(n_pairs=int(x.size), wilcoxon_p=None, wilcoxon_n=int(np.count_nonzero(d)), ttest_p=None,
                  note=_gate(int(x.size), n_runs))
    if result["note"] is not None:
        return result
    if np.ptp(d) == 0:
        result["note"] = NO_SPREAD_NOTE
        return result
    result["wilcoxon_p"], note_w = _p_value(stats.wilcoxon, x, y)
    result["ttest_p"], note_t = _p_value(stats.ttest_rel, x, y)
    result["note"] = note_w or note_t
    return result


def paired_comparison(x: Iterable[float], y: Iterable[float], kind: str = "t", n_runs: int | None = None) -> dict:
    """``x`` against ``y`` (paired, same order): the mean difference ``x - y`` with its 95% t-interval, the tests and,
    for ``kind="bootstrap"``, the percentile bootstrap interval as an extra (``bootstrap_low`` / ``bootstrap_high``).

    Returns ``{n_pairs, n_runs, difference, low, high, interval, bootstrap_low, bootstrap_high, wilcoxon_p,
    wilcoxon_n, ttest_p, ttest_p_adjusted, note}``; ``ttest_p_adjusted`` is None until :func:`holm_adjust` is applied
    over the report's family. With one run per method (``n_runs`` 1) there is no interval either.
    """
    check_interval(kind)
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    tests = paired_tests(x, y, n_runs)
    interval = mean_interval(x - y, "t")
    result = dict(n_pairs=tests["n_pairs"], n_runs=tests["n_pairs"] if n_runs is None else n_runs,
                  difference=interval["mean"], low=interval["low"], high=interval["high"],
                  interval=interval["interval"], bootstrap_low=None, bootstrap_high=None,
                  wilcoxon_p=tests["wilcoxon_p"], wilcoxon_n=tests["wilcoxon_n"], ttest_p=tests["ttest_p"],
                  ttest_p_adjusted=None, note=tests["note"])
    if tests["note"] == ONE_RUN_NOTE:
        result.update(low=None, high=None)
    elif kind == "bootstrap":
        boot = mean_interval(x - y, "bootstrap")
        result.update(bootstrap_low=boot["low"], bootstrap_high=boot["high"])
    return result
