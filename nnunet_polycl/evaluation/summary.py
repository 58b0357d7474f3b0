"""Aggregate per-case metrics per label and write ``summary.json``, ``summary.csv`` and ``summary.md``."""
from __future__ import annotations

import csv
import io
import os
from os.path import join

from nnunet_polycl.evaluation.files import refuse_overwrite, write_json_atomic, write_text_atomic
from nnunet_polycl.evaluation.statistics import describe
from nnunet_polycl.metrics import STATUSES
from nnunet_polycl.paths import PolyCLUserError

METRICS = ("dice", "hd", "hd95")
VOLUMES = ("volume_reference_ml", "volume_prediction_ml")
SUMMARY_FILES = ("summary.json", "summary.csv", "summary.md")
CSV_COLUMNS = ("case", "label", "status", *METRICS, *VOLUMES)
DEFINITIONS = {
    "dice": "volumetric Dice 2|R&P|/(|R|+|P|) over the whole case",
    "hd": "symmetric Hausdorff distance (mm) between the surface voxels of R and P: max of both directed maxima",
    "hd95": "max of the two directed 95th percentiles (linear interpolation) of surface distances (mm), as "
            "monai.metrics.compute_hausdorff_distance(percentile=95)",
    "surface": "voxels of the mask with a face neighbour outside it; distances between voxel centres, anisotropic "
               "spacing applied; axes of length 1 dropped",
    "empty_policy": "empty_reference / empty_prediction: Dice 0, HD and HD95 undefined (null); both_empty: Dice, HD "
                    "and HD95 undefined. Aggregates use the defined values only; n says how many, the n_* counts "
                    "say how many cases were left out and why",
    "std": "sample standard deviation (ddof=1), null below two values",
}


def aggregate_label(per_case: list[dict], label: str) -> dict:
    """Counts of each case status and ``describe`` of every metric and volume for one label."""
    entries = [c["metrics"][label] for c in per_case]
    result: dict = {"n_cases": len(entries)}
    result.update({f"n_{s}": sum(e["status"] == s for e in entries) for s in STATUSES})
    result.update({m: describe(e[m] for e in entries) for m in (*METRICS, *VOLUMES)})
    return result


def foreground_mean(aggregates: dict[str, dict]) -> dict:
    """Mean over labels of each label's mean (labels without a defined mean are left out; ``n_labels`` counts)."""
    out = {}
    for m in METRICS:
        means = [a[m]["mean"] for a in aggregates.values() if a[m]["mean"] is not None]
        out[m] = dict(mean=sum(means) / len(means) if means else None, n_labels=len(means))
    return out


def summary_rows(summary: dict, **run: object) -> list[dict]:
    """One flat row per case and label (``run`` keys such as method, seed, k first), for CSV and the reports."""
    return [{**run, "case": c["case"], "label": label, **{k: m[k] for k in ("status", *METRICS, *VOLUMES)}}
            for c in summary["metric_per_case"] for label, m in c["metrics"].items()]


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _mean_std(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "—"
    return _fmt(stat["mean"], digits) + ("" if stat["std"] is None else f" ± {stat['std']:.{digits}f}")


def summary_markdown(summary: dict) -> str:
    """Markdown: an aggregate table per label, then one row per case and label."""
    lines = ["# Evaluation summary", "", f"Reference: `{summary['reference_folder']}`  ",
             f"Prediction: `{summary['prediction_folder']}`  ", f"Cases: {len(summary['cases'])}", "",
             "| Label | Dice (mean ± std) | Dice median | n | HD mm (mean ± std) | HD95 mm (mean ± std) | n HD |"
             " empty ref | empty pred | both empty |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, a in summary["aggregates"].items():
        lines.append(f"| {label} | {_mean_std(a['dice'], 4)} | {_fmt(a['dice']['median'], 4)} | {a['dice']['n']} | "
                     f"{_mean_std(a['hd'], 2)} | {_mean_std(a['hd95'], 2)} | {a['hd95']['n']} | "
                     f"{a['n_empty_reference']} | {a['n_empty_prediction']} | {a['n_both_empty']} |")
    lines += ["", "| Case | Label | Status | Dice | HD mm | HD95 mm | Ref ml | Pred ml |", "|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(summary):
        lines.append(f"| {row['case']} | {row['label']} | {row['status']} | {_fmt(row['dice'], 4)} | "
                     f"{_fmt(row['hd'], 2)} | {_fmt(row['hd95'], 2)} | {_fmt(row['volume_reference_ml'], 2)} | "
                     f"{_fmt(row['volume_prediction_ml'], 2)} |")
    lines += ["", "Definitions: " + "; ".join(f"{k}: {v}" for k, v in DEFINITIONS.items()) + "."]
    return "\n".join(lines) + "\n"


def summary_csv(summary: dict) -> str:
    """CSV text with one row per case and label; undefined values are empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary_rows(summary))
    return buffer.getvalue()


def check_output_folder(output_folder: str) -> None:
    """Refuse an output folder that is, or lies inside, an existing file (it is created when missing)."""
    existing = os.path.abspath(output_folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(output_folder) else f"lies inside the file {existing}"
        raise PolyCLUserError(f"The output folder {output_folder} {where}, not a folder: the summaries "
                              f"({', '.join(SUMMARY_FILES)}) are written into a folder. Choose another -o.")


def summary_paths(output_folder: str, overwrite: bool) -> dict[str, str]:
    """``{file name: path}`` of the summary files; refuses an output folder that is a file, and existing summaries
    unless ``overwrite``."""
    check_output_folder(output_folder)
    paths = {name: join(output_folder, name) for name in SUMMARY_FILES}
    refuse_overwrite(paths.values(), overwrite)
    return paths


def write_summary(summary: dict, output_folder: str, overwrite: bool = False) -> dict[str, str]:
    """Write the three summary files atomically; refuses to replace existing ones unless ``overwrite``."""
    paths = summary_paths(output_folder, overwrite)
    write_json_atomic(paths["summary.json"], summary)
    write_text_atomic(paths["summary.csv"], summary_csv(summary))
    write_text_atomic(paths["summary.md"], summary_markdown(summary))
    return paths
