"""Statistics of repeated timings: per-repeat rates, their median, and ratios of medians.

Every figure of ``polycl_benchmark`` is measured in several repeats within one run. A repeat does a fixed amount of
work (``items`` triplets or iterations) and is timed as a whole; its rate is ``items / seconds``. The reported figure
is the median rate over the repeats (robust to a repeat slowed by other load on a shared machine), and a ratio of two
figures is the ratio of their medians, or, for figures whose repeats ran interleaved, the median of the per-repeat
ratios (:func:`paired_ratio`).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _check_finite_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")


def median(values: Sequence[float]) -> float:
    """Median of at least one finite value (mean of the two middle values for an even count).

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    if len(values) == 0:
        raise ValueError("median of no values: measure at least one repeat.")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"median of non-finite values {bad}.")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` of two figures (both finite and > 0).

    Raises:
        ValueError: either figure is not a finite number > 0.
    """
    _check_finite_positive("numerator", numerator)
    _check_finite_positive("denominator", denominator)
    return float(numerator) / float(denominator)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-repeat ratios of two figures whose repeats ran interleaved (repeat i of one right after
    repeat i of the other): a change of background load during the run cancels out of each pair.

    Raises:
        ValueError: different numbers of repeats, none, or a value that is not a finite number > 0.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"paired figures need as many repeats each; got {len(numerators)} and {len(denominators)}.")
    return median([ratio(a, b) for a, b in zip(numerators, denominators, strict=True)])


def rates(items: float, seconds: Sequence[float]) -> list[float]:
    """Per-repeat rates ``items / seconds`` (items done in each repeat, the repeat's duration).

    Raises:
        ValueError: ``items`` or a duration is not a finite number > 0.
    """
    _check_finite_positive("items", items)
    for s in seconds:
        _check_finite_positive("repeat duration (s)", s)
    return [float(items) / float(s) for s in seconds]


def summarise(items: float, seconds: Sequence[float], unit: str) -> dict:
    """The JSON record of one figure: median rate, the per-repeat rates and durations, the work per repeat."""
    per_repeat = rates(items, seconds)
    return {"median": median(per_repeat), "unit": unit, "per_repeat": per_repeat,
            "seconds_per_repeat": [float(s) for s in seconds], "items_per_repeat": items}
