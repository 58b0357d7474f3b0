"""Table 1 of the paper from repeated runs: mean ± std over runs, the paired difference to the baseline with its 95%
confidence interval, p-values, and the counts of empty predictions and undefined distances.

Aggregation: each run (method, seed, k) is first averaged over its cases (defined values only); mean and sample std
(ddof=1) are then taken over the runs of a method. Comparisons are paired against the baseline at the same k and
label, with ``pair_by``:

- ``"run"`` (default): one pair per seed, the two runs' means. Runs are the independent units of the design (the
  seed fixes the labelled subset, the pre-training and the fine-tuning randomness), so this is the analysis the
  design carries.
- ``"case"`` (explicit option only): one pair per (seed, case). Cases of one run share its network and are not
  independent: the intervals are too narrow and the p-values too small. Every table made this way says so.

p-values (two-sided Wilcoxon signed-rank and paired t-test, scipy) are computed only from
:data:`~nnunet_polycl.evaluation.statistics.MIN_PAIRS_FOR_TEST` pairs on; below, the table prints "n < 5: no test".
"""
from __future__ import annotations

import csv
import io
from os.path import join
from typing import Sequence

from nnunet_polycl.evaluation.files import refuse_overwrite, write_json_atomic, write_text_atomic
from nnunet_polycl.evaluation.runs import REPORT_METRICS, k_sort_key, ordered_methods, over_runs, run_means
from nnunet_polycl.evaluation.statistics import INTERVALS, check_interval, paired_comparison

AGGREGATION = ("Each run (method, seed, k) is first averaged over its cases (defined values only); mean and sample "
               "std (ddof=1) are then taken over the runs of the method.")
PAIRINGS = {
    "run": "paired by seed: one pair per seed (the two runs' means over their cases)",
    "case": "PER-CASE PAIRING (explicit option): one pair per (seed, case); cases of one run are not independent, so "
            "intervals are too narrow and p-values too small",
}
METRIC_TITLES = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)"}
HIGHER_IS_BETTER = {"dice": True, "hd": False, "hd95": False}
COUNTS = ("n_cases", "n_empty_prediction", "n_empty_reference", "n_both_empty", "n_hd_undefined")


def check_pairing(pair_by: str) -> str:
    """``pair_by`` if it names a pairing of :data:`PAIRINGS`; raises ValueError listing them otherwise."""
    if pair_by not in PAIRINGS:
        raise ValueError(f"pair_by must be one of {list(PAIRINGS)}, got {pair_by!r}")
    return pair_by


def _paired_values(rows: Sequence[dict], runs: list[dict], method: str, baseline: str, k, label: str, metric: str,
                   pair_by: str) -> tuple[list[float], list[float]]:
    source, key = (rows, ("seed", "case")) if pair_by == "case" else (runs, ("seed",))
    usable = [r for r in source if r["k"] == k and r["label"] == label and r[metric] is not None]
    ours = {tuple(r[x] for x in key): float(r[metric]) for r in usable if r["method"] == method}
    theirs = {tuple(r[x] for x in key): float(r[metric]) for r in usable if r["method"] == baseline}
    common = sorted(set(ours) & set(theirs), key=str)
    return [ours[c] for c in common], [theirs[c] for c in common]


def case_counts(rows: Sequence[dict]) -> dict[str, int]:
    """How many cases the rows hold, how many had an empty prediction / reference / both, and how many an undefined
    HD (those are left out of the HD means)."""
    status = [r.get("status", "ok") for r in rows]
    return {"n_cases": len(rows), "n_empty_prediction": status.count("empty_prediction"),
            "n_empty_reference": status.count("empty_reference"), "n_both_empty": status.count("both_empty"),
            "n_hd_undefined": sum(r["hd"] is None for r in rows)}


def _table_entry(rows, runs, method, baseline, k, label, pair_by, interval) -> dict:
    group = [e for e in runs if e["method"] == method and e["k"] == k and e["label"] == label]
    cases = [r for r in rows if r["method"] == method and r["k"] == k and r["label"] == label]
    entry = dict(method=method, k=k, label=label, n_runs=len(group), counts=case_counts(cases), metrics={})
    for metric in REPORT_METRICS:
        stats = over_runs(group, metric)
        result = dict(mean=stats["mean"], std=stats["std"], n_runs=stats["n"], vs_baseline=None)
        if method != baseline:
            x, y = _paired_values(rows, runs, method, baseline, k, label, metric, pair_by)
            result["vs_baseline"] = paired_comparison(x, y, interval)
        entry["metrics"][metric] = result
    return entry


def method_table(rows: Sequence[dict], baseline: str = "baseline", pair_by: str = "run",
                 interval: str = "t") -> dict:
    """Table 1 as a dict: one entry per (method, k, label) with its ``counts`` and, per metric, ``mean``, ``std``,
    ``n_runs`` and ``vs_baseline`` (:func:`~nnunet_polycl.evaluation.statistics.paired_comparison`: difference to the
    baseline with its interval and p-values; None for the baseline itself); plus every run's means.

    Raises:
        ValueError: empty or incomplete rows, an unknown ``pair_by`` or ``interval``, or no row of ``baseline``.
    """
    check_pairing(pair_by)
    check_interval(interval)
    runs = run_means(rows)
    methods = ordered_methods(rows, baseline)
    if baseline not in methods:
        raise ValueError(f"baseline method {baseline!r} has no results; methods present: {methods}")
    ks = sorted({r["k"] for r in rows}, key=k_sort_key)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    entries = [_table_entry(rows, runs, m, baseline, k, label, pair_by, interval)
               for k in ks for label in labels for m in methods
               if any(e["method"] == m and e["k"] == k and e["label"] == label for e in runs)]
    return dict(baseline=baseline, pair_by=pair_by, pairing=PAIRINGS[pair_by], interval=INTERVALS[interval],
                aggregation=AGGREGATION, rows=entries, runs=runs)


