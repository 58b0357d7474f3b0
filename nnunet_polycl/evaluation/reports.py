"""Table 1 of the paper from repeated runs: mean ± std over runs, the paired difference to the baseline with its 95%
confidence interval, p-values, and the counts of empty predictions and undefined distances.

Aggregation: each run (method, seed, k) is first averaged over its cases (defined values only); mean and sample std
(ddof=1) are then taken over the runs of a method. At each (k, label) only the *paired runs* count: the seeds that
every method has (:func:`paired_seeds`); the others are listed apart as unpaired. Comparisons are paired against the
baseline at the same k and label, over the cases both runs define (an HD undefined in one run leaves that case out of
both, and the excluded cases are counted), with ``pair_by``:

- ``"run"`` (default): one pair per seed, the two runs' means over their matched cases. Runs are the independent
  units of the design (the seed fixes the labelled subset, the pre-training and the fine-tuning randomness), so this
  is the analysis the design carries.
- ``"case"`` (explicit option only): one pair per (seed, case). Cases of one run share its network and are not
  independent: the intervals are too narrow and the p-values too small. Every table made this way says so, and it
  also needs 5 runs per method for a p-value (with one run: no interval and no p-value).

p-values (two-sided Wilcoxon signed-rank and paired t-test, scipy) are computed only from
:data:`~nnunet_polycl.evaluation.statistics.MIN_PAIRS_FOR_TEST` pairs on; below, the table prints "n < 5: no test".
Dice is the primary metric: its t-test p-values are adjusted with Holm-Bonferroni over the report's family of
comparisons (:func:`adjust_family`), printed beside the raw ones. HD and HD95 are secondary (no adjustment, no verdict).
"""
from __future__ import annotations

import csv
import io
from os.path import join
from typing import Sequence

import numpy as np

from nnunet_polycl.evaluation.files import refuse_overwrite, write_json_atomic, write_text_atomic
from nnunet_polycl.evaluation.runs import REPORT_METRICS, k_sort_key, ordered_methods, over_runs, run_means
from nnunet_polycl.evaluation.statistics import (
    BOOTSTRAP_WARNING,
    INTERVALS,
    check_interval,
    holm_adjust,
    paired_comparison,
)

AGGREGATION = ("Each run (method, seed, k) is first averaged over its cases (defined values only); mean and sample "
               "std (ddof=1) are then taken over the runs of the method.")
PAIRINGS = {
    "run": "paired by seed: one pair per seed (the two runs' means over their cases)",
    "case": "PER-CASE PAIRING (explicit option): one pair per (seed, case); cases of one run are not independent, so "
            "intervals are too narrow and p-values too small",
}
METRIC_TITLES = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)"}
HIGHER_IS_BETTER = {"dice": True, "hd": False, "hd95": False}
PRIMARY_METRIC = "dice"  # the one metric verdicts read; HD and HD95 are secondary (shown, never concluded on)
CSV_STATS = {"mean": None, "std": None, "n_runs": None, "n_pairs": "n_pairs", "excluded_cases": "excluded_cases",
             "diff": "difference", "diff_low": "low", "diff_high": "high", "bootstrap_low": "bootstrap_low",
             "bootstrap_high": "bootstrap_high", "p_wilcoxon": "wilcoxon_p", "wilcoxon_n": "wilcoxon_n",
             "p_ttest": "ttest_p", "p_ttest_adjusted": "ttest_p_adjusted", "note": "note"}
COUNTS = ("n_cases", "n_empty_prediction", "n_empty_reference", "n_both_empty", "n_hd_undefined")


def check_pairing(pair_by: str) -> str:
    """``pair_by`` if it names a pairing of :data:`PAIRINGS`; raises ValueError listing them otherwise."""
    if pair_by not in PAIRINGS:
        raise ValueError(f"pair_by must be one of {list(PAIRINGS)}, got {pair_by!r}")
    return pair_by


def paired_seeds(runs: Sequence[dict], k, label: str) -> list:
    """The seeds at (k, label) for which every method has a run: the runs that means, spreads and differences use."""
    block = [e for e in runs if e["k"] == k and e["label"] == label]
    methods = {e["method"] for e in block}
    return sorted({e["seed"] for e in block
                   if {f["method"] for f in block if f["seed"] == e["seed"]} == methods}, key=str)


