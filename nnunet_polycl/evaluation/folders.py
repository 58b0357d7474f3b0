"""``evaluate_folders``: Dice, HD and HD95 (mm) of every case and label of a prediction folder."""
from __future__ import annotations

import multiprocessing
from os.path import abspath, isfile
from typing import Iterator, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.configuration import default_num_processes
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from tqdm import tqdm

from nnunet_polycl.evaluation.cases import CaseJob, case_jobs, evaluate_case, pair_cases
from nnunet_polycl.evaluation.labels import label_manager, select_labels
from nnunet_polycl.evaluation.summary import (
    DEFINITIONS,
    aggregate_label,
    foreground_mean,
    summary_paths,
    write_summary,
)
from nnunet_polycl.paths import PolyCLUserError


def load_dataset_json(dataset_json: Union[str, dict]) -> tuple[dict, str]:
    """The dataset.json content and a name for messages (its path, or ``dataset.json`` for a dict)."""
    if isinstance(dataset_json, dict):
        return dataset_json, "dataset.json"
    if not isfile(dataset_json):
        raise PolyCLUserError(f"dataset.json file {dataset_json} does not exist (-djfile).")
    content = load_json(dataset_json)
    if "file_ending" not in content:
        raise PolyCLUserError(f"{dataset_json} has no 'file_ending' entry; it is not an nnU-Net v2 dataset.json.")
    return content, dataset_json


def _collect(results: Iterator[dict], total: int, progress: bool) -> list[dict]:
    """Gather results behind a progress bar that is closed (its line finished) even when a case fails."""
    with tqdm(total=total, desc="Evaluating cases", unit="case", disable=not progress) as bar:
        collected = []
        for result in results:
            collected.append(result)
            bar.update()
    return collected


def _run_jobs(jobs: list[CaseJob], num_processes: int, progress: bool) -> list[dict]:
    if num_processes <= 1 or len(jobs) == 1:
        return _collect(map(evaluate_case, jobs), len(jobs), progress)
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        return _collect(pool.imap(evaluate_case, jobs), len(jobs), progress)


def evaluate_folders(ref_folder: str, pred_folder: str, dataset_json: Union[str, dict],
                     output_folder: str | None = None, labels: Sequence[Union[str, int]] | None = None,
                     intersection: bool = False, num_processes: int = default_num_processes,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Evaluate every prediction in ``pred_folder`` against the reference with the same name in ``ref_folder``.

    Args:
        ref_folder, pred_folder: segmentation files named ``<case><file_ending>`` (nnU-Net's naming).
        dataset_json: path to (or content of) the dataset.json giving ``file_ending`` and ``labels``.
        output_folder: where ``summary.json``, ``summary.csv`` and ``summary.md`` go; None writes nothing.
        labels: names or integer values of the labels to evaluate; None = every foreground label (or region).
        intersection: evaluate only the cases present in both folders instead of refusing.
        num_processes: worker processes (1 = in this process).
        overwrite: replace existing summary files in ``output_folder``.
        progress: show a progress bar over cases.

    Returns:
        The summary (also ``summary.json``): ``metric_per_case`` (per case: ``metrics[label]`` with ``status``,
        ``dice``, ``hd``, ``hd95``, volumes), ``aggregates[label]`` (``n_cases``, ``n_<status>`` counts,
        ``{n, mean, std, median, min, max}`` per metric over defined values), ``foreground_mean``, the cases, the
        cases missing on either side, the labels and the metric definitions. Undefined values are None.

    Raises:
        PolyCLUserError: missing folders or dataset.json, unknown labels, cases missing on one side (without
            ``intersection``), a case whose prediction and reference differ in shape or spacing or hold label
            values dataset.json does not declare, existing outputs (without ``overwrite``).
    """
    content, source = load_dataset_json(dataset_json)
    selected = select_labels(content, labels, source)
    manager = label_manager(content, source)
    declared = tuple(int(v) for v in manager.all_labels) + (() if manager.ignore_label is None
                                                             else (int(manager.ignore_label),))
    if output_folder is not None:
        summary_paths(output_folder, overwrite)
    file_ending = content["file_ending"]
    pairing = pair_cases(ref_folder, pred_folder, file_ending, intersection)
    reader = determine_reader_writer_from_dataset_json(content, f"{ref_folder}/{pairing.cases[0]}{file_ending}",
                                                       verbose=False)()
    jobs = case_jobs(pairing, ref_folder, pred_folder, file_ending, reader, selected, manager.ignore_label,
                     declared)
    per_case = _run_jobs(jobs, num_processes, progress)
    aggregates = {label: aggregate_label(per_case, label) for label in selected}
    summary = dict(reference_folder=abspath(ref_folder), prediction_folder=abspath(pred_folder),
                   file_ending=file_ending, labels=selected, ignore_label=manager.ignore_label, definitions=DEFINITIONS,
                   cases=pairing.cases, missing_in_prediction=pairing.missing_in_prediction,
                   missing_in_reference=pairing.missing_in_reference, metric_per_case=per_case,
                   aggregates=aggregates, foreground_mean=foreground_mean(aggregates))
    if output_folder is not None:
        write_summary(summary, output_folder, overwrite)
    return summary