def _fmt(value, digits: int, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def _fmt_p(test: dict) -> str:
    if test["wilcoxon_p"] is None and test["ttest_p"] is None:
        return test["note"] or "no test"
    return " / ".join("n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
                      for p in (test["wilcoxon_p"], test["ttest_p"]))


def _difference(test: dict, digits: int) -> str:
    if test["difference"] is None:
        return "n/a"
    interval = "" if test["low"] is None else f" [{_fmt(test['low'], digits, True)}, {_fmt(test['high'], digits, True)}]"
    return f"{_fmt(test['difference'], digits, True)}{interval} (n={test['n_pairs']})"


def table_markdown(table: dict) -> str:
    """Markdown rendering of :func:`method_table`: per metric mean ± std over runs, the difference to the baseline
    with its interval, the p-values (Wilcoxon / t-test), then the case counts."""
    head = ["Method", "k", "Label", "Runs"]
    for metric in REPORT_METRICS:
        title = METRIC_TITLES[metric]
        head += [title, f"Δ{title} vs {table['baseline']} [CI]", "p (W / t)"]
    head += ["empty pred", "HD undefined"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = set()
    for e in table["rows"]:
        cells = [e["method"], "all" if e["k"] is None else str(e["k"]), e["label"], str(e["n_runs"])]
        for metric in REPORT_METRICS:
            m, digits = e["metrics"][metric], 4 if metric == "dice" else 2
            spread = "" if m["std"] is None else f" ± {m['std']:.{digits}f}"
            test = m["vs_baseline"]
            cells += [_fmt(m["mean"], digits) + spread, "—" if test is None else _difference(test, digits),
                      "—" if test is None else _fmt_p(test)]
            if test and test["note"] and test["wilcoxon_p"] is not None:
                notes.add(test["note"])
        c = e["counts"]
        cells += [f"{c['n_empty_prediction']}/{c['n_cases']}", f"{c['n_hd_undefined']}/{c['n_cases']}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{table['aggregation']} Differences: method minus {table['baseline']!r} at the same k, "
                  f"{table['pairing']}; [CI] = {table['interval']} of the mean difference. p: two-sided Wilcoxon "
                  f"signed-rank / paired t-test, computed only with at least 5 pairs. HD and HD95 means leave out the "
                  f"cases where they are undefined (empty prediction or reference), counted in the last columns."]
    lines += [f"- {note}" for note in sorted(notes)]
    return "\n".join(lines) + "\n"


def table_csv(table: dict) -> str:
    """CSV rendering of :func:`method_table`: one line per (method, k, label); empty cells for undefined values."""
    columns = ["method", "baseline", "k", "label", "n_runs", *COUNTS]
    for metric in REPORT_METRICS:
        columns += [f"{metric}_{s}" for s in ("mean", "std", "n_runs", "n_pairs", "diff", "diff_low", "diff_high",
                                              "p_wilcoxon", "p_ttest")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for e in table["rows"]:
        line = {key: e[key] for key in ("method", "k", "label", "n_runs")} | {"baseline": table["baseline"]} | \
            e["counts"]
        for metric in REPORT_METRICS:
            m, test = e["metrics"][metric], e["metrics"][metric]["vs_baseline"] or {}
            line.update({f"{metric}_mean": m["mean"], f"{metric}_std": m["std"], f"{metric}_n_runs": m["n_runs"],
                         f"{metric}_n_pairs": test.get("n_pairs"), f"{metric}_diff": test.get("difference"),
                         f"{metric}_diff_low": test.get("low"), f"{metric}_diff_high": test.get("high"),
                         f"{metric}_p_wilcoxon": test.get("wilcoxon_p"), f"{metric}_p_ttest": test.get("ttest_p")})
        writer.writerow(line)
    return buffer.getvalue()


def write_method_table(rows: Sequence[dict], output_folder: str, baseline: str = "baseline", pair_by: str = "run",
                       interval: str = "t", name: str = "table1", overwrite: bool = False) -> dict:
    """Write ``<name>.md``, ``<name>.csv`` and ``<name>.json`` (every number) atomically; returns the table with
    the written paths under ``files``. Refuses to replace existing files unless ``overwrite``."""
    paths = {ext: join(output_folder, f"{name}.{ext}") for ext in ("md", "csv", "json")}
    refuse_overwrite(paths.values(), overwrite)
    table = method_table(rows, baseline, pair_by, interval)
    write_text_atomic(paths["md"], table_markdown(table))
    write_text_atomic(paths["csv"], table_csv(table))
    write_json_atomic(paths["json"], table)
    return {**table, "files": paths}
