"""The experiment's unlabelled scans (``--unlabelled``, ``--organ-slices``, ``--unlabelled-count``).

- Every pre-trained method pre-trains on the fold's labelled training scans plus the first N unlabelled scans
  (``polycl_pretrain --unlabelled FOLDER --unlabelled-count N``; N = 0: the labelled scans only).
- O and M take the organ status of those scans from the weak labels (``--organ-slices FILE``); O-pseudo from the
  pseudo-labels of the same seed's k-scan baseline run (``--organ-status-from`` its nnU-Net model folder).
- The identity records the folder, N, the checksums of those N scans and the organ-slices file's SHA-256, so that
  runs made from other scans are never mixed into one table.
- Everything is checked before anything runs, and the scans are preprocessed into ``polycl_pretrain``'s cache once,
  before the runs, so that parallel pre-trainings only read the cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from os.path import abspath, isdir, isfile, join

from nnunetv2.configuration import default_num_processes

from nnunet_polycl.checkpoint import file_sha256
from nnunet_polycl.environment import available_cpus
from nnunet_polycl.experiment.presets import Preset, ProtocolSettings, pretraining_strategy, uses_pseudo_labels
from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError, raw_unlabelled_paths, require_nnunet_folder
from nnunet_polycl.splits import training_cases
from nnunet_polycl.unlabelled import UnlabelledOptions, UnlabelledPlan, check_unlabelled, discover_unlabelled
from nnunet_polycl.unlabelled.scans import ORGAN_STRATEGIES, first_scans


@dataclass
class ExperimentUnlabelled:
    """The checked unlabelled inputs of an experiment; ``plan`` (None for N = 0) preprocesses them once."""

    folder: str | None
    organ_slices: str | None
    count: int
    scans_sha256: str | None = None
    plan: UnlabelledPlan | None = None
    warnings: list[str] = field(default_factory=list)

    def identity(self) -> dict:
        """The entries of the experiment's identity (N = 0: only the count; the scans then play no part)."""
        if self.count == 0:
            return {"unlabelled_count": 0}
        return {"unlabelled_folder": self.folder, "unlabelled_count": self.count,
                "unlabelled_scans_sha256": self.scans_sha256,
                "organ_slices_sha256": None if self.organ_slices is None else file_sha256(self.organ_slices)}

    def pretrain_arguments(self, method: str, baseline_model: str | None) -> list[str]:
        """The ``polycl_pretrain`` options of ``method`` (``baseline_model``: O-pseudo's pseudo-label model folder)."""
        if self.count == 0:
            return []
        arguments = ["--unlabelled", self.folder, "--unlabelled-count", str(self.count)]
        if uses_pseudo_labels(method):
            arguments += ["--organ-status-from", baseline_model]
        elif self.organ_slices is not None and pretraining_strategy(method) in ORGAN_STRATEGIES:
            arguments += ["--organ-slices", self.organ_slices]
        return arguments

    def description(self) -> str:
        """One line for the experiment's log: which unlabelled scans every pre-training uses."""
        if self.count == 0:
            return "Unlabelled scans: none (--unlabelled-count 0): every pre-training uses the fold's training scans only."
        return f"Unlabelled scans: {self.count} of {self.folder}, preprocessed once for every pre-training."

    def preprocess(self) -> None:
        """Preprocess the scans that are not cached yet (writes only polycl_pretrain's cache of the folder)."""
        if self.plan is not None:
            self.plan.preprocess()


def _default_inputs(preset: Preset, dataset_name: str, dataset_id: str) -> tuple[str, str | None]:
    """The raw dataset's unlabelled folder and organ-slices file (None when absent), for a preset that needs them."""
    folder, organ_slices = raw_unlabelled_paths(join(require_nnunet_folder("nnUNet_raw"), dataset_name))
    if not isdir(folder):
        raise PolyCLUserError(
            f"The {preset.name} preset pre-trains on unlabelled scans, expected in {folder}, which does not exist. "
            f"For the demo dataset write them with: polycl_demo make-dataset -d {dataset_id} --unlabelled 200 (adds "
            f"them to the existing dataset); for another dataset pass --unlabelled FOLDER [--organ-slices FILE].")
    return folder, organ_slices if isfile(organ_slices) else None


