"""PolyCL's example selection: a positive and a negative slice for every anchor slice, redrawn every epoch.

Strategies (Moseley & Imran, ISBI 2024, Sec. 2.1; M from the journal extension, arXiv 2505.19208):

- ``S`` (scan-based, needs no labels): positive = another slice of the anchor's scan, negative = a slice of another scan.
- ``O`` (organ-based): positive = another slice with the anchor's organ status (any scan), negative = a slice with the
  opposite status (any scan).
- ``M`` (mixed): positive = another slice of the same scan with the same status, negative = a slice of another scan
  with the opposite status. Fallbacks when an anchor has no such candidate, tried in order and counted in
  ``fallbacks``: positive -> same status in any scan (``positive_same_status_any_scan``) -> any other slice of the
  same scan (``positive_same_scan_any_status``); negative -> opposite status in the same scan
  (``negative_opposite_status_same_scan``; M requires both statuses, so this always exists).

Every strategy: when the only candidate for a positive is the anchor itself (a scan or status group of one slice),
the anchor is its own positive, counted as ``positive_is_anchor``. ``fallbacks`` lists only kinds that occurred.

Candidates are drawn uniformly over slices, vectorised with a sort per grouping key and a table of each key's first
sorted position, so sampling is O(N log N) per epoch (the sorts; the rest is O(N)) and cannot loop. Anchors are a seeded permutation of all slices (each exactly once);
``triplets(epoch)`` is deterministic given ``(seed, epoch)`` and differs between epochs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.slice_index import SliceIndex


class _Groups:
    """Slices sorted by a small non-negative integer key: uniform draws from key ranges, optionally excluding a
    sub-range.

    ``starts[k]`` is the first sorted position of key ``k`` (one ``searchsorted`` over the key values, not over the
    N queries): a span is then two table lookups per row. Binary searches of N queries in random order would cost
    O(N log N) cache misses, which dominates an epoch from about 10^6 slices on.
    """

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]
        self.position = np.empty(len(keys), dtype=np.int64)
        self.position[self.order] = np.arange(len(keys))
        self.max_key = int(self.sorted_keys[-1]) + 1 if len(keys) else 0
        self.starts = np.searchsorted(self.sorted_keys, np.arange(self.max_key + 1), "left")

    def span(self, lo_key: np.ndarray, hi_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``[lo, hi)`` in sorted order of the slices with ``lo_key <= key < hi_key``."""
        return (self.starts[np.clip(lo_key, 0, self.max_key)], self.starts[np.clip(hi_key, 0, self.max_key)])

    def draw(self, rng: np.random.Generator, span: tuple[np.ndarray, np.ndarray],
             excluded: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One uniform slice per row from ``span`` minus ``excluded`` (a sub-span); returns (rows, drawn)."""
        (lo, hi), (ex_lo, ex_hi) = span, excluded
        available = (hi - lo) - (ex_hi - ex_lo)
        drawn = available > 0
        offset = rng.integers(0, np.maximum(available, 1))
        position = lo + offset
        position = np.where(position >= ex_lo, position + (ex_hi - ex_lo), position)
        return self.order[np.minimum(position, len(self.order) - 1)], drawn

    def draw_other_than_self(self, rng: np.random.Generator, rows: np.ndarray,
                             lo_key: np.ndarray, hi_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A slice with a key in ``[lo_key, hi_key)`` other than ``rows`` itself (whose key must be in the range)."""
        own = self.position[rows]
        return self.draw(rng, self.span(lo_key, hi_key), (own, own + 1))


class TripletSampler(ABC):
    """Draws (anchor, positive, negative) row indices into a :class:`SliceIndex`, anew for every epoch.

    Raises:
        PolyCLUserError: the index cannot serve this strategy (too few scans, a missing organ status, ...).
    """

    name: str = ""

    def __init__(self, index: SliceIndex, seed: int = 0):
        if len(index) == 0:
            raise PolyCLUserError("The slice index is empty: there are no slices to pre-train on.")
        self.index = index
        self.seed = int(seed)
        self.fallbacks: dict[str, int] = {}
        self._validate()

    def triplets(self, epoch: int) -> np.ndarray:
        """int64 [N, 3]: (anchor, positive, negative); anchors are a permutation of all N rows."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        anchors = rng.permutation(len(self.index)).astype(np.int64)
        self.fallbacks = {}
        positives, negatives = self._draw(rng, anchors)
        return np.stack([anchors, positives, negatives], axis=1).astype(np.int64)

    @abstractmethod
    def _validate(self) -> None:
        """Raise PolyCLUserError when the index cannot serve this strategy."""

    @abstractmethod
    def _draw(self, rng: np.random.Generator, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative rows for ``anchors``."""

    def _count(self, kind: str, mask: np.ndarray) -> None:
        count = int(np.count_nonzero(mask))
        if count:
            self.fallbacks[kind] = self.fallbacks.get(kind, 0) + count

    def _positive_or_self(self, anchors: np.ndarray, rows: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        self._count("positive_is_anchor", ~drawn)
        return np.where(drawn, rows, anchors)

    def _require_scans(self) -> None:
        n_scans = len(np.unique(self.index.scan))
        if n_scans < 2:
            raise PolyCLUserError(
                f"Strategy {self.name} needs slices of at least 2 scans (negatives come from another scan); the index "
                f"has {n_scans}. Pre-train on more cases (e.g. -f all), or use strategy O."
            )

    def _require_organ_status(self) -> None:
        idx = self.index
        if not idx.organ_known.all():
            raise PolyCLUserError(
                f"Strategy {self.name} needs to know for every slice whether it contains the organ, but "
                f"{np.count_nonzero(~idx.organ_known)} slices of cases {idx.unknown_cases()[:5]} are unannotated "
                f"(ignore label). Use strategy S, which needs no labels, or annotate these cases."
            )
        with_organ = int(np.count_nonzero(idx.organ))
        if with_organ == 0 or with_organ == len(idx):
            which = "no slice contains" if with_organ == 0 else "every slice contains"
            raise PolyCLUserError(
                f"Strategy {self.name} needs slices with and without the organ, but {which} the target label(s) "
                f"({len(idx)} slices). Check the target label, widen the slice fraction, or use strategy S, "
                f"which needs no labels."
            )


class ScanSampler(TripletSampler):
    """PolyCL-S: positive from the anchor's scan, negative from another scan."""

    name = "S"

    def _validate(self) -> None:
        self._require_scans()

    def _draw(self, rng, anchors):
        scan = self.index.scan.astype(np.int64)
        groups = _Groups(scan)
        s = scan[anchors]
        positives, drawn = groups.draw_other_than_self(rng, anchors, s, s + 1)
        negatives, _ = groups.draw(rng, groups.span(np.zeros_like(s), np.full_like(s, scan.max() + 1)),
                                   groups.span(s, s + 1))
        return self._positive_or_self(anchors, positives, drawn), negatives


class OrganSampler(TripletSampler):
    """PolyCL-O: positive with the anchor's organ status, negative with the opposite one, from any scan."""

    name = "O"

    def _validate(self) -> None:
        self._require_organ_status()

    def _draw(self, rng, anchors):
        status = self.index.organ.astype(np.int64)
        groups = _Groups(status)
        st = status[anchors]
        positives, drawn = groups.draw_other_than_self(rng, anchors, st, st + 1)
        opposite = 1 - st
        nothing = np.zeros_like(st)
        negatives, _ = groups.draw(rng, groups.span(opposite, opposite + 1), (nothing, nothing))
        return self._positive_or_self(anchors, positives, drawn), negatives


class MixedSampler(TripletSampler):
    """PolyCL-M: positive from the same scan with the same status, negative from another scan with the opposite one."""

    name = "M"

    def _validate(self) -> None:
        self._require_scans()
        self._require_organ_status()

    def _draw(self, rng, anchors):
        n_scans = len(self.index.case_ids)
        scan, status = self.index.scan.astype(np.int64), self.index.organ.astype(np.int64)
        by_status = _Groups(status * n_scans + scan)  # status groups, scans contiguous inside
        by_scan = _Groups(scan * 2 + status)  # scan groups, statuses contiguous inside
        s, st = scan[anchors], status[anchors]
        positives = self._positives(rng, anchors, by_status, by_scan, s, st)
        opposite = (1 - st) * n_scans
        same_scan_opposite = by_status.span(opposite + s, opposite + s + 1)
        negatives, drawn = by_status.draw(rng, by_status.span(opposite, opposite + n_scans), same_scan_opposite)
        missing = ~drawn
        self._count("negative_opposite_status_same_scan", missing)
        if missing.any():
            empty = (same_scan_opposite[1][missing],) * 2
            fallback, _ = by_status.draw(rng, (same_scan_opposite[0][missing], same_scan_opposite[1][missing]), empty)
            negatives[missing] = fallback
        return positives, negatives

    def _positives(self, rng, anchors, by_status, by_scan, s, st) -> np.ndarray:
        n_scans = len(self.index.case_ids)
        key = st * n_scans + s
        positives, drawn = by_status.draw_other_than_self(rng, anchors, key, key + 1)
        for kind, groups, lo, hi in (
                ("positive_same_status_any_scan", by_status, st * n_scans, (st + 1) * n_scans),
                ("positive_same_scan_any_status", by_scan, s * 2, s * 2 + 2)):
            missing = ~drawn
            if not missing.any():
                break
            rows, ok = groups.draw_other_than_self(rng, anchors[missing], lo[missing], hi[missing])
            self._count(kind, ok)
            positives[missing] = rows
            drawn[missing] = ok
        return self._positive_or_self(anchors, positives, drawn)


SAMPLERS: dict[str, type[TripletSampler]] = {"S": ScanSampler, "O": OrganSampler, "M": MixedSampler}


def make_sampler(strategy: str, index: SliceIndex, seed: int = 0) -> TripletSampler:
    """The sampler of a strategy name (``S``, ``O``, ``M``).

    Raises:
        PolyCLUserError: unknown strategy (the message lists the valid ones) or an index it cannot use.
    """
    if strategy not in SAMPLERS:
        raise PolyCLUserError(
            f"Unknown triplet strategy {strategy!r}; valid: {', '.join(SAMPLERS)} (SimCLR uses augmentations, "
            f"not triplets)."
        )
    return SAMPLERS[strategy](index, seed)
