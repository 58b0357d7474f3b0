"""Table 1 of the paper from repeated runs: mean ± std per method and paired p-values against the baseline.

Aggregation: each run (method, seed, k) is first averaged over its cases (defined values only), then mean ± sample
std (ddof=1) are taken over the runs of a method. p-values: two-sided Wilcoxon signed-rank test and paired t-test
(scipy) of a method against the baseline at the same k and label, on pairs that share

- ``pair_by="case"`` (default): the seed and the case, one pair per (seed, case) where both values are defined.
  Many pairs even with few runs; pairs of the same case under different seeds are not independent, so p-values are
  optimistic when the cases are few and the seeds many.
- ``pair_by="run"``: the seed, one pair per run (the per-run means). Independent pairs; needs >= 3 seeds.

Fewer than 3 pairs, or a degenerate test, give "n/a" (None in JSON) and a note saying why.
"""
from __future__ import annotations

import csv
import io
from os.path import join
from typing import Sequence

from nnunet_polycl.evaluation.files import refuse_overwrite, write_json_atomic, write_text_atomic
from nnunet_polycl.evaluation.runs import REPORT_METRICS, k_sort_key, ordered_methods, over_runs, run_means
from nnunet_polycl.evaluation.statistics import paired_tests

AGGREGATION = ("Each run (method, seed, k) is first averaged over its cases (defined values only); mean and sample "
               "std (ddof=1) are then taken over the runs of the method.")
PAIRINGS = {
    "case": "one pair per (seed, case) where both values are defined; pairs of one case under several seeds are "
            "not independent",
    "run": "one pair per seed: the per-run means",
}
METRIC_TITLES = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)"}


def _paired_values(rows: Sequence[dict], runs: list[dict], method: str, baseline: str, k, label: str, metric: str,
                   pair_by: str) -> tuple[list[float], list[float]]:
    source, key = (rows, ("seed", "case")) if pair_by == "case" else (runs, ("seed",))
    usable = [r for r in source if r["k"] == k and r["label"] == label and r[metric] is not None]
    ours = {tuple(r[x] for x in key): float(r[metric]) for r in usable if r["method"] == method}
    theirs = {tuple(r[x] for x in key): float(r[metric]) for r in usable if r["method"] == baseline}
    common = sorted(set(ours) & set(theirs), key=str)
    return [ours[c] for c in common], [theirs[c] for c in common]


def _table_entry(rows, runs, method, baseline, k, label, pair_by) -> dict:
    group = [e for e in runs if e["method"] == method and e["k"] == k and e["label"] == label]
    entry = dict(method=method, k=k, label=label, n_runs=len(group), metrics={})
    for metric in REPORT_METRICS:
        stats = over_runs(group, metric)
        result = dict(mean=stats["mean"], std=stats["std"], n_runs=stats["n"], vs_baseline=None)
        if method != baseline:
            result["vs_baseline"] = paired_tests(*_paired_values(rows, runs, method, baseline, k, label, metric,
                                                                 pair_by))
        entry["metrics"][metric] = result
    return entry


def method_table(rows: Sequence[dict], baseline: str = "baseline", pair_by: str = "case") -> dict:
    """Table 1 as a dict: one entry per (method, k, label) with, per metric, ``mean``, ``std``, ``n_runs`` and
    ``vs_baseline`` (``{n_pairs, wilcoxon_p, ttest_p, note}``; None for the baseline); plus every run's means.

    Raises:
        ValueError: empty or incomplete rows, an unknown ``pair_by``, or no row of the ``baseline`` method.
    """
    if pair_by not in PAIRINGS:
        raise ValueError(f"pair_by must be one of {list(PAIRINGS)}, got {pair_by!r}")
    runs = run_means(rows)
    methods = ordered_methods(rows, baseline)
    if baseline not in methods:
        raise ValueError(f"baseline method {baseline!r} has no results; methods present: {methods}")
    ks = sorted({r["k"] for r in rows}, key=k_sort_key)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    entries = [_table_entry(rows, runs, m, baseline, k, label, pair_by)
               for k in ks for label in labels for m in methods
               if any(e["method"] == m and e["k"] == k and e["label"] == label for e in runs)]
    return dict(baseline=baseline, pair_by=pair_by, pairing=PAIRINGS[pair_by], aggregation=AGGREGATION,
                rows=entries, runs=runs)


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_p(test: dict | None, key: str) -> str:
    if test is None:
        return "—"
    p = test[key]
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def table_markdown(table: dict) -> str:
    """Markdown rendering of ``method_table``: mean ± std over runs, then Wilcoxon and t-test p-values."""
    head = ["Method", "k", "Label", "Runs"]
    for metric in REPORT_METRICS:
        head += [METRIC_TITLES[metric], "p Wilcoxon", "p t-test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = set()
    for e in table["rows"]:
        cells = [e["method"], "all" if e["k"] is None else str(e["k"]), e["label"], str(e["n_runs"])]
        for metric in REPORT_METRICS:
            m, digits = e["metrics"][metric], 4 if metric == "dice" else 2
            spread = "" if m["std"] is None else f" ± {m['std']:.{digits}f}"
            cells += [_fmt(m["mean"], digits) + spread, _fmt_p(m["vs_baseline"], "wilcoxon_p"),
                      _fmt_p(m["vs_baseline"], "ttest_p")]
            if m["vs_baseline"] and m["vs_baseline"]["note"]:
                notes.add(m["vs_baseline"]["note"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{table['aggregation']} Two-sided p-values against {table['baseline']!r} (Wilcoxon signed-rank, "
                  f"paired t-test), {table['pairing']}."]
    lines += [f"- {note}" for note in sorted(notes)]
    return "\n".join(lines) + "\n"


def table_csv(table: dict) -> str:
    """CSV rendering of ``method_table``: one line per (method, k, label); empty cells for undefined values."""
    columns = ["method", "k", "label", "n_runs"]
    for metric in REPORT_METRICS:
        columns += [f"{metric}_{s}" for s in ("mean", "std", "n_runs", "n_pairs", "p_wilcoxon", "p_ttest")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for e in table["rows"]:
        line = {key: e[key] for key in ("method", "k", "label", "n_runs")}
        for metric in REPORT_METRICS:
            m, test = e["metrics"][metric], e["metrics"][metric]["vs_baseline"] or {}
            line.update({f"{metric}_mean": m["mean"], f"{metric}_std": m["std"], f"{metric}_n_runs": m["n_runs"],
                         f"{metric}_n_pairs": test.get("n_pairs"), f"{metric}_p_wilcoxon": test.get("wilcoxon_p"),
                         f"{metric}_p_ttest": test.get("ttest_p")})
        writer.writerow(line)
    return buffer.getvalue()


def write_method_table(rows: Sequence[dict], output_folder: str, baseline: str = "baseline", pair_by: str = "case",
                       name: str = "table1", overwrite: bool = False) -> dict:
    """Write ``<name>.md``, ``<name>.csv`` and ``<name>.json`` (every number) atomically; returns the table with
    the written paths under ``files``. Refuses to replace existing files unless ``overwrite``."""
    paths = {ext: join(output_folder, f"{name}.{ext}") for ext in ("md", "csv", "json")}
    refuse_overwrite(paths.values(), overwrite)
    table = method_table(rows, baseline, pair_by)
    write_text_atomic(paths["md"], table_markdown(table))
    write_text_atomic(paths["csv"], table_csv(table))
    write_json_atomic(paths["json"], table)
    return {**table, "files": paths}
