"""The experiment's use of the evaluation package: evaluate one run, and write the reports over all finished runs.

Reports (in ``<experiment>/reports/``, rewritten after every finished run):

- ``table1.md`` / ``.csv`` / ``.json``: Table 1, one comparison per adaptation (every arm against the baseline
  fine-tuned with the same adaptation: the fair comparison; arms of an adaptation the baseline did not run, as with
  ``--adaptations default O=layerwise``, against the baseline on nnU-Net's own schedule); needs baseline runs;
- ``schedules.md`` / ``.csv`` / ``.json`` (only when the baseline ran several adaptations): every arm against the
  baseline on nnU-Net's own schedule (adaptation ``direct``, else the trainer's default);
- ``verdict.md``: one sentence per arm and k saying what the Dice comparison supports, with the baseline's
  end-of-training label (:mod:`nnunet_polycl.evaluation.convergence`);
- ``budgets.md`` / ``.csv`` / ``.json`` and ``fig_budgets.png`` (only with ``--budgets``): Dice against training
  budget per arm, the paired difference to the baseline at every budget, and the end-of-training labels;
- ``fig4.png`` / ``.json``: Fig. 4, Dice and HD95 against k with 95% confidence intervals over runs (needs a run
  with a numeric k);
- ``results.json``: every case's numbers, every run's record and the state of every planned run.

The statistics (pairing, interval) are the experiment's settings, recorded in ``experiment.json``. Table 1 and the
verdicts share one family of comparisons (every arm x k x label x adaptation; Holm-Bonferroni over Dice); the
schedules report is a family of its own. Every markdown report ends with the planned runs and their state
(:mod:`~nnunet_polycl.experiment.inventory`), the settings sets when runs of several were mixed, and the labelled
subsets when seeds had to share one.
"""
from __future__ import annotations

import json
from os.path import isfile, join

from nnunet_polycl.evaluation import comparison_verdict, evaluate_folders, plot_against_k, summary_rows
from nnunet_polycl.evaluation.budgets import (
    budget_table,
    budgets_csv,
    budgets_figure,
    budgets_markdown,
    training_label,
    training_label_line,
)
from nnunet_polycl.evaluation.files import save_figure_atomic, write_json_atomic, write_text_atomic
from nnunet_polycl.evaluation.reports import adjust_family, method_table, table_csv, table_markdown
from nnunet_polycl.experiment.inventory import (
    compared_settings_ids,
    run_states,
    runs_markdown,
    settings_markdown,
    subsets_markdown,
)
from nnunet_polycl.experiment.layout import FINISHED_FILE, ExperimentLayout, RunSpec, arm_name
from nnunet_polycl.experiment.presets import METHODS
from nnunet_polycl.experiment.state import read_marker
from nnunet_polycl.finetuning.budgets import FINAL_CHECKPOINT
from nnunet_polycl.paths import PolyCLUserError

BASELINE = "baseline"
REFERENCE_ADAPTATIONS = ("direct", "default")  # nnU-Net's own schedule: schedules report, arms without a baseline


def evaluate_run(reference_folder: str, prediction_folder: str, dataset_json: dict, output_folder: str) -> dict:
    """Evaluate a run's predictions (Dice, HD, HD95 in mm); the summary files go to ``output_folder``."""
    return evaluate_folders(reference_folder, prediction_folder, dataset_json, output_folder=output_folder,
                            num_processes=1, overwrite=True, progress=False)


def _run_of(record: dict) -> RunSpec:
    return RunSpec(record["method"], record.get("adaptation", "default"), record["seed"], record["k"],
                   record.get("pretrain_seed", record["seed"]), record.get("schedule", "default"),
                   record.get("tag", ""), record.get("pretraining_tag", ""), record.get("unlabelled"),
                   record.get("baseline_tag", ""))


def _summary_rows(layout: ExperimentLayout, run: RunSpec, at_budget: float | None = None, **extra) -> list[dict]:
    """The rows of the run's evaluation at the training budget ``at_budget`` (None: the end point)."""
    summary_file = join(layout.evaluation(run, at_budget), "summary.json")
    if not isfile(summary_file):
        raise PolyCLUserError(f"Run {run.name} is marked finished but {summary_file} is missing. Delete "
                              f"{layout.finished(run)} to predict and evaluate it again.")
    with open(summary_file) as f:
        summary = json.load(f)
    k = None if run.k == "all" else run.k
    return summary_rows(summary, method=run.arm, adaptation=run.adaptation, seed=run.seed, k=k, **extra)


def finished_runs(layout: ExperimentLayout) -> list[tuple[dict, list[dict]]]:
    """``(record, rows)`` of every finished run of the folder, in the protocol's method order: its ``finished.json``
    and one row per case and label (``method`` is the run's arm; k is None for all labelled cases)."""
    records = [read_marker(join(layout.root, "runs", name, FINISHED_FILE)) for name in layout.finished_runs()]
    records = sorted((r for r in records if r is not None),
                     key=lambda r: (METHODS.index(r["method"]), r.get("adaptation", ""), r["seed"]))
    return [(record, _summary_rows(layout, _run_of(record), settings=compared))
            for record, compared in zip(records, compared_settings_ids(records), strict=True)]