def _matched(rows: Sequence[dict], method: str, baseline: str, k, label: str, metric: str, seeds: list
             ) -> tuple[dict, dict, int]:
    """Per (seed, case) of ``seeds``: the metric of both runs where both define it; and how many cases were left out
    because one run (or both) does not define it."""
    ours, theirs = {}, {}
    for r in rows:
        if r["k"] == k and r["label"] == label and r["seed"] in seeds and r["method"] in (method, baseline):
            (ours if r["method"] == method else theirs)[(r["seed"], r["case"])] = r[metric]
    both = [c for c in ours if c in theirs and ours[c] is not None and theirs[c] is not None]
    excluded = len(set(ours) | set(theirs)) - len(both)
    return {c: float(ours[c]) for c in both}, {c: float(theirs[c]) for c in both}, excluded


def _comparison(rows, method, baseline, k, label, metric, seeds, pair_by, interval) -> dict:
    """The paired comparison over the matched cases of the paired runs (per seed, or per (seed, case))."""
    ours, theirs, excluded = _matched(rows, method, baseline, k, label, metric, seeds)
    keys = sorted(ours, key=str)
    if pair_by == "case":
        x, y = [ours[c] for c in keys], [theirs[c] for c in keys]
        result = paired_comparison(x, y, interval, n_runs=len({seed for seed, _ in keys}))
    else:
        by_seed = sorted({seed for seed, _ in keys}, key=str)
        x = [np.mean([ours[c] for c in keys if c[0] == seed]) for seed in by_seed]
        y = [np.mean([theirs[c] for c in keys if c[0] == seed]) for seed in by_seed]
        result = paired_comparison(x, y, interval)
    return {**result, "excluded_cases": excluded}


def case_counts(rows: Sequence[dict]) -> dict[str, int]:
    """How many cases the rows hold, how many had an empty prediction / reference / both, and how many an undefined
    HD (those are left out of the HD means)."""
    status = [r.get("status", "ok") for r in rows]
    return {"n_cases": len(rows), "n_empty_prediction": status.count("empty_prediction"),
            "n_empty_reference": status.count("empty_reference"), "n_both_empty": status.count("both_empty"),
            "n_hd_undefined": sum(r["hd"] is None for r in rows)}


def _table_entry(rows, runs, method, baseline, k, label, pair_by, interval) -> dict:
    seeds = paired_seeds(runs, k, label)
    group = [e for e in runs if e["method"] == method and e["k"] == k and e["label"] == label and e["seed"] in seeds]
    cases = [r for r in rows if r["method"] == method and r["k"] == k and r["label"] == label and r["seed"] in seeds]
    compared = [r for r in rows if r["k"] == k and r["label"] == label and r["seed"] in seeds
                and r["method"] in (method, baseline)]
    entry = dict(method=method, k=k, label=label, n_runs=len(group), seeds=seeds, counts=case_counts(cases),
                 settings=sorted({str(r["settings"]) for r in compared if "settings" in r}), metrics={})
    for metric in REPORT_METRICS:
        stats = over_runs(group, metric)
        result = dict(mean=stats["mean"], std=stats["std"], n_runs=stats["n"], vs_baseline=None,
                      primary=metric == PRIMARY_METRIC)
        if method != baseline:
            result["vs_baseline"] = _comparison(rows, method, baseline, k, label, metric, seeds, pair_by, interval)
        entry["metrics"][metric] = result
    return entry


def unpaired_runs(runs: Sequence[dict]) -> list[dict]:
    """The runs left out of a table's means and differences: at their (k, label), another method lacks their seed."""
    out = []
    for e in runs:
        seeds = paired_seeds(runs, e["k"], e["label"])
        if e["seed"] not in seeds:
            out.append({key: e[key] for key in ("method", "seed", "k", "label")})
    return out


def family_description(tables: Sequence[dict]) -> str:
    """What the comparisons of ``tables`` are: the arms, ks, labels, baselines (and ``budget`` levels) they span."""
    entries = [e for t in tables for e in t["rows"] if e["method"] != t["baseline"]]
    parts = {"arms": {e["method"] for e in entries}, "k": {"all" if e["k"] is None else str(e["k"]) for e in entries},
             "labels": {e["label"] for e in entries}, "baselines": {t["baseline"] for t in tables}}
    if any("budget" in t for t in tables):  # a further factor (e.g. fractions of training) as one table per level
        parts["budgets"] = {str(t.get("budget")) for t in tables}
    return (f"{PRIMARY_METRIC.capitalize()} of every arm against its baseline at every k and label (" +
            "; ".join(f"{name}: {', '.join(sorted(values))}" for name, values in parts.items()) + ")")


