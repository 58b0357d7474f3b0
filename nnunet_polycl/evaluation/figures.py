"""Fig. 4 of the paper from repeated runs: metrics against the number of labelled cases k, one line per method.

Each point is the mean over runs of the per-run means (runs averaged over their cases first), the error bar its 95%
confidence interval over runs (t-interval by default; none with a single run). Runs whose k is not a number (None =
all labelled cases, the paper's full-data reference) are drawn as a dashed horizontal line in the method's colour.
"""
from __future__ import annotations

from os.path import splitext
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnunet_polycl.evaluation.files import refuse_overwrite, save_figure_atomic, write_json_atomic
from nnunet_polycl.evaluation.reports import METRIC_TITLES
from nnunet_polycl.evaluation.runs import k_sort_key, ordered_methods, over_runs, run_means
from nnunet_polycl.evaluation.statistics import INTERVALS, check_interval, mean_interval

FIGURE_METRICS = ("dice", "hd95")


def _is_number(k) -> bool:
    return isinstance(k, (int, float)) and not isinstance(k, bool)


def curve_points(rows: Sequence[dict], metrics: Sequence[str] = FIGURE_METRICS,
                 baseline: str = "baseline", interval: str = "t") -> list[dict]:
    """``[{method, label, metric, k, mean, std, low, high, n_runs}]``: one point per method, label, metric and k
    (numbers ascending, then the rest), over the runs where the metric is defined; ``low`` / ``high`` bound the 95%
    confidence interval of the mean over runs (None with one run)."""
    check_interval(interval)
    runs = run_means(rows, metrics)
    points = []
    for method in ordered_methods(rows, baseline):
        for label in dict.fromkeys(e["label"] for e in runs):
            group = [e for e in runs if e["method"] == method and e["label"] == label]
            for metric in metrics:
                for k in sorted({e["k"] for e in group}, key=k_sort_key):
                    same_k = [e for e in group if e["k"] == k]
                    stats, ci = over_runs(same_k, metric), mean_interval((e[metric] for e in same_k), interval)
                    if stats["mean"] is not None:
                        points.append(dict(method=method, label=label, metric=metric, k=k, mean=stats["mean"],
                                           std=stats["std"], low=ci["low"], high=ci["high"], n_runs=stats["n"]))
    return points


def _draw_panel(ax, points: list[dict], methods: list[str], title: str) -> None:
    for i, method in enumerate(methods):
        color = f"C{i}"
        on_axis = [p for p in points if p["method"] == method and _is_number(p["k"])]
        if on_axis:
            below = [0.0 if p["low"] is None else p["mean"] - p["low"] for p in on_axis]
            above = [0.0 if p["high"] is None else p["high"] - p["mean"] for p in on_axis]
            ax.errorbar([p["k"] for p in on_axis], [p["mean"] for p in on_axis], yerr=[below, above], marker="o",
                        capsize=3, color=color, label=method)
        for p in (p for p in points if p["method"] == method and not _is_number(p["k"])):
            ax.axhline(p["mean"], linestyle="--", color=color, alpha=0.7,
                       label=f"{method}, {'all cases' if p['k'] is None else p['k']}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled training cases k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _draw(points: list[dict], metrics: Sequence[str], interval: str) -> Figure:
    """A pyplot-free Figure (rendered with Agg, no global state, nothing to close): rows = labels, columns =
    metrics."""
    labels = list(dict.fromkeys(p["label"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    fig = Figure(figsize=(5.5 * len(metrics), 3.8 * len(labels)))
    axes = fig.subplots(len(labels), len(metrics), squeeze=False)
    for row, label in enumerate(labels):
        for col, metric in enumerate(metrics):
            title = METRIC_TITLES.get(metric, metric)
            _draw_panel(axes[row][col], [p for p in points if p["label"] == label and p["metric"] == metric],
                        methods, f"{label}: {title}, mean over runs, {INTERVALS[interval]}")
            axes[row][col].set_ylabel(title)
    fig.tight_layout()
    return fig


def plot_against_k(rows: Sequence[dict], output_png: str, metrics: Sequence[str] = FIGURE_METRICS,
                   baseline: str = "baseline", overwrite: bool = False, interval: str = "t") -> dict:
    """Draw the metrics against k (one panel per label and metric, one line per method, error bars = 95% confidence
    intervals over runs) into
    ``output_png`` and every plotted number (``curve_points``) into the ``.json`` beside it; returns
    ``{metrics, points, files}``.

    Raises:
        ValueError: empty or incomplete rows, or no run with a numeric k.
        PolyCLUserError: an output exists and ``overwrite`` is False.
    """
    paths = {"png": output_png, "json": splitext(output_png)[0] + ".json"}
    refuse_overwrite(paths.values(), overwrite)
    points = curve_points(rows, metrics, baseline, interval)
    if not any(_is_number(p["k"]) for p in points):
        raise ValueError("no run has a numeric k (number of labelled cases) with a defined metric: nothing to plot")
    save_figure_atomic(_draw(points, metrics, interval), paths["png"])
    content = {"metrics": list(metrics), "error_bars": f"{INTERVALS[interval]} of the mean over runs", "points": points}
    write_json_atomic(paths["json"], content)
    return {**content, "files": paths}
