"""The unlabelled scans of one pre-training run, in two phases like ``polycl_pretrain`` itself.

1. :func:`check_unlabelled` validates every input and reads only (images found and named correctly, checksums,
   duplicates, ``--organ-slices`` against each scan's size, the ``--organ-status-from`` model folder): every bad input
   is an error before anything is written.
2. :meth:`UnlabelledPlan.materialise` writes the caches: preprocesses the scans that are not cached yet, predicts the
   pseudo-labels that are missing, and returns the scans' slice index with their organ status.

Organ status per unlabelled scan, in this order: a weak label (``--organ-slices``) when the scan is listed, else the
pseudo-label (``--organ-status-from``), else none. Strategy S uses every slice; O and M use only slices with a status.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from os.path import join

import numpy as np
from tqdm import tqdm

from nnunet_polycl.checkpoint import file_sha256
from nnunet_polycl.folder_lock import FolderLock
from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.slice_index import SliceIndex, index_from_statuses
from nnunet_polycl.unlabelled.cache import UnlabelledCache
from nnunet_polycl.unlabelled.checksums import ChecksumMemo
from nnunet_polycl.unlabelled.discovery import UnlabelledCase, discover_unlabelled
from nnunet_polycl.unlabelled.duplicates import dataset_image_checksums, split_duplicates
from nnunet_polycl.unlabelled.preprocess import preprocess_cases
from nnunet_polycl.unlabelled.pseudo_labels import PseudoLabeller, PseudoLabelModel, check_model_folder, pseudo_status
from nnunet_polycl.unlabelled.weak_labels import (
    Ranges,
    check_ranges,
    raw_slice_count,
    read_organ_slices,
    weak_status,
)

DEFAULT_MIN_ORGAN_AREA = 10
ORGAN_STRATEGIES = ("O", "M")


@dataclass(frozen=True)
class UnlabelledOptions:
    """The command's unlabelled-data options (``--unlabelled``, ``--organ-slices``, ``--organ-status-from``, ...)."""

    folders: tuple[str, ...]
    organ_slices: str | None = None
    organ_status_from: str | None = None
    other_dataset_model: bool = False
    min_organ_area: int = DEFAULT_MIN_ORGAN_AREA
    num_processes: int = 1
    count: int | None = None  # --unlabelled-count: only the first scans of the folders (None: all)
    progress: bool = True  # progress bars (polycl_experiment --no-progress: none)


@dataclass
class UnlabelledPlan:
    """Validated unlabelled inputs (nothing written yet); :meth:`materialise` builds the caches and the index."""

    ctx: PlansContext
    options: UnlabelledOptions
    scans: list[tuple[UnlabelledCase, str]]  # kept scans and their image checksums, in index order
    duplicates: list[dict]
    weak: dict[str, Ranges] | None
    model: PseudoLabelModel | None
    memo: ChecksumMemo
    plans_sha256: str
    caches: dict[str, UnlabelledCache] = field(default_factory=dict)
    not_counted: tuple[UnlabelledCase, ...] = ()  # scans after the first --unlabelled-count: kept in the caches

    @property
    def fingerprint(self) -> str:
        """Changes with any scan, the organ-slices file, the pseudo-label model or the minimum area."""
        text = json.dumps({
            "scans": [(case.key, checksum) for case, checksum in self.scans],
            "organ_slices": None if self.options.organ_slices is None else file_sha256(self.options.organ_slices),
            "model": None if self.model is None else self.model.key,
            "min_organ_area": self.options.min_organ_area if self.model is not None else None,
        }, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def materialise(self, device: str, slice_fraction: float) -> UnlabelledData:
        """Preprocess what is not cached, predict missing pseudo-labels, index the slices (writes the caches)."""
        records = self.preprocess()
        sources, statuses = self._statuses(records, device)
        index = index_from_statuses([case.case_id for case, _ in self.scans],
                                    [self.caches[case.source].data_folder for case, _ in self.scans],
                                    statuses, slice_fraction)
        return UnlabelledData(self, index, sources, statuses)

    def preprocess(self) -> dict[str, dict]:
        """Preprocess the scans that are not cached yet (writes the caches); returns every scan's record by key."""
        records: dict[str, dict] = {}
        for source, cache in self.caches.items():
            with FolderLock(cache.root, "preprocessing unlabelled scans", wait=True):
                records.update(self._preprocess_into(source, cache))
        self.memo.save()
        return records

    def _preprocess_into(self, source: str, cache: UnlabelledCache) -> dict[str, dict]:
        """Preprocess one folder's scans that ``cache`` lacks (the caller holds the cache's lock, so that two runs
        filling the same cache at once take turns); returns the records of the folder's scans by key."""
        mine = [(case, checksum) for case, checksum in self.scans if case.source == source]
        cache.remove_other_cases({case.case_id for case, _ in mine} |
                                 {case.case_id for case in self.not_counted if case.source == source})
        records, todo = {}, []
        for case, checksum in mine:
            record = cache.current_record(case.case_id, checksum, self.plans_sha256)
            if record is None:
                todo.append((case, checksum))
            else:
                records[case.key] = record
        if todo:
            print(f"{len(todo)} of {len(mine)} unlabelled scans of {source} need preprocessing "
                  f"(cache: {cache.root}).", flush=True)
        new = preprocess_cases(self.ctx, cache, todo, self.plans_sha256, self.options.num_processes,
                               self.options.progress)
        records.update({join(source, case_id): record for case_id, record in new.items()})
        return records

    def _statuses(self, records: dict[str, dict], device: str) -> tuple[list[str | None], list]:
        labeller = None if self.model is None else PseudoLabeller(self.model, self.ctx, self.plans_sha256, device)
        sources, statuses, to_predict = [], [], []
        for case, checksum in self.scans:
            record = records[case.key]
            n = record["shape"][1]
            if self.weak is not None and case.case_id in self.weak:
                sources.append("weak")
                statuses.append(weak_status(self.weak[case.case_id], record))
            elif labeller is not None:
                sources.append("pseudo")
                statuses.append(None)
                to_predict.append((len(statuses) - 1, case, checksum, record))
            else:
                sources.append(None)
                statuses.append((np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)))
        for position, case, checksum, record in tqdm(to_predict, desc="Organ status from the pseudo-label model",
                                                     unit="scan", disable=not to_predict or not self.options.progress):
            cache = self.caches[case.source]
            areas = labeller.cached_areas(cache, case.case_id, checksum)
            if areas is None:
                areas = labeller.predict(cache, case, checksum, record)
            statuses[position] = pseudo_status(areas, record["shape"][1], self.model.target_values,
                                               self.options.min_organ_area)
        return sources, statuses