def adjust_family(tables: Sequence[dict], name: str | None = None) -> dict:
    """Holm-Bonferroni over every primary-metric comparison of ``tables`` (one family: each report's methods x k x
    labels x adaptations, and any further factor such as training budgets, passed as more tables).

    Sets ``ttest_p_adjusted`` of each comparison and ``family`` ``{name, size, metric, method}`` of each table;
    comparisons without a test count in the size. Secondary metrics (HD, HD95) are not adjusted: no verdict reads them.
    """
    tests = [e["metrics"][PRIMARY_METRIC]["vs_baseline"] for t in tables for e in t["rows"]
             if e["metrics"][PRIMARY_METRIC]["vs_baseline"] is not None]
    adjusted = holm_adjust([np.nan if c["ttest_p"] is None else c["ttest_p"] for c in tests])
    for test, p in zip(tests, adjusted, strict=True):
        test["ttest_p_adjusted"] = None if np.isnan(p) else float(p)
    family = dict(name=name or family_description(tables), size=len(tests), metric=PRIMARY_METRIC,
                  method="Holm-Bonferroni over the paired t-tests")
    for table in tables:
        table["family"] = family
    return family


def method_table(rows: Sequence[dict], baseline: str = "baseline", pair_by: str = "run",
                 interval: str = "t") -> dict:
    """Table 1 as a dict: one entry per (method, k, label) with its ``counts`` and, per metric, ``mean``, ``std``,
    ``n_runs`` and ``vs_baseline`` (:func:`_comparison`: difference to the baseline over matched cases with its
    intervals and p-values, raw and Holm-adjusted over this table's family; None for the baseline itself); plus every
    run's means and the runs left unpaired. Means, spreads and differences use the same paired runs.

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
    table = dict(baseline=baseline, pair_by=pair_by, pairing=PAIRINGS[pair_by], interval=INTERVALS["t"],
                 extra_interval=INTERVALS[interval] if interval != "t" else None, aggregation=AGGREGATION,
                 rows=entries, runs=runs, unpaired_runs=unpaired_runs(runs))
    adjust_family([table])
    return table


def _fmt(value, digits: int, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def _fmt_p(test: dict) -> str:
    if test["wilcoxon_p"] is None and test["ttest_p"] is None:
        return test["note"] or "no test"
    w, t = ("n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
            for p in (test["wilcoxon_p"], test["ttest_p"]))
    return f"{w} ({test['wilcoxon_n']} non-zero) / {t}"


def _fmt_adjusted(test: dict) -> str:
    p = test.get("ttest_p_adjusted")
    return "—" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _difference(test: dict, digits: int) -> str:
    if test["difference"] is None:
        return "n/a"
    interval = "" if test["low"] is None else f" [{_fmt(test['low'], digits, True)}, {_fmt(test['high'], digits, True)}]"
    n = test.get("excluded_cases") or 0
    excluded = f", {n} case{'s' if n != 1 else ''} excluded" if n else ""
    return f"{_fmt(test['difference'], digits, True)}{interval} (n={test['n_pairs']}{excluded})"


def _bootstrap(test: dict, digits: int) -> str:
    if test["bootstrap_low"] is None:
        return "n/a"
    return f"[{_fmt(test['bootstrap_low'], digits, True)}, {_fmt(test['bootstrap_high'], digits, True)}]"


def _header(table: dict) -> list[str]:
    head = ["Method", "k", "Label", "Runs"]
    for metric in REPORT_METRICS:
        title = METRIC_TITLES[metric] + ("" if metric == PRIMARY_METRIC else " (secondary)")
        head += [title, f"Δ{METRIC_TITLES[metric]} vs {table['baseline']} [t-CI]"]
        head += ["bootstrap CI"] if table.get("extra_interval") else []
        head += ["p (W / t)", "p adjusted (t, Holm)"] if metric == PRIMARY_METRIC else ["p (W / t)"]
    return head + ["empty pred", "HD undefined", "settings"]


def _cells(table: dict, e: dict) -> list[str]:
    cells = [e["method"], "all" if e["k"] is None else str(e["k"]), e["label"], str(e["n_runs"])]
    for metric in REPORT_METRICS:
        m, digits = e["metrics"][metric], 4 if metric == "dice" else 2
        spread = "" if m["std"] is None else f" ± {m['std']:.{digits}f}"
        test = m["vs_baseline"]
        cells += [_fmt(m["mean"], digits) + spread, "—" if test is None else _difference(test, digits)]
        if table.get("extra_interval"):
            cells.append("—" if test is None else _bootstrap(test, digits))
        cells.append("—" if test is None else _fmt_p(test))
        if metric == PRIMARY_METRIC:
            cells.append("—" if test is None else _fmt_adjusted(test))
    c = e["counts"]
    mixed = f"MIXED: {', '.join(e['settings'])}" if len(e.get("settings", [])) > 1 else ", ".join(e.get("settings", []))
    return cells + [f"{c['n_empty_prediction']}/{c['n_cases']}", f"{c['n_hd_undefined']}/{c['n_cases']}", mixed or "—"]


def _footer(table: dict) -> list[str]:
    family = table.get("family") or {}
    lines = ["", f"{table['aggregation']} Only paired runs count (the seeds every method has at that k and label); "
                 f"differences: method minus {table['baseline']!r} at the same k, {table['pairing']}, over the cases "
                 f"both runs define (excluded cases counted); [t-CI] = {table['interval']} of the mean difference. p: "
                 f"two-sided Wilcoxon signed-rank (with the number of non-zero differences it ranks) / paired t-test, "
                 f"computed only with at least 5 pairs. HD and HD95 are secondary: shown, never concluded on.",
             "", f"Family of comparisons: {family.get('name', 'this table')}; {family.get('size', 0)} comparisons, "
                 f"p adjusted with {family.get('method', 'Holm-Bonferroni')}. A difference is called better or worse "
                 f"only when the t-interval excludes 0, the adjusted p < 0.05 and there are at least 5 pairs."]
    if table.get("extra_interval"):
        lines += ["", f"Bootstrap CI = {table['extra_interval']}: {BOOTSTRAP_WARNING}."]
    if table.get("unpaired_runs"):
        lines += ["", unpaired_runs_line(table["unpaired_runs"])]
    return lines


def unpaired_runs_line(unpaired: Sequence[dict]) -> str:
    """One markdown line naming the runs of :func:`unpaired_runs`, which a table's numbers leave out."""
    return ("Unpaired runs (left out of means, spreads and differences: another method lacks their seed): "
            + "; ".join(f"{u['method']} seed {u['seed']} k={'all' if u['k'] is None else u['k']} ({u['label']})"
                        for u in unpaired))


