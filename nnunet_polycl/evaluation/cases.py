"""Pair the files of a reference and a prediction folder (nnU-Net naming) and evaluate one pair."""
from __future__ import annotations

from dataclasses import dataclass
from os.path import isdir, join

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import subfiles
from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter

from nnunet_polycl.evaluation.labels import LabelOrRegion
from nnunet_polycl.metrics import mask_metrics
from nnunet_polycl.paths import PolyCLUserError

SPACING_TOLERANCE_MM = 1e-4


@dataclass(frozen=True)
class CasePairing:
    """Cases found in both folders (sorted) and those found on one side only."""

    cases: list[str]
    missing_in_prediction: list[str]
    missing_in_reference: list[str]


@dataclass(frozen=True)
class CaseJob:
    """Everything a worker process needs to evaluate one case."""

    case: str
    reference_file: str
    prediction_file: str
    reader: BaseReaderWriter
    labels: dict[str, LabelOrRegion]
    ignore_label: int | None
    declared_values: tuple[int, ...]


def _case_ids(folder: str, file_ending: str, side: str) -> list[str]:
    if not isdir(folder):
        raise PolyCLUserError(f"The {side} folder {folder} does not exist.")
    return [f[: -len(file_ending)] for f in subfiles(folder, suffix=file_ending, join=False, sort=True)]


def _short_list(names: list[str], limit: int = 20) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def pair_cases(ref_folder: str, pred_folder: str, file_ending: str, intersection: bool = False) -> CasePairing:
    """Match the ``*<file_ending>`` files of both folders by case id.

    Raises:
        PolyCLUserError: a folder is missing or empty, or cases are missing on one side while ``intersection`` is
            False (the message lists them), or the two folders share no case.
    """
    ref = _case_ids(ref_folder, file_ending, "reference")
    pred = _case_ids(pred_folder, file_ending, "prediction")
    for ids, folder in ((ref, ref_folder), (pred, pred_folder)):
        if not ids:
            raise PolyCLUserError(f"No *{file_ending} files in {folder} (file_ending from dataset.json).")
    pairing = CasePairing(cases=sorted(set(ref) & set(pred)),
                          missing_in_prediction=sorted(set(ref) - set(pred)),
                          missing_in_reference=sorted(set(pred) - set(ref)))
    problems = []
    if pairing.missing_in_prediction:
        problems.append(f"cases without a prediction in {pred_folder}: {_short_list(pairing.missing_in_prediction)}")
    if pairing.missing_in_reference:
        problems.append(f"cases without a reference in {ref_folder}: {_short_list(pairing.missing_in_reference)}")
    if problems and not intersection:
        raise PolyCLUserError("The folders do not hold the same cases; " + "; ".join(problems)
                              + ". Pass --intersection (intersection=True) to evaluate the cases found in both.")
    if not pairing.cases:
        raise PolyCLUserError(f"{ref_folder} and {pred_folder} have no case in common.")
    return pairing


def case_jobs(pairing: CasePairing, ref_folder: str, pred_folder: str, file_ending: str, reader: BaseReaderWriter,
              labels: dict[str, LabelOrRegion], ignore_label: int | None,
              declared_values: tuple[int, ...]) -> list[CaseJob]:
    """One job per paired case; ``declared_values`` are the label values dataset.json declares (ignore included)."""
    return [CaseJob(c, join(ref_folder, c + file_ending), join(pred_folder, c + file_ending), reader, labels,
                    ignore_label, declared_values) for c in pairing.cases]


def _read(reader: BaseReaderWriter, path: str, case: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        seg, props = reader.read_seg(path)
    except (RuntimeError, OSError, ValueError) as e:
        raise PolyCLUserError(f"Case {case}: cannot read {path}: {e}") from None
    return seg[0], np.asarray(props["spacing"], dtype=float)


def _check_values(seg: np.ndarray, job: CaseJob, side: str, path: str) -> None:
    unknown = np.setdiff1d(np.unique(seg), job.declared_values)
    if unknown.size:
        values = [int(v) if float(v).is_integer() else float(v) for v in unknown]
        raise PolyCLUserError(f"Case {job.case}: the {side} {path} holds label values {values} that "
                              f"dataset.json does not declare (declared: {list(job.declared_values)}). Use the "
                              f"dataset.json of the dataset these segmentations belong to.")


def evaluate_case(job: CaseJob) -> dict:
    """Metrics of every label of one case: ``{case, reference_file, prediction_file, shape, spacing, metrics}``.

    Raises:
        PolyCLUserError: the two files differ in shape or spacing, or hold label values dataset.json does not
            declare (the message names the case).
    """
    ref, ref_spacing = _read(job.reader, job.reference_file, job.case)
    pred, pred_spacing = _read(job.reader, job.prediction_file, job.case)
    _check_values(ref, job, "reference", job.reference_file)
    _check_values(pred, job, "prediction", job.prediction_file)
    if ref.shape != pred.shape:
        raise PolyCLUserError(f"Case {job.case}: the prediction has shape {pred.shape} but the reference has "
                              f"{ref.shape} ({job.prediction_file} vs {job.reference_file}). Predictions must be on "
                              f"the reference's grid (nnU-Net exports them that way).")
    if ref_spacing.shape != pred_spacing.shape or not np.allclose(ref_spacing, pred_spacing, rtol=0,
                                                                  atol=SPACING_TOLERANCE_MM):
        raise PolyCLUserError(f"Case {job.case}: the prediction has spacing {pred_spacing.tolist()} mm but the "
                              f"reference has {ref_spacing.tolist()} mm ({job.prediction_file} vs "
                              f"{job.reference_file}).")
    ignore = ref == job.ignore_label if job.ignore_label is not None else None
    metrics = {name: mask_metrics(region_or_label_to_mask(ref, value), region_or_label_to_mask(pred, value),
                                  ref_spacing, ignore).as_dict()
               for name, value in job.labels.items()}
    return dict(case=job.case, reference_file=job.reference_file, prediction_file=job.prediction_file,
                shape=list(ref.shape), spacing=ref_spacing.tolist(), metrics=metrics)