@dataclass
class UnlabelledData:
    """The materialised unlabelled scans: their slice index (organ status where known) and what config.json records."""

    plan: UnlabelledPlan
    index: SliceIndex
    status_sources: list[str | None]  # per scan: "weak", "pseudo" or None
    statuses: list[tuple[np.ndarray, np.ndarray]]  # per scan and preprocessed slice: (organ, known)

    def for_strategy(self, strategy: str) -> tuple[SliceIndex, int]:
        """The rows a strategy uses and how many it leaves out (O / M: the slices without organ status)."""
        if strategy not in ORGAN_STRATEGIES:
            return self.index, 0
        known = self.index.organ_known
        return self.index.subset(known), int(np.count_nonzero(~known))

    def summary(self, strategy: str) -> str:
        """The log line about the unlabelled scans of this run."""
        used, left_out = self.for_strategy(strategy)
        counts = {kind: self.status_sources.count(kind) for kind in ("weak", "pseudo")}
        count = self.plan.options.count
        counted = "" if count is None else \
            f" (--unlabelled-count: the first {count} of {count + len(self.plan.not_counted)})"
        text = (f"Unlabelled: {len(self.plan.scans)} scans{counted} from {len(self.plan.caches)} folder(s), "
                f"{len(self.index)} slices ({int(np.count_nonzero(self.index.organ_known))} with organ status: "
                f"{counts['weak']} scans weak-labelled, {counts['pseudo']} pseudo-labelled, "
                f"{int(np.count_nonzero(self.index.organ))} with the organ)")
        if self.plan.duplicates:
            text += f"; {len(self.plan.duplicates)} duplicate(s) left out: " + "; ".join(
                f"{d['case']} = {d['same_as']} ({d['role']})" for d in self.plan.duplicates[:5])
        if strategy in ORGAN_STRATEGIES:
            text += (f"; {left_out} slices without organ status left out of {strategy} ({len(used)} unlabelled slices "
                     f"used)")
        return text

    def record(self, strategy: str) -> dict:
        """The ``unlabelled`` section of config.json."""
        options, model = self.plan.options, self.plan.model
        return {
            "folders": list(self.plan.caches), "cache_folders": [c.root for c in self.plan.caches.values()],
            "num_scans": len(self.plan.scans), "num_slices": len(self.index),
            "num_slices_left_out": self.for_strategy(strategy)[1], "fingerprint": self.plan.fingerprint,
            "count": options.count,
            "organ_slices": None if options.organ_slices is None else
            {"file": options.organ_slices, "sha256": file_sha256(options.organ_slices)},
            "organ_status_from": None if model is None else {**model.record(), "min_organ_area": options.min_organ_area},
            "duplicates": self.plan.duplicates,
            "scans": [{"case": case.key, "image_sha256": checksum, "status_source": source,
                       "status": None if source is None else
                       "".join("1" if o else "0" for o in organ)}
                      for (case, checksum), source, (organ, _) in
                      zip(self.plan.scans, self.status_sources, self.statuses, strict=True)],
        }