def _check_methods(methods: tuple[str, ...], settings: ProtocolSettings, count: int) -> None:
    pseudo = [m for m in methods if uses_pseudo_labels(m)]
    problems = [text for bad, text in (
        (pseudo and "baseline" not in methods,
         f"{', '.join(pseudo)} pre-trains on pseudo-labels of the same seed's k-scan baseline run: add baseline to "
         f"--methods"),
        (pseudo and settings.pretraining_seeds == "shared",
         f"{', '.join(pseudo)} pre-trains per seed and k (its pseudo-labels come from that seed's baseline): use "
         f"--pretraining-seeds per-seed"),
        (pseudo and count == 0,
         f"{', '.join(pseudo)} gives unlabelled scans their organ status from pseudo-labels, but this experiment "
         f"uses no unlabelled scans (--unlabelled-count 0 or no --unlabelled): drop it from --methods"),
    ) if bad]
    if problems:
        raise PolyCLUserError("; ".join(problems) + ".")


def _scans_sha256(plan: UnlabelledPlan, counted: list) -> str:
    """SHA-256 over the identifiers and image checksums of the counted scans (from the plan's checksum memo)."""
    listing = [(case.case_id, plan.memo.image_checksum(case.files)) for case in counted]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def check_experiment_unlabelled(folder: str | None, organ_slices: str | None, count: int | None, preset: Preset,
                                methods: tuple[str, ...], settings: ProtocolSettings, plans_ctx: PlansContext,
                                fold: int | str, dataset_id: str, progress: bool = True) -> ExperimentUnlabelled | None:
    """Validate the unlabelled options (reads only); None when the experiment uses no unlabelled scans. ``progress``:
    progress bars while the scans are checksummed and preprocessed.

    Raises:
        PolyCLUserError: a missing folder or file, too few scans, an unreadable organ-slices file, or a method that
            cannot be run as asked (O-pseudo without the baseline, with a shared pre-training, or without scans).
    """
    if folder is None and preset.unlabelled and count != 0:
        folder, default_slices = _default_inputs(preset, plans_ctx.dataset_name, dataset_id)
        organ_slices = organ_slices or default_slices
    if folder is None:
        if organ_slices is not None or count:
            raise PolyCLUserError("--organ-slices and --unlabelled-count describe unlabelled scans: add "
                                  "--unlabelled FOLDER.")
        _check_methods(methods, settings, 0)
        return ExperimentUnlabelled(None, None, 0) if count == 0 else None
    cases = discover_unlabelled([folder], plans_ctx.dataset_json)
    counted = first_scans(cases, count)
    _check_methods(methods, settings, len(counted))
    result = ExperimentUnlabelled(abspath(folder), None if organ_slices is None else abspath(organ_slices),
                                  len(counted))
    if not counted:
        return result
    train_ids, val_ids = training_cases(plans_ctx, fold, write_missing=False)
    options = UnlabelledOptions((result.folder,), result.organ_slices, count=len(counted),
                                num_processes=max(1, min(default_num_processes, available_cpus())), progress=progress)
    result.plan = check_unlabelled(plans_ctx, options, train_ids, val_ids, None)
    result.scans_sha256 = _scans_sha256(result.plan, counted)
    without_status = [m for m in methods if pretraining_strategy(m) in ORGAN_STRATEGIES and not uses_pseudo_labels(m)]
    if without_status and result.organ_slices is None:
        result.warnings.append(
            f"{', '.join(without_status)} use(s) only slices with an organ status, and no --organ-slices was given: "
            f"their pre-training leaves the {len(counted)} unlabelled scans out.")
    return result