def budget_rows(layout: ExperimentLayout, records: list[dict]) -> list[dict]:
    """One row per case and label of every run at each of its training budgets, with ``budget``, ``epoch`` and
    ``iterations`` (a budget at the last epoch is the run's end point)."""
    rows = []
    for record in records:
        run = _run_of(record)
        for b in record.get("budgets") or []:
            at = None if b["checkpoint"] == FINAL_CHECKPOINT else b["fraction"]
            rows += _summary_rows(layout, run, at, budget=b["fraction"], epoch=b["epoch"], iterations=b["iterations"])
    return rows


def schedule_lines(records: list[dict]) -> list[str]:
    """The fine-tuning schedules of the runs in words (as their trainers recorded them), with how many runs each."""
    described = [(r.get("training_schedule") or {}).get("description") or f"{r['trainer']} (no schedule recorded)"
                 for r in records]
    return [f"{text} ({described.count(text)} run{'s' if described.count(text) != 1 else ''})"
            for text in dict.fromkeys(described)]


def _baseline_adaptations(rows: list[dict]) -> tuple[list[str], str | None]:
    """The adaptations the baseline ran (in the rows' order), and the one on nnU-Net's own schedule among them (the
    first of ``REFERENCE_ADAPTATIONS``; None when the baseline ran neither)."""
    adaptations = list(dict.fromkeys(r["adaptation"] for r in rows))
    ran = [a for a in adaptations if any(r["method"] == arm_name(BASELINE, a) for r in rows)]
    return ran, next((a for a in REFERENCE_ADAPTATIONS if a in ran), None)