def check_options(options: UnlabelledOptions, strategy: str) -> None:
    """Flag combinations and numbers, before anything is read."""
    problems = [text for bad, text in (
        (not options.folders and (options.organ_slices or options.organ_status_from),
         "--organ-slices and --organ-status-from give the organ status of unlabelled scans: add --unlabelled FOLDER"),
        ((options.organ_slices or options.organ_status_from) and strategy not in ORGAN_STRATEGIES,
         f"--organ-slices / --organ-status-from are for strategies O and M; strategy {strategy} uses no organ status"),
        (options.other_dataset_model and not options.organ_status_from,
         "--organ-status-other-dataset only applies together with --organ-status-from"),
        (options.min_organ_area < 1, f"--min-organ-area must be >= 1 pixel (got {options.min_organ_area})"),
        (options.num_processes < 1, f"-np must be >= 1 (got {options.num_processes})"),
        (options.count is not None and not options.folders, "--unlabelled-count needs --unlabelled FOLDER"),
        (options.count is not None and options.count < 1,
         f"--unlabelled-count must be >= 1 (got {options.count}); to pre-train without unlabelled scans leave out "
         f"--unlabelled"),
    ) if bad]
    if problems:
        raise PolyCLUserError("; ".join(problems) + ".")


def check_unlabelled(ctx: PlansContext, options: UnlabelledOptions, train_ids: Sequence[str],
                     val_ids: Sequence[str], label_values: Sequence[int] | None) -> UnlabelledPlan:
    """Validate the unlabelled inputs of a run; reads files, writes nothing.

    Raises:
        PolyCLUserError: any bad input (the message names it and the fix).
    """
    cases = discover_unlabelled(options.folders, ctx.dataset_json)
    counted = first_scans(cases, options.count)
    memo = ChecksumMemo(ctx.preprocessed_folder)
    plans_sha256 = file_sha256(join(ctx.preprocessed_folder, ctx.plans_identifier + ".json"))
    checksums = [(case, memo.image_checksum(case.files)) for case in tqdm(
        counted, desc="Image checksums of the unlabelled scans", unit="scan",
        disable=len(counted) < 50 or not options.progress)]
    scans, duplicates = split_duplicates(checksums, dataset_image_checksums(ctx, memo), train_ids, val_ids)
    caches = {case.source: UnlabelledCache(ctx, case.source) for case in counted}
    weak = None
    if options.organ_slices is not None:
        weak = _checked_weak_labels(ctx, options.organ_slices, cases, scans, caches, plans_sha256)
    model = None if options.organ_status_from is None else \
        check_model_folder(options.organ_status_from, ctx, label_values, options.other_dataset_model)
    return UnlabelledPlan(ctx, options, scans, duplicates, weak, model, memo, plans_sha256, caches,
                          tuple(cases[len(counted):]))


def first_scans(cases: list[UnlabelledCase], count: int | None) -> list[UnlabelledCase]:
    """The first ``count`` scans (``--unlabelled-count``; None: all), in the order of :func:`discover_unlabelled`.

    Raises:
        PolyCLUserError: the folders hold fewer scans.
    """
    if count is None:
        return cases
    if count > len(cases):
        folders = ", ".join(dict.fromkeys(case.source for case in cases))
        raise PolyCLUserError(f"--unlabelled-count {count}: the --unlabelled folder(s) {folders} hold only "
                              f"{len(cases)} scans. Use a count of at most {len(cases)}, or add scans.")
    return cases[:count]


def _checked_weak_labels(ctx: PlansContext, path: str, cases: list[UnlabelledCase],
                         scans: list[tuple[UnlabelledCase, str]], caches: dict[str, UnlabelledCache],
                         plans_sha256: str) -> dict[str, Ranges]:
    ids = [case.case_id for case in cases]
    weak = read_organ_slices(path, ids)
    ambiguous = sorted(c for c in weak if ids.count(c) > 1)
    if ambiguous:
        raise PolyCLUserError(f"--organ-slices {path} names {', '.join(ambiguous[:5])}, which exist in several "
                              f"--unlabelled folders: give the scans unique names.")
    raw_slices = {}
    for case, checksum in scans:
        if case.case_id in weak:
            record = caches[case.source].current_record(case.case_id, checksum, plans_sha256)
            raw_slices[case.case_id] = record["raw_slices"] if record else raw_slice_count(ctx, case.files)
    check_ranges({c: r for c, r in weak.items() if c in raw_slices}, raw_slices, path)
    return weak