def table_markdown(table: dict) -> str:
    """Markdown rendering of :func:`method_table`: per metric mean ± std over the paired runs, the difference to the
    baseline with its t-interval (and the bootstrap one when asked for), the p-values (raw; Dice also adjusted), the
    case counts and the settings sets the row's runs come from, then the notes, the family and the unpaired runs."""
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(table, e)) + " |" for e in table["rows"]]
    notes = {m["vs_baseline"]["note"] for e in table["rows"] for m in e["metrics"].values()
             if m["vs_baseline"] and m["vs_baseline"]["note"] and m["vs_baseline"]["wilcoxon_p"] is not None}
    lines += _footer(table) + [f"- {note}" for note in sorted(notes)]
    return "\n".join(lines) + "\n"


def table_csv(table: dict) -> str:
    """CSV rendering of :func:`method_table`: one line per (method, k, label); empty cells for undefined values."""
    columns = ["method", "baseline", "k", "label", "n_runs", *COUNTS, "settings"]
    for metric in REPORT_METRICS:
        columns += [f"{metric}_{s}" for s in CSV_STATS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for e in table["rows"]:
        line = {key: e[key] for key in ("method", "k", "label", "n_runs")} | {"baseline": table["baseline"]} | \
            e["counts"] | {"settings": " ".join(e.get("settings", []))}
        for metric in REPORT_METRICS:
            m, test = e["metrics"][metric], e["metrics"][metric]["vs_baseline"] or {}
            line.update({f"{metric}_mean": m["mean"], f"{metric}_std": m["std"], f"{metric}_n_runs": m["n_runs"]})
            line.update({f"{metric}_{s}": test.get(key) for s, key in CSV_STATS.items() if key})
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
