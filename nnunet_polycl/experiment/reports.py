"""The experiment's use of the evaluation package: evaluate one run, and write the reports over all finished runs.

Reports (in ``<experiment>/reports/``, rewritten after every finished run):
``table1.md`` / ``.csv`` / ``.json`` (Table 1: mean ± std over runs per method and k, paired p-values against the
baseline; needs baseline runs), ``fig4.png`` / ``.json`` (Fig. 4: Dice and HD95 against k; needs a run with a numeric
k) and ``results.json`` (every case's numbers and every run's record).
"""
from __future__ import annotations

import json
from os.path import isfile, join

from nnunet_polycl.evaluation import evaluate_folders, plot_against_k, summary_rows, write_method_table
from nnunet_polycl.evaluation.files import write_json_atomic
from nnunet_polycl.experiment.layout import FINISHED_FILE, ExperimentLayout, RunSpec
from nnunet_polycl.experiment.presets import METHODS
from nnunet_polycl.experiment.state import read_marker
from nnunet_polycl.paths import PolyCLUserError

BASELINE = "baseline"


def evaluate_run(reference_folder: str, prediction_folder: str, dataset_json: dict, output_folder: str) -> dict:
    """Evaluate a run's predictions (Dice, HD, HD95 in mm); the summary files go to ``output_folder``."""
    return evaluate_folders(reference_folder, prediction_folder, dataset_json, output_folder=output_folder,
                            num_processes=1, overwrite=True, progress=False)


def finished_runs(layout: ExperimentLayout) -> list[tuple[dict, list[dict]]]:
    """``(record, rows)`` of every finished run of the folder, in the protocol's method order: its ``finished.json``
    and one row per case and label (k is None for all labelled cases, as the evaluation reports expect)."""
    results = []
    for name in layout.finished_runs():
        record = read_marker(join(layout.root, "runs", name, FINISHED_FILE))
        if record is None:
            continue
        run = RunSpec(record["method"], record["seed"], record["k"])
        summary_file = join(layout.evaluation(run), "summary.json")
        if not isfile(summary_file):
            raise PolyCLUserError(f"Run {name} is marked finished but {summary_file} is missing. Delete "
                                  f"{join(layout.root, 'runs', name, FINISHED_FILE)} to predict and evaluate it again.")
        with open(summary_file) as f:
            summary = json.load(f)
        k = None if run.k == "all" else run.k
        results.append((record, summary_rows(summary, method=run.method, seed=run.seed, k=k)))
    return sorted(results, key=lambda r: (METHODS.index(r[0]["method"]), r[0]["seed"]))


def write_reports(layout: ExperimentLayout) -> dict[str, str]:
    """Write the reports over the folder's finished runs; returns ``{report name: path}`` of those written.

    Table 1 is written once baseline runs exist, Fig. 4 once a run with a numeric k exists.
    """
    results = finished_runs(layout)
    rows = [row for _, rows in results for row in rows]
    if not rows:
        return {}
    written = {"results_json": write_json_atomic(join(layout.reports, "results.json"),
                                                 {"runs": [record for record, _ in results], "rows": rows})}
    if any(r["method"] == BASELINE for r in rows):
        table = write_method_table(rows, layout.reports, baseline=BASELINE, overwrite=True)
        written.update({f"table1_{ext}": path for ext, path in table["files"].items()})
    if any(r["k"] is not None for r in rows):
        figure = plot_against_k(rows, join(layout.reports, "fig4.png"), baseline=BASELINE, overwrite=True)
        written.update({f"fig4_{ext}": path for ext, path in figure["files"].items()})
    return written
