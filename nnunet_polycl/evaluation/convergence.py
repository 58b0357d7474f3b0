"""Did the baseline reach the end of its training? The label every comparison carries.

A comparison of two fine-tunings measures end points only when the baseline has stopped improving; before that it
measures how fast each gets there. The rule, on the baseline's mean Dice over seeds at the training budgets 0.5 and 1
(the last doubling of its schedule; one pair per seed):

- "end of training": the mean changed by less than :data:`TOLERANCE` between the two, and the 95% interval of that
  paired change includes 0;
- "past its best: ...": the mean fell by :data:`TOLERANCE` or more (the baseline over-fits: longer training made it
  worse, so its end point is not its best point);
- "still training: this compares speed, not end points": otherwise;
- not checked: without the two budgets (run ``--budgets 0.5 1`` or more), or when the change is small but one seed
  gives no interval.

The label is the rule's; a "still training" baseline whose mean was higher at an earlier budget (0.25, say) than at
the end by :data:`TOLERANCE` or more gets that fact beside its numbers (``earlier_peak``): it is not climbing but
wandering, which the last doubling alone cannot tell.
"""
from __future__ import annotations

from nnunet_polycl.evaluation.statistics import paired_comparison

TOLERANCE = 0.01
HALF, FULL = 0.5, 1.0
END = "end of training"
STILL = "still training: this compares speed, not end points"
PAST_BEST = ("past its best: the baseline lost Dice over the last doubling (over-fitting), so this compares end "
             "points after the baseline's best point")
NOT_CHECKED = "end of training not checked (run with --budgets 0.5 1 or more)"
ONE_SEED = "end of training not checked (one seed gives no interval of the change: run 2 or more seeds)"
RULE = (f"end of training = the baseline's mean Dice changed by less than {TOLERANCE} between the budgets {HALF:g} "
        f"and {FULL:g} of its schedule and the 95% interval of that paired change (over seeds) includes 0")


def end_of_training(half: dict[int, float], full: dict[int, float], interval: str = "t",
                    earlier: dict[float, dict[int, float]] | None = None) -> dict:
    """The label of a baseline whose runs (seed -> mean Dice) scored ``half`` at budget 0.5 and ``full`` at budget 1
    (and ``earlier[b]`` at budgets b < 0.5, if given).

    Returns ``{status, text, change}``: ``status`` is ``end``, ``still``, ``past_best`` or ``not_checked``;
    ``change`` the paired difference full - half (:func:`~nnunet_polycl.evaluation.statistics.paired_comparison`)
    with the two means, or None when nothing could be paired. A ``still`` result also has ``earlier_peak``
    (``{budget, mean}``) when the same seeds' mean at an earlier budget beat the end by :data:`TOLERANCE` or more.
    """
    seeds = sorted(set(half) & set(full))
    if not seeds:
        return {"status": "not_checked", "text": NOT_CHECKED, "change": None}
    change = paired_comparison([full[s] for s in seeds], [half[s] for s in seeds], interval)
    change.update(mean_half=sum(half[s] for s in seeds) / len(seeds),
                  mean_full=sum(full[s] for s in seeds) / len(seeds))
    small = abs(change["difference"]) < TOLERANCE
    if small and change["low"] is None:
        return {"status": "not_checked", "text": ONE_SEED, "change": change}
    if small and change["low"] <= 0 <= change["high"]:
        return {"status": "end", "text": END, "change": change}
    if change["difference"] <= -TOLERANCE:
        return {"status": "past_best", "text": PAST_BEST, "change": change}
    result = {"status": "still", "text": STILL, "change": change}
    peak = _earlier_peak(earlier or {}, seeds, change["mean_full"])
    return {**result, "earlier_peak": peak} if peak else result


def _earlier_peak(earlier: dict[float, dict[int, float]], seeds: list[int], mean_full: float) -> dict | None:
    """The earlier budget where ``seeds``' mean Dice was highest, if it beat ``mean_full`` by TOLERANCE or more."""
    means = {b: sum(at[s] for s in seeds) / len(seeds) for b, at in earlier.items() if all(s in at for s in seeds)}
    if not means:
        return None
    budget = max(means, key=means.get)
    return {"budget": budget, "mean": means[budget]} if means[budget] - mean_full >= TOLERANCE else None


def describe_change(result: dict) -> str:
    """The numbers behind a label, e.g. "baseline Dice 0.741 at 0.5 -> 0.745 at 1: change +0.004 [95% t-interval
    -0.010, +0.018], 5 seeds" (empty when not checked for want of budgets)."""
    change = result["change"]
    if change is None:
        return ""
    spread = "" if change["low"] is None else f" [{change['interval']} {change['low']:+.3f}, {change['high']:+.3f}]"
    text = (f"baseline Dice {change['mean_half']:.3f} at {HALF:g} -> {change['mean_full']:.3f} at {FULL:g}: change "
            f"{change['difference']:+.3f}{spread}, {change['n_pairs']} seed{'s' if change['n_pairs'] != 1 else ''}")
    peak = result.get("earlier_peak")
    if peak:
        text += (f"; its mean was higher at {peak['budget']:g} of the schedule ({peak['mean']:.3f}) than at the end: "
                 f"not climbing but wandering")
    return text
