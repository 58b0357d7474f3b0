"""Reduced-label fine-tuning (paper Fig. 4): train on k of the fold's labelled training cases.

The choice is reproducible and nested: the fold's training case ids are sorted, permuted with
``numpy.random.RandomState(SUBSET_SEED)`` and the first k are taken, so the k=3 cases include the k=2 cases. The
validation cases stay nnU-Net's. The choice is written to ``<results folder>/fold_<f>/polycl_labelled_cases.json``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nnunet_polycl.paths import Fold, PolyCLUserError

SUBSET_SEED = 12345
SUBSET_FILE = "polycl_labelled_cases.json"


def choose_labelled_cases(training_cases: list[str], k: int, fold: Fold, seed: int = SUBSET_SEED) -> list[str]:
    """The k cases (sorted) of ``training_cases`` to fine-tune on: first k of a seeded permutation of the sorted ids.

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
    order = np.random.RandomState(seed).permutation(len(cases))
    return sorted(cases[i] for i in order[:k])


def subset_record(training_cases: list[str], chosen: list[str], k: int, fold: Fold, seed: int = SUBSET_SEED
                  ) -> dict[str, Any]:
    """What is written to :data:`SUBSET_FILE`."""
    return {"k": k, "fold": fold, "seed": seed,
            "selection": "first k of numpy.random.RandomState(seed).permutation of the sorted training case ids",
            "num_training_cases_in_fold": len(training_cases), "cases": chosen,
            "training_cases_in_fold": sorted(training_cases)}

