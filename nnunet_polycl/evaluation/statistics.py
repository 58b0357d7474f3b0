"""Statistics over repeated runs: descriptive summaries, 95% confidence intervals and paired tests.

The unit of analysis is a run (method, seed, k). Intervals and tests take one value per run (or one paired
difference per seed); they never pool the cases of a run, which are not independent samples. Below
:data:`MIN_PAIRS_FOR_TEST` pairs no p-value is computed at all (the report says "n < 5: no test"): with so few
independent runs a p-value is too unstable to carry a conclusion, while the interval still shows the spread.

Two kinds of 95% interval (:data:`INTERVALS`):

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
NO_TEST_NOTE = f"n < {MIN_PAIRS_FOR_TEST}: no test"
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


def paired_tests(x: Iterable[float], y: Iterable[float]) -> dict:
    """Two-sided Wilcoxon signed-rank and paired t-test of ``x`` against ``y`` (pairs in the same order).

    Returns ``{n_pairs, wilcoxon_p, ttest_p, note}``; both p-values are None (and ``note`` says why) below
    :data:`MIN_PAIRS_FOR_TEST` pairs or when a test is undefined (e.g. all differences zero).
    """
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
    result = dict(n_pairs=int(x.size), wilcoxon_p=None, ttest_p=None, note=None)
    if x.size < MIN_PAIRS_FOR_TEST:
        result["note"] = NO_TEST_NOTE
        return result
    result["wilcoxon_p"], note_w = _p_value(stats.wilcoxon, x, y)
    result["ttest_p"], note_t = _p_value(stats.ttest_rel, x, y)
    result["note"] = note_w or note_t
    return result


def paired_comparison(x: Iterable[float], y: Iterable[float], kind: str = "t") -> dict:
    """``x`` against ``y`` (paired, same order): the mean difference ``x - y`` with its 95% interval, and the tests.

    Returns ``{n_pairs, difference, low, high, interval, wilcoxon_p, ttest_p, note}``.
    """
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    tests = paired_tests(x, y)
    interval = mean_interval(x - y, kind)
    return dict(n_pairs=tests["n_pairs"], difference=interval["mean"], low=interval["low"], high=interval["high"],
                interval=interval["interval"], wilcoxon_p=tests["wilcoxon_p"], ttest_p=tests["ttest_p"],
                note=tests["note"])
