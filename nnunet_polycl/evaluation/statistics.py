"""Descriptive statistics over defined values and paired tests, with "n/a" instead of NaN for too few values."""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np
from scipy import stats

MIN_PAIRS = 3


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


def _p_value(test, x: np.ndarray, y: np.ndarray) -> tuple[float | None, str | None]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            p = float(test(x, y).pvalue)
        except ValueError as e:
            return None, f"n/a ({e})"
    if not math.isfinite(p):
        return None, "n/a (undefined: the paired differences have no spread)"
    return p, None


def paired_tests(x: Iterable[float], y: Iterable[float]) -> dict:
    """Two-sided Wilcoxon signed-rank and paired t-test of ``x`` against ``y`` (pairs in the same order).

    Returns ``{n_pairs, wilcoxon_p, ttest_p, note}``; a p-value is None (and ``note`` says why) with fewer than
    ``MIN_PAIRS`` pairs or when the test is undefined (e.g. all differences zero).
    """
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
    result = dict(n_pairs=int(x.size), wilcoxon_p=None, ttest_p=None, note=None)
    if x.size < MIN_PAIRS:
        result["note"] = f"n/a (only {x.size} pairs, at least {MIN_PAIRS} needed)"
        return result
    result["wilcoxon_p"], note_w = _p_value(stats.wilcoxon, x, y)
    result["ttest_p"], note_t = _p_value(stats.ttest_rel, x, y)
    result["note"] = note_w or note_t
    return result
