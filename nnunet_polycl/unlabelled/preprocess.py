"""Preprocess unlabelled scans once, with the dataset's own plans and configuration, through nnU-Net's preprocessor.

The preprocessor is the class the plans name (``configuration_manager.preprocessor_class``, from
``preprocessor_name``), called exactly as ``nnUNetv2_preprocess`` calls it for a training case, without a label file
(``run_case_save(..., seg_file=None, ...)``): same transpose, nonzero crop, normalisation, resampling and blosc2
layout, so a slice of an unlabelled scan is what a slice of a labelled scan would be. The segmentation nnU-Net writes
for such a case holds 0 inside and -1 outside the nonzero crop mask.

Every file of a case is first checked to be complete (``image_integrity.py``: a truncated ``.nii.gz`` stops the run,
naming the file). Cases run in ``num_processes`` spawned worker processes (``-np``, as nnU-Net's ``-np``), with a
progress bar. Each case is written to the cache's ``.tmp`` folder and committed by the main process when complete
(see ``cache.py``): an interrupted run resumes with the cases that are not complete.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from os.path import join

from tqdm import tqdm

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.unlabelled.cache import UnlabelledCache
from nnunet_polycl.unlabelled.discovery import UnlabelledCase
from nnunet_polycl.unlabelled.image_integrity import check_complete_image


@dataclass(frozen=True)
class PreprocessJob:
    """One case to preprocess: everything a worker process needs (picklable)."""

    case_id: str
    files: tuple[str, ...]
    output_truncated: str
    plans: dict
    configuration: str
    dataset_json: dict


def preprocess_one(job: PreprocessJob) -> str:
    """Check that the case's files are complete, then run nnU-Net's preprocessor of the plans on it (no label file);
    returns the case identifier."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(job.plans)
    configuration_manager = plans_manager.get_configuration(job.configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    for file in job.files:
        check_complete_image(file)
    try:
        preprocessor.run_case_save(job.output_truncated, list(job.files), None, plans_manager,
                                   configuration_manager, job.dataset_json)
    except Exception as e:  # re-raised with the case named; nothing of the case is committed
        raise PolyCLUserError(f"nnU-Net's preprocessor failed on {', '.join(job.files)}: {type(e).__name__}: {e}. "
                              f"Check that the file is a readable image of the dataset's kind.") from None
    return job.case_id


def case_record(case: UnlabelledCase, image_sha256: str, plans_sha256: str, ctx: PlansContext,
                written_truncated: str) -> dict:
    """The cache record of a just-written case: sources, checksums, and the geometry the slice index needs."""
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    properties = load_pickle(written_truncated + ".pkl")
    shape = [int(s) for s in blosc2.open(urlpath=written_truncated + ".b2nd", mode="r").shape]
    return {
        "case": case.case_id, "files": list(case.files), "image_sha256": image_sha256, "plans_sha256": plans_sha256,
        "plans_identifier": ctx.plans_identifier, "configuration": ctx.configuration,
        "preprocessor": ctx.configuration_manager.preprocessor_name, "shape": shape,
        # along the slice axis (after transpose_forward): slices of the raw image, first one kept by the crop
        "raw_slices": int(properties["shape_before_cropping"][0]),
        "first_slice": int(properties["bbox_used_for_cropping"][0][0]),
    }


def preprocess_cases(ctx: PlansContext, cache: UnlabelledCache, cases: Sequence[tuple[UnlabelledCase, str]],
                     plans_sha256: str, num_processes: int, progress: bool = True) -> dict[str, dict]:
    """Preprocess ``cases`` (``(case, image checksum)`` pairs) into ``cache`` (with a progress bar unless
    ``progress`` is False); returns the new records by case id.

    Raises:
        PolyCLUserError: a case nnU-Net's preprocessor cannot process (named; completed cases stay cached).
    """
    if not cases:
        return {}
    cache.prepare_folders()
    jobs = {case.case_id: PreprocessJob(case.case_id, case.files, join(cache.tmp_folder, case.case_id), ctx.plans,
                                        ctx.configuration, ctx.dataset_json) for case, _ in cases}
    by_id = {case.case_id: (case, checksum) for case, checksum in cases}
    for case_id in jobs:
        cache.invalidate(case_id)
    records: dict[str, dict] = {}

    def commit(case_id: str) -> None:
        case, checksum = by_id[case_id]
        record = case_record(case, checksum, plans_sha256, ctx, jobs[case_id].output_truncated)
        cache.commit(case_id, jobs[case_id].output_truncated, record)
        records[case_id] = record

    with tqdm(total=len(jobs), desc=f"Preprocessing unlabelled scans of {cache.source}", unit="case",
              disable=not progress) as bar:
        if num_processes <= 1:
            for job in jobs.values():
                commit(preprocess_one(job))
                bar.update()
        else:
            _run_in_pool(list(jobs.values()), num_processes, commit, bar)
    return records


def _run_in_pool(jobs: list[PreprocessJob], num_processes: int, commit, bar: tqdm) -> None:
    """Run ``jobs`` in spawned worker processes; commit each finished case in this process."""
    pool = ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=multiprocessing.get_context("spawn"))
    try:
        for future in as_completed([pool.submit(preprocess_one, job) for job in jobs]):
            commit(future.result())
            bar.update()
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        raise PolyCLUserError(f"A preprocessing worker process died (often: out of memory). The cases finished so "
                              f"far are kept; run the command again with a smaller -np (was {num_processes}).") from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # no worker keeps writing into .tmp after an error
        raise
    pool.shutdown(wait=False)  # every case is committed; the idle workers exit in the background
