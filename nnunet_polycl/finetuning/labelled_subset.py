"""Reduced-label fine-tuning (paper Fig. 4): train on k of the fold's labelled training cases.

The choice is reproducible, nested across k and, between the seeds of an experiment, distinct at each k:

1. The fold's training case ids are sorted; seed ``s`` ranks them by ``numpy.random.RandomState(s).permutation``.
2. Seed ``s``'s order is built one case at a time: the next case is the first one of its ranking that is not chosen
   yet and whose addition gives a set of k cases that no seed ``0 .. s-1`` has as its first k (those seeds' orders are
   built the same way, first). When every remaining case would repeat such a set, the first remaining one is taken.
3. The k labelled cases of seed ``s`` are the first k of its order, so k=3 includes k=2 (nested).

So seeds ``0 .. s`` draw distinct subsets at every k while ``s < n - k + 1`` (n training cases); e.g. with 16 cases,
five seeds at k = 1 label five different scans. Distinctness is sought among seeds below :data:`DISTINCT_SEEDS`; a
larger seed (such as the default :data:`SUBSET_SEED`) uses its ranking alone. The validation cases stay nnU-Net's.
The choice is written to ``<results folder>/fold_<f>/polycl_labelled_cases.json``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from nnunet_polycl.paths import Fold, PolyCLUserError

SUBSET_SEED = 12345
SUBSET_FILE = "polycl_labelled_cases.json"
DISTINCT_SEEDS = 64
SELECTION = ("seed s ranks the sorted training case ids by numpy.random.RandomState(s).permutation; its order takes "
             "the first ranked case whose addition gives a k-set no seed below s has (seeds < 64); first k of it")


def _order(n: int, seed: int, earlier: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """Seed's order of the n cases: its ranking, skipping a case that would repeat an earlier order's k-prefix set."""
    ranking = [int(i) for i in np.random.RandomState(seed).permutation(n)]
    chosen: list[int] = []
    chosen_set: set[int] = set()
    shared = [0] * len(earlier)  # |earlier order's first k + 1 cases & chosen|, updated as both grow
    position = [{c: i for i, c in enumerate(other)} for other in earlier]
    for k in range(n):
        for j, other in enumerate(earlier):
            shared[j] += other[k] in chosen_set
        # an earlier order whose first k+1 cases are chosen + one more forbids that one
        forbidden = {next(c for c in other[:k + 1] if c not in chosen_set)
                     for j, other in enumerate(earlier) if shared[j] == k}
        remaining = [c for c in ranking if c not in chosen_set]
        pick = next((c for c in remaining if c not in forbidden), remaining[0])
        chosen.append(pick)
        chosen_set.add(pick)
        for j in range(len(earlier)):
            shared[j] += position[j][pick] <= k
    return tuple(chosen)


@lru_cache(maxsize=32)
def _orders(n: int, seeds: int) -> tuple[tuple[int, ...], ...]:
    """The orders of seeds ``0 .. seeds-1``, each distinct from those before it."""
    orders: tuple[tuple[int, ...], ...] = ()
    for seed in range(seeds):
        orders += (_order(n, seed, orders),)
    return orders


def case_order(n: int, seed: int) -> tuple[int, ...]:
    """Seed's order of n sorted cases (see the module docstring); its first k are the labelled cases."""
    if 0 <= seed < DISTINCT_SEEDS:
        return _orders(n, seed + 1)[seed]
    return tuple(int(i) for i in np.random.RandomState(seed).permutation(n))


def choose_labelled_cases(training_cases: list[str], k: int, fold: Fold, seed: int = SUBSET_SEED) -> list[str]:
    """The k cases (sorted) of ``training_cases`` to fine-tune on: the first k of the seed's order.

    Raises:
        ValueError: k < 1.
        PolyCLUserError: k is larger than the number of training cases of the fold.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    cases = sorted(training_cases)
    if k > len(cases):
        raise PolyCLUserError(
            f"Fine-tuning on k={k} labelled cases was requested (trainer suffix _k{k}), but fold {fold} has only "
            f"{len(cases)} training cases. Use a suffix _k1 ... _k{len(cases)}, or drop _k{k} to use all of them."
        )
    return sorted(cases[i] for i in case_order(len(cases), seed)[:k])


def subset_record(training_cases: list[str], chosen: list[str], k: int, fold: Fold, seed: int = SUBSET_SEED
                  ) -> dict[str, Any]:
    """What is written to :data:`SUBSET_FILE`."""
    return {"k": k, "fold": fold, "seed": seed, "selection": SELECTION,
            "num_training_cases_in_fold": len(training_cases), "cases": chosen,
            "training_cases_in_fold": sorted(training_cases)}
