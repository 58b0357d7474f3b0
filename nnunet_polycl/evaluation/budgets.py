"""Dice against training budget: every arm at fractions of its schedule, and the baseline's end-of-training label.

Rows are the per-case rows of :mod:`.runs` with three more keys: ``budget`` (the fraction of the schedule's
iterations), ``epoch`` and ``iterations`` (where the run's checkpoint of that budget was saved). At every budget the
arms are compared as in Table 1 (:func:`~nnunet_polycl.evaluation.reports.method_table`: paired by seed, the 95%
interval of the mean difference); each arm's mean Dice also gets its 95% interval over runs. Means, intervals and
differences use the same paired runs as Table 1; runs whose seed another method lacks are named, not counted. The
baseline's change between the budgets 0.5 and 1 gives the end-of-training label (:mod:`.convergence`).
"""
from __future__ import annotations

import csv
import io
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from nnunet_polycl.evaluation.convergence import FULL, HALF, NOT_CHECKED, RULE, describe_change, end_of_training
from nnunet_polycl.evaluation.reports import AGGREGATION, PAIRINGS, method_table, paired_seeds, unpaired_runs_line
from nnunet_polycl.evaluation.statistics import INTERVALS, mean_interval

ROUNDING = ("Budgets are fractions of each run's iterations, rounded to the nearest epoch boundary (at least 1 epoch); "
            "each is predicted and evaluated exactly as the end point, from the checkpoint saved at that epoch of the "
            "same run (not from a separate shorter run).")


def _key(entry: dict) -> tuple:
    return entry["method"], entry["k"], entry["label"]


def _entries_at(rows: list[dict], fraction: float, baseline: str, pair_by: str, interval: str
                ) -> tuple[list, list, list]:
    """The budget's entries (over the paired runs only, as Table 1), every run's means, and the unpaired runs."""
    table = method_table(rows, baseline, pair_by, interval)
    entries = []
    for e in table["rows"]:
        paired = set(paired_seeds(table["runs"], e["k"], e["label"]))  # Table 1's runs: its n, std and differences
        runs = [x for x in table["runs"] if _key(x) == _key(e) and x["seed"] in paired]
        cases = [r for r in rows if _key(r) == _key(e) and r["seed"] in paired]
        ci = mean_interval((x["dice"] for x in runs), interval)
        entries.append(dict(budget=fraction, method=e["method"], k=e["k"], label=e["label"], n_runs=e["n_runs"],
                            epochs=sorted({r["epoch"] for r in cases}),
                            iterations=sorted({r["iterations"] for r in cases}),
                            dice=dict(mean=ci["mean"], std=e["metrics"]["dice"]["std"], low=ci["low"],
                                      high=ci["high"]),
                            vs_baseline=e["metrics"]["dice"]["vs_baseline"]))
    return entries, [{**x, "budget": fraction} for x in table["runs"]], table["unpaired_runs"]


def convergence(runs: Sequence[dict], baseline: str, interval: str = "t") -> list[dict]:
    """The end-of-training label of ``baseline`` per k and label: ``[{k, label, status, text, change}]``.

    Only the baseline runs of the seeds that the comparisons at that budget use (:func:`paired_seeds`: every arm has
    the seed) count, so the label speaks of the runs it labels."""
    own = [r for r in runs if r["method"] == baseline and r["dice"] is not None]
    results = []
    for k, label in dict.fromkeys((r["k"], r["label"]) for r in own):
        at = {}
        for b in sorted({r["budget"] for r in own if r["budget"] <= HALF} | {FULL}):
            compared = set(paired_seeds([r for r in runs if r["budget"] == b], k, label))
            at[b] = {r["seed"]: r["dice"] for r in own
                     if (r["k"], r["label"], r["budget"]) == (k, label, b) and r["seed"] in compared}
        earlier = {b: values for b, values in at.items() if b < HALF}
        results.append(dict(k=k, label=label, **end_of_training(at.get(HALF, {}), at[FULL], interval, earlier)))
    return results


