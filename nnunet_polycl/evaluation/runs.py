"""Results of repeated runs: validate per-case rows, average each run over its cases, summarise over runs.

A *row* is one case and label of one run: ``{method, seed, k, case, label, dice, hd, hd95}`` (extra keys are
ignored; a metric may be None when undefined, see ``nnunet_polycl.metrics``). A *run* is one ``(method, seed, k)``;
``k`` is the number of labelled training cases (None for "all"). ``summary_rows(summary, method=..., seed=...,
k=...)`` turns a ``polycl_evaluate`` summary into rows.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from nnunet_polycl.evaluation.statistics import defined, describe

REPORT_METRICS = ("dice", "hd", "hd95")
ROW_KEYS = ("method", "seed", "k", "case", "label")


def validate_rows(rows: Sequence[dict], metrics: Iterable[str] = REPORT_METRICS) -> None:
    """Raise ValueError when ``rows`` is empty or a row lacks one of the required keys."""
    if not rows:
        raise ValueError("no result rows given: evaluate at least one run first")
    required = (*ROW_KEYS, *metrics)
    for i, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"result row {i} lacks {missing} (required keys: {list(required)}): {row}")


def k_sort_key(k) -> tuple:
    """Numbers first (ascending), then anything else (None = all labelled cases) by its text."""
    return (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k))


def ordered_methods(rows: Sequence[dict], baseline: str) -> list[str]:
    """The baseline first, then the other methods in order of first appearance."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return [baseline] + [m for m in methods if m != baseline] if baseline in methods else methods


def run_means(rows: Sequence[dict], metrics: Iterable[str] = REPORT_METRICS) -> list[dict]:
    """One entry per run and label: ``{method, seed, k, label, n_cases, <metric>: mean over cases or None,
    n_<metric>: number of cases where it is defined}``."""
    metrics = tuple(metrics)
    validate_rows(rows, metrics)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["seed"], row["k"], row["label"])].append(row)
    entries = []
    for (method, seed, k, label), members in groups.items():
        entry = dict(method=method, seed=seed, k=k, label=label, n_cases=len(members))
        for m in metrics:
            values = defined(r[m] for r in members)
            entry[m] = sum(values) / len(values) if values else None
            entry[f"n_{m}"] = len(values)
        entries.append(entry)
    return entries


def over_runs(entries: Iterable[dict], metric: str) -> dict:
    """``{n, mean, std, median, min, max}`` over runs of the per-run means of ``metric`` (runs without one are
    left out; ``n`` counts the runs used; std is the sample standard deviation, None below two runs)."""
    return describe(e[metric] for e in entries)
