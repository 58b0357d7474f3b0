"""Triplet samplers: the strategy's rule holds for every anchor of a real index; fallbacks, determinism, errors."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_polycl.network import load_plans_context
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.sampling import SAMPLERS, make_sampler
from nnunet_polycl.slice_index import SliceIndex, build_slice_index
from nnunet_polycl.splits import training_cases


@pytest.fixture
def demo_index(preprocessed_demo, demo_in_process) -> SliceIndex:
    """Slice index of the training cases of fold 0 of the preprocessed demo dataset."""
    ctx = load_plans_context(preprocessed_demo.name)
    index = build_slice_index(ctx, training_cases(ctx, 0)[0])
    assert len(index.case_ids) >= 4 and index.organ.any() and not index.organ.all()
    return index


def _index(scans: list[list[bool]]) -> SliceIndex:
    """A SliceIndex from per-scan lists of organ status."""
    scan = np.concatenate([np.full(len(s), i) for i, s in enumerate(scans)])
    z = np.concatenate([np.arange(len(s)) for s in scans])
    return SliceIndex(tuple(f"case_{i}" for i in range(len(scans))), scan, z, np.concatenate(scans).astype(bool))


def _check_anchors(index: SliceIndex, triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert triplets.dtype == np.int64 and triplets.shape == (len(index), 3)
    anchors, positives, negatives = triplets.T
    assert np.array_equal(np.sort(anchors), np.arange(len(index)))  # every slice is an anchor exactly once
    return anchors, positives, negatives


def test_scan_based_rule_holds_for_every_anchor(demo_index):
    a, p, n = _check_anchors(demo_index, make_sampler("S", demo_index, seed=3).triplets(0))
    assert not np.array_equal(a, np.arange(len(demo_index)))  # anchors in a shuffled order
    scan = demo_index.scan
    assert (scan[p] == scan[a]).all() and (p != a).all()
    assert (scan[n] != scan[a]).all()


def test_organ_based_rule_holds_for_every_anchor(demo_index):
    sampler = make_sampler("O", demo_index, seed=3)
    a, p, n = _check_anchors(demo_index, sampler.triplets(0))
    organ = demo_index.organ
    assert (organ[p] == organ[a]).all() and (p != a).all()
    assert (organ[n] != organ[a]).all()
    assert len(np.unique(demo_index.scan[p[organ[a]]])) > 1  # positives come from across the scans
    assert sampler.fallbacks == {}


def test_mixed_rule_holds_wherever_possible_and_every_fallback_is_counted(demo_index):
    sampler = make_sampler("M", demo_index, seed=3)
    a, p, n = _check_anchors(demo_index, sampler.triplets(0))
    scan, organ = demo_index.scan, demo_index.organ
    # Candidates counted one anchor at a time, independently of the sampler's vectorised bookkeeping.
    has_positive = np.array([((scan == scan[i]) & (organ == organ[i])).sum() > 1 for i in a])
    has_negative = np.array([((scan != scan[i]) & (organ != organ[i])).any() for i in a])
    assert has_positive.any() and has_negative.all()
    assert ((scan[p] == scan[a]) & (organ[p] == organ[a]) & (p != a))[has_positive].all()
    assert ((scan[n] != scan[a]) & (organ[n] != organ[a])).all()
    assert sum(sampler.fallbacks.values()) == np.count_nonzero(~has_positive)
    same_status_elsewhere = (organ[p] == organ[a]) & (scan[p] != scan[a])
    assert same_status_elsewhere[~has_positive].sum() == sampler.fallbacks.get("positive_same_status_any_scan", 0)


@pytest.mark.parametrize("scans, expected", [
    ([[True, False], [True, False]], {"positive_same_status_any_scan": 4}),
    ([[True, False, False], [False, False]], {"positive_same_scan_any_status": 1,
                                              "negative_opposite_status_same_scan": 2}),
    ([[True], [False]], {"positive_is_anchor": 2}),
])
def test_mixed_fallbacks_on_constructed_edge_cases(scans, expected):
    index = _index(scans)
    sampler = make_sampler("M", index)
    a, p, n = _check_anchors(index, sampler.triplets(5))
    assert sampler.fallbacks == expected
    assert (index.organ[n] != index.organ[a]).all()  # the negative always has the opposite status
    if "positive_same_status_any_scan" in expected:
        assert ((index.organ[p] == index.organ[a]) & (index.scan[p] != index.scan[a])).all()
    if "positive_same_scan_any_status" in expected:
        lone = np.flatnonzero(index.organ)[0]  # the only slice with the organ
        assert index.scan[p[a == lone]] == index.scan[lone] and p[a == lone] != lone


def test_single_slice_groups_use_the_anchor_itself_and_say_so():
    index = _index([[True], [False, True, False]])
    sampler = make_sampler("S", index)
    a, p, _ = sampler.triplets(0).T
    assert sampler.fallbacks == {"positive_is_anchor": 1} and p[a == 0] == 0
    index = _index([[True, False, False], [False, False]])
    sampler = make_sampler("O", index)
    a, p, _ = sampler.triplets(0).T
    assert sampler.fallbacks == {"positive_is_anchor": 1} and p[a == 0] == 0


@pytest.mark.parametrize("strategy", list(SAMPLERS))
def test_deterministic_per_seed_and_epoch_and_different_across_epochs(demo_index, strategy):
    first = make_sampler(strategy, demo_index, seed=11)
    again = make_sampler(strategy, demo_index, seed=11)
    assert np.array_equal(first.triplets(4), again.triplets(4))
    assert np.array_equal(first.triplets(4), first.triplets(4))
    assert not np.array_equal(first.triplets(4)[:, 1:], first.triplets(5)[:, 1:])
    assert not np.array_equal(first.triplets(4), make_sampler(strategy, demo_index, seed=12).triplets(4))


def test_candidates_are_drawn_uniformly():
    index = _index([[True, True, False, False, True], [False, True, False]])
    sampler = make_sampler("S", index)
    draws = np.stack([sampler.triplets(epoch) for epoch in range(3000)])
    positives_of_0 = draws[..., 1][draws[..., 0] == 0]
    negatives_of_0 = draws[..., 2][draws[..., 0] == 0]
    assert np.allclose(np.bincount(positives_of_0, minlength=8)[1:5] / 3000, 1 / 4, atol=0.03)
    assert np.allclose(np.bincount(negatives_of_0, minlength=8)[5:] / 3000, 1 / 3, atol=0.03)


def test_strategies_refuse_indexes_they_cannot_use():
    with pytest.raises(PolyCLUserError, match="Strategy S needs slices of at least 2 scans.*has 1"):
        make_sampler("S", _index([[True, False, True]]))
    with pytest.raises(PolyCLUserError, match="Strategy M needs slices of at least 2 scans"):
        make_sampler("M", _index([[True, False, True]]))
    with pytest.raises(PolyCLUserError, match="no slice contains the target.*use strategy S"):
        make_sampler("O", _index([[False, False], [False]]))
    with pytest.raises(PolyCLUserError, match="every slice contains the target.*use strategy S"):
        make_sampler("M", _index([[True, True], [True]]))
    with pytest.raises(PolyCLUserError, match="slice index is empty"):
        make_sampler("S", _index([[True], [False]]).subset(np.zeros(2, dtype=bool)))
    with pytest.raises(PolyCLUserError, match=r"Unknown triplet strategy 'X'; valid: S, O, M"):
        make_sampler("X", _index([[True], [False]]))