def budget_table(rows: Sequence[dict], baseline: str = "baseline", pair_by: str = "run", interval: str = "t") -> dict:
    """Dice per arm, k, label and budget (mean, std, 95% interval over the paired runs, the paired difference to the
    baseline with its interval), every run's means per budget, the unpaired runs, and the baseline's end-of-training
    label per k and label.

    Budgets without a baseline run are left out.
    """
    entries, runs, unpaired = [], [], []
    for fraction in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == fraction]
        if any(r["method"] == baseline for r in at):
            more, more_runs, more_unpaired = _entries_at(at, fraction, baseline, pair_by, interval)
            entries += more
            runs += more_runs
            unpaired += [u for u in more_unpaired if u not in unpaired]
    return dict(baseline=baseline, pairing=PAIRINGS[pair_by], interval=INTERVALS[interval], rounding=ROUNDING,
                aggregation=AGGREGATION, rule=RULE, rows=entries, runs=runs, unpaired_runs=unpaired,
                end_of_training=convergence(runs, baseline, interval))


def training_label(table: dict | None, k, label: str) -> dict:
    """The end-of-training result of ``table`` (:func:`budget_table`, or None without budgets) at ``k`` and
    ``label``; "not checked" when there is none."""
    found = [c for c in (table or {}).get("end_of_training", []) if c["k"] == k and c["label"] == label]
    return found[0] if found else dict(k=k, label=label, status="not_checked", text=NOT_CHECKED, change=None)


def training_label_line(table: dict | None, k, label: str, baseline: str) -> str:
    """One markdown line: "End of training (baseline, k = 1, liver): <label> (<numbers>)."."""
    result = training_label(table, k, label)
    numbers = describe_change(result)
    where = f"{baseline}, {'all labelled scans' if k is None else f'k = {k}'}, {label}"
    return f"End of training ({where}): **{result['text']}**" + (f" ({numbers})." if numbers else ".")


def _interval_text(low, high) -> str:
    return "" if low is None else f" [{low:.4f}, {high:.4f}]"


def _difference_text(test: dict | None) -> str:
    if test is None:
        return "—"
    if test["difference"] is None:
        return "n/a"
    spread = "" if test["low"] is None else f" [{test['low']:+.4f}, {test['high']:+.4f}]"
    return f"{test['difference']:+.4f}{spread} (n={test['n_pairs']})"


def _span(values: list) -> str:
    return "–".join(str(v) for v in (values[:1] if len(set(values)) == 1 else [values[0], values[-1]]))