def comparisons(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """``(baseline arm, rows)`` per adaptation that has baseline runs: the arms of that adaptation and its baseline.
    Arms of an adaptation without baseline runs of its own (``--adaptations default O=layerwise``) join the
    comparison with the baseline on nnU-Net's own schedule (the first of ``REFERENCE_ADAPTATIONS`` that has runs)."""
    with_baseline, reference = _baseline_adaptations(rows)
    without = [r for r in rows if r["adaptation"] not in with_baseline]
    return [(arm_name(BASELINE, a), [r for r in rows if r["adaptation"] == a] + (without if a == reference else []))
            for a in with_baseline]


def _identity(layout: ExperimentLayout) -> dict:
    with open(layout.experiment_file) as f:
        return json.load(f)["identity"]


def _write_tables(tables: list[dict], folder: str, name: str, footer: str, header: str = "",
                  notes: list[str] | None = None) -> dict[str, str]:
    """One markdown / CSV / JSON file set holding several comparisons (a heading per comparison when several);
    ``header`` opens the markdown, ``notes`` (one per table) follow each table, ``footer`` ends it."""
    several = len(tables) > 1
    notes = notes or [""] * len(tables)
    md = header + "\n".join((f"### Compared with {t['baseline']}\n\n" if several else "") + table_markdown(t) + note
                             for t, note in zip(tables, notes, strict=True))
    md += footer
    csv_parts = [table_csv(t) for t in tables]
    csv = csv_parts[0] + "".join(part.split("\n", 1)[1] for part in csv_parts[1:])
    paths = {"md": join(folder, f"{name}.md"), "csv": join(folder, f"{name}.csv"), "json": join(folder, f"{name}.json")}
    write_text_atomic(paths["md"], md)
    write_text_atomic(paths["csv"], csv)
    write_json_atomic(paths["json"], {"comparisons": tables})
    return {f"{name}_{ext}": path for ext, path in paths.items()}


def _training_notes(table: dict, budgets: dict | None) -> str:
    """The end-of-training line of each k and label of ``table``'s baseline, for under the table."""
    keys = dict.fromkeys((e["k"], e["label"]) for e in table["rows"] if e["method"] == table["baseline"])
    return "\n" + "".join(training_label_line(budgets, k, label, table["baseline"]) + "  \n" for k, label in keys)


def verdicts(tables: list[dict], identity: dict, budgets: dict[str, dict] | None = None, footer: str = "") -> str:
    """``verdict.md``: what each arm's Dice comparison supports, per k, with the baseline's end-of-training label,
    and what the design leaves out. ``budgets``: the budget table of each baseline (none without ``--budgets``)."""
    lines = ["# What these runs show (Dice)", ""]
    for table in tables:
        several_labels = len({e["label"] for e in table["rows"]}) > 1
        for entry in table["rows"]:
            if entry["method"] != table["baseline"]:
                label = f" ({entry['label']})" if several_labels else ""
                verdict = comparison_verdict(table, entry["method"], entry["k"], label=entry["label"])
                training = training_label((budgets or {}).get(table["baseline"]), entry["k"], entry["label"])
                lines.append(f"- {entry['method']}{label}: {verdict} [{table['baseline']}: {training['text']}]")
    given = identity.get("given_pretrained_weights")
    if given:
        lines += ["", f"Note: {', '.join(given)} fine-tuned from one given weights file for every seed (not "
                      f"pre-trained here), so the pre-training's own randomness is not sampled: the intervals are "
                      f"conditional on that one encoder."]
    elif identity.get("pretraining_seeds") == "shared":
        lines += ["", "Note: one pre-training (the first seed's) serves every seed, so the pre-training's own "
                      "randomness is not sampled: the intervals are conditional on that one encoder."]
    if identity.get("pair_by") == "case":
        lines += ["", "Note: PER-CASE PAIRING was asked for; cases of one run are not independent, so the intervals "
                      "are too narrow."]
    family = tables[0].get("family") if tables else None
    if family:
        lines += ["", f"Family of comparisons: {family['name']}; {family['size']} comparisons, p adjusted with "
                      f"{family['method']}. HD and HD95 are secondary: no verdict."]
    return "\n".join(lines) + "\n" + footer


def _footer(layout: ExperimentLayout, records: list[dict]) -> tuple[str, list[dict]]:
    """The lines every markdown report ends with (planned runs, settings sets, labelled subsets), and the states."""
    states = run_states(layout)
    return "\n".join([*runs_markdown(states), *settings_markdown(records), *subsets_markdown(records)]) + "\n", states


def _write_budget_reports(layout: ExperimentLayout, records: list[dict], pair_by: str, interval: str,
                          written: dict[str, str]) -> dict[str, dict]:
    """``budgets.md`` / ``.csv`` / ``.json`` and ``fig_budgets.png`` (added to ``written``) when runs have training
    budgets; returns the budget table of each baseline."""
    rows = budget_rows(layout, records)
    tables = [budget_table(group, baseline, pair_by, interval) for baseline, group in comparisons(rows)]
    if not tables:
        return {}
    several = len(tables) > 1
    md = "\n".join((f"## Compared with {t['baseline']}\n\n" if several else "") +
                   budgets_markdown(t, schedule_lines(records)) for t in tables)
    csv_parts = [budgets_csv(t) for t in tables]
    paths = {name: join(layout.reports, name.replace("_", ".")) for name in ("budgets_md", "budgets_csv",
                                                                          "budgets_json")}
    write_text_atomic(paths["budgets_md"], md)
    write_text_atomic(paths["budgets_csv"], csv_parts[0] + "".join(p.split("\n", 1)[1] for p in csv_parts[1:]))
    write_json_atomic(paths["budgets_json"], {"comparisons": tables})
    paths["fig_budgets_png"] = save_figure_atomic(budgets_figure(tables), join(layout.reports, "fig_budgets.png"))
    written.update(paths)
    return {t["baseline"]: t for t in tables}


def write_reports(layout: ExperimentLayout) -> dict[str, str]:
    """Write the reports over the folder's finished runs; returns ``{report name: path}`` of those written.

    Table 1 and the verdicts are written once baseline runs exist, Fig. 4 once a run with a numeric k exists.
    """
    results = finished_runs(layout)
    rows = [row for _, rows in results for row in rows]
    if not rows:
        return {}
    identity = _identity(layout)
    pair_by, interval = identity.get("pair_by", "run"), identity.get("interval", "t")
    records = [record for record, _ in results]
    footer, states = _footer(layout, records)
    written = {"results_json": write_json_atomic(join(layout.reports, "results.json"),
                                                 {"runs": records, "planned_runs": states, "rows": rows})}
    budgets = _write_budget_reports(layout, records, pair_by, interval, written)
    tables = [method_table(group, baseline, pair_by, interval) for baseline, group in comparisons(rows)]
    if tables:
        adjust_family(tables)
        header = "".join(f"Fine-tuning schedule: {line}  \n" for line in schedule_lines(records)) + "\n"  # a line each
        notes = [_training_notes(t, budgets.get(t["baseline"])) for t in tables]
        written.update(_write_tables(tables, layout.reports, "table1", footer, header, notes))
        written["verdict_md"] = write_text_atomic(join(layout.reports, "verdict.md"),
                                                  verdicts(tables, identity, budgets, footer))
    with_baseline, reference = _baseline_adaptations(rows)
    if len(with_baseline) > 1 and reference:  # else Table 1 already compares every arm with that baseline
        table = method_table(rows, arm_name(BASELINE, reference), pair_by, interval)
        written.update(_write_tables([table], layout.reports, "schedules", footer))
    if any(r["k"] is not None for r in rows):
        figure = plot_against_k(rows, join(layout.reports, "fig4.png"), baseline=BASELINE, overwrite=True,
                                interval=interval)
        written.update({f"fig4_{ext}": path for ext, path in figure["files"].items()})
    return written