def budgets_markdown(table: dict, schedules: Sequence[str] = ()) -> str:
    """Markdown of :func:`budget_table`: the schedule(s), one line per arm, k, label and budget, the labels."""
    lines = ["# Dice against training budget", ""]
    lines += [f"Fine-tuning schedule: {s}  " for s in schedules]
    lines += [table["rounding"], "",
              f"| Method | k | Label | Budget | Epoch | Iterations | Runs | Dice [{table['interval']} over runs] | "
              f"ΔDice vs {table['baseline']} [CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for e in table["rows"]:
        dice = e["dice"]
        mean = "n/a" if dice["mean"] is None else f"{dice['mean']:.4f}{_interval_text(dice['low'], dice['high'])}"
        lines.append(f"| {e['method']} | {'all' if e['k'] is None else e['k']} | {e['label']} | {e['budget']:g} | "
                     f"{_span(e['epochs'])} | {_span(e['iterations'])} | {e['n_runs']} | {mean} | "
                     f"{_difference_text(e['vs_baseline'])} |")
    lines += ["", f"{table['aggregation']} Only paired runs count (the seeds every method has at that k, label and "
                  f"budget); differences: method minus {table['baseline']!r} at the same k and budget, "
                  f"{table['pairing']}; [CI] = {table['interval']} of the mean difference.", ""]
    if table.get("unpaired_runs"):
        lines += [unpaired_runs_line(table["unpaired_runs"]), ""]
    lines += [training_label_line(table, c["k"], c["label"], table["baseline"]) + "  "
              for c in table["end_of_training"]]
    lines += [f"Rule: {table['rule']}."]
    return "\n".join(lines) + "\n"


def budgets_csv(table: dict) -> str:
    """CSV of :func:`budget_table`: one line per arm, k, label and budget; empty cells for undefined values."""
    columns = ["method", "baseline", "k", "label", "budget", "epochs", "iterations", "n_runs", "dice_mean", "dice_std",
               "dice_low", "dice_high", "n_pairs", "diff", "diff_low", "diff_high", "end_of_training"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for e in table["rows"]:
        test = e["vs_baseline"] or {}
        writer.writerow({"method": e["method"], "baseline": table["baseline"], "k": e["k"], "label": e["label"],
                         "budget": e["budget"], "epochs": " ".join(map(str, e["epochs"])),
                         "iterations": " ".join(map(str, e["iterations"])), "n_runs": e["n_runs"],
                         **{f"dice_{s}": e["dice"][s] for s in ("mean", "std", "low", "high")},
                         "n_pairs": test.get("n_pairs"), "diff": test.get("difference"),
                         "diff_low": test.get("low"), "diff_high": test.get("high"),
                         "end_of_training": training_label(table, e["k"], e["label"])["status"]})
    return buffer.getvalue()


def _errorbar(ax, points: list[dict], value, color: str, name: str) -> None:
    """Points ``[{budget, mean, low, high}]`` (``value`` picks that dict from an entry) with their intervals."""
    xs, ys, below, above = [], [], [], []
    for e in points:
        v = value(e)
        if v is None or v.get("mean", v.get("difference")) is None:
            continue
        mean = v.get("mean", v.get("difference"))
        xs.append(e["budget"])
        ys.append(mean)
        below.append(0.0 if v["low"] is None else mean - v["low"])
        above.append(0.0 if v["high"] is None else v["high"] - mean)
    if xs:
        ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, color=color, label=name)


def _draw_group(axes, table: dict, k, label: str, budgets: list[float]) -> None:
    ours = [e for e in table["rows"] if (e["k"], e["label"]) == (k, label)]
    where = f"{'all' if k is None else f'k = {k}'}, {label}"
    for i, method in enumerate(dict.fromkeys(e["method"] for e in table["rows"])):
        points = [e for e in ours if e["method"] == method]
        _errorbar(axes[0], points, lambda e: e["dice"], f"C{i}", method)
        if method != table["baseline"]:
            _errorbar(axes[1], points, lambda e: e["vs_baseline"], f"C{i}", method)
    if axes[1].has_data():
        axes[1].axhline(0.0, color="grey", linewidth=0.8)
    status = training_label(table, k, label)["text"]
    titles = (f"{where}: Dice, mean over runs, {table['interval']}\n{table['baseline']}: {status}",
              f"{where}: Dice minus {table['baseline']}, paired, {table['interval']}")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlim(budgets[0] / 1.25, budgets[-1] * 1.25)
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training budget (fraction of the schedule's iterations)")
        ax.set_title(title, fontsize="small")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")


def budgets_figure(tables: Sequence[dict]) -> Figure:
    """Per comparison, k and label: Dice against budget per arm (95% interval over runs), and each arm's paired
    difference to the baseline with its interval. A pyplot-free Figure (Agg)."""
    groups = [(t, k, label) for t in tables for k, label in dict.fromkeys((e["k"], e["label"]) for e in t["rows"])]
    budgets = sorted({e["budget"] for t in tables for e in t["rows"]})
    fig = Figure(figsize=(11, 3.8 * len(groups)))
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for row, (table, k, label) in enumerate(groups):
        _draw_group(axes[row], table, k, label, budgets)
    fig.tight_layout()
    return fig
