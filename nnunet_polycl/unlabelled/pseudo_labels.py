"""Pseudo-labels, ``--organ-status-from RESULTS_FOLDER``: a trained nnU-Net model predicts each unlabelled scan once.

- The folder is an nnU-Net model folder as ``nnUNetv2_train`` writes it (``plans.json``, ``dataset.json``,
  ``fold_X/checkpoint_final.pth``; e.g. ``$nnUNet_results/Dataset003_Liver/nnUNetTrainerPolyCL_Baseline__nnUNetPlans__2d``).
  Its numbered folds with a final checkpoint are ensembled, as ``nnUNetv2_predict`` does by default (``fold_all``
  when there is no numbered fold).
- A model of the same dataset must have been trained with the dataset's current plans (its ``plans.json`` equal to
  the dataset's plans file); otherwise it is an error. A model of another dataset is refused unless the user opts in
  (``--organ-status-other-dataset``); it must then take the dataset's number of channels, and the target organ is
  found by label name. The choice is recorded in ``config.json``.
- Prediction goes through nnU-Net's own ``nnUNetPredictor`` (the model's preprocessing, sliding window, mirroring
  as trained, fold ensemble) and gives a segmentation in the raw image's geometry. nnU-Net's preprocessor of the
  dataset's plans then maps it onto the preprocessed scan exactly as it maps a training label. Per slice the organ's
  area is counted inside the centre crop the encoder sees; a slice has the organ when that area is at least
  ``--min-organ-area`` pixels (of the preprocessed slice).
- Areas are cached per scan and model (``organ_status/<model>/CASE.json`` in the scan's cache folder), invalidated
  when the image, the dataset's plans or the model's checkpoints change; a rerun predicts only what is missing.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os.path import abspath, isdir, isfile, join

import numpy as np

from nnunet_polycl.checkpoint import atomic_write_json, file_sha256
from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.slice_index import encoder_view
from nnunet_polycl.unlabelled.cache import UnlabelledCache
from nnunet_polycl.unlabelled.discovery import UnlabelledCase, dataset_channels

CHECKPOINT = "checkpoint_final.pth"
OTHER_DATASET_FLAG = "--organ-status-other-dataset"


@dataclass(frozen=True)
class PseudoLabelModel:
    """A validated model folder: which folds it ensembles, their checkpoints' checksums, which labels are the organ."""

    folder: str
    dataset_name: str
    other_dataset: bool
    folds: tuple[str, ...]
    checkpoint_sha256: dict[str, str]
    target_values: tuple[int, ...] | None  # the model's label values that count as the organ; None: any foreground

    @property
    def key(self) -> str:
        """Names the model's cache: changes with the folder, the folds and every checkpoint's content."""
        text = json.dumps([self.folder, self.folds, self.checkpoint_sha256], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def record(self) -> dict:
        return {"folder": self.folder, "dataset_name": self.dataset_name, "other_dataset_opt_in": self.other_dataset,
                "folds": list(self.folds), "checkpoint": CHECKPOINT, "checkpoint_sha256": self.checkpoint_sha256,
                "target_label_values": None if self.target_values is None else list(self.target_values),
                "cache_key": self.key}


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _folds(folder: str) -> tuple[str, ...]:
    names = [n for n in os.listdir(folder) if n.startswith("fold_") and isfile(join(folder, n, CHECKPOINT))]
    numbered = sorted((n[len("fold_"):] for n in names if n[len("fold_"):].isdigit()), key=int)
    if numbered:
        return tuple(numbered)
    if "fold_all" in names:
        return ("all",)
    raise PolyCLUserError(f"--organ-status-from {folder} has no fold_X/{CHECKPOINT}: the model has not finished "
                          f"training. Finish nnUNetv2_train (or point at the folder of a trained model).")


def _plans_differences(model: dict, ours: dict) -> list[str]:
    keys = sorted(set(model) | set(ours))
    differ = [k for k in keys if model.get(k) != ours.get(k)]
    if "configurations" in differ:
        configs = sorted(set(model.get("configurations", {})) | set(ours.get("configurations", {})))
        differ += [f"configurations.{c}" for c in configs
                   if model.get("configurations", {}).get(c) != ours.get("configurations", {}).get(c)]
    return differ


def _label_values(labels: dict, name: str) -> list[int]:
    value = labels[name]
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _target_values_by_name(model_json: dict, ctx: PlansContext, label_values: Sequence[int] | None,
                           folder: str) -> tuple[int, ...]:
    ours = {k: v for k, v in ctx.dataset_json["labels"].items() if k not in ("background", "ignore")}
    wanted = [n for n in ours if label_values is None or set(_label_values(ours, n)) & set(label_values)]
    theirs = {k: v for k, v in model_json["labels"].items() if k not in ("background", "ignore")}
    missing = [n for n in wanted if n not in theirs]
    if missing and (label_values is not None or len(missing) == len(wanted)):
        raise PolyCLUserError(
            f"--organ-status-from {folder}: the model (another dataset) has no label named {', '.join(missing)}; it "
            f"predicts {', '.join(theirs)}. The organ is matched by label name: choose a --label both datasets have.")
    return tuple(sorted({v for n in wanted if n in theirs for v in _label_values(theirs, n)}))


def check_model_folder(folder: str, ctx: PlansContext, label_values: Sequence[int] | None,
                       other_dataset_ok: bool) -> PseudoLabelModel:
    """Validate ``--organ-status-from`` without loading the network.

    Raises:
        PolyCLUserError: not a trained model folder; a model of this dataset trained with other plans; a model of
            another dataset without the opt-in; another channel count; the target label missing from the model.
    """
    folder = abspath(folder)
    if not (isdir(folder) and isfile(join(folder, "plans.json")) and isfile(join(folder, "dataset.json"))):
        raise PolyCLUserError(
            f"--organ-status-from {folder} is not an nnU-Net model folder (it needs plans.json, dataset.json and "
            f"fold_X/{CHECKPOINT}, as nnUNetv2_train writes them, e.g. $nnUNet_results/{ctx.dataset_name}/"
            f"nnUNetTrainer__{ctx.plans_identifier}__2d).")
    plans, model_json = _load_json(join(folder, "plans.json")), _load_json(join(folder, "dataset.json"))
    name = plans.get("dataset_name", "?")
    other = name != ctx.dataset_name
    if other and not other_dataset_ok:
        raise PolyCLUserError(
            f"--organ-status-from {folder} is a model of {name}, not of {ctx.dataset_name}. Its pseudo-labels may "
            f"not mean the same organ. To use it anyway pass {OTHER_DATASET_FLAG} (recorded in config.json).")
    if not other and plans != ctx.plans:
        raise PolyCLUserError(
            f"--organ-status-from {folder} was trained with plans that differ from {ctx.dataset_name}'s "
            f"{ctx.plans_identifier}.json (differences: {', '.join(_plans_differences(plans, ctx.plans)[:6])}). The "
            f"dataset was planned again after training, or another plans identifier was used: retrain the model, "
            f"or pass the matching -p.")
    if len(dataset_channels(model_json)) != len(dataset_channels(ctx.dataset_json)):
        raise PolyCLUserError(
            f"--organ-status-from {folder}: the model takes {len(dataset_channels(model_json))} channel(s), "
            f"{ctx.dataset_name} has {len(dataset_channels(ctx.dataset_json))}.")
    if plans.get("image_reader_writer") != ctx.plans.get("image_reader_writer"):
        raise PolyCLUserError(
            f"--organ-status-from {folder}: the model reads images with {plans.get('image_reader_writer')}, "
            f"{ctx.dataset_name} with {ctx.plans.get('image_reader_writer')}; their axis orders may differ, so its "
            f"predictions cannot be mapped onto this dataset's scans.")
    folds = _folds(folder)
    targets = _target_values_by_name(model_json, ctx, label_values, folder) if other else \
        (None if label_values is None else tuple(label_values))
    checksums = {f: file_sha256(join(folder, f"fold_{f}", CHECKPOINT)) for f in folds}
    return PseudoLabelModel(folder, name, other, folds, checksums, targets)


def organ_areas(segmentation: np.ndarray, patch_size: Sequence[int]) -> dict[str, list[int]]:
    """Per foreground label value of a preprocessed (Z, Y, X) segmentation: its area in each slice's encoder crop."""
    view = encoder_view(segmentation, tuple(patch_size))
    flat = view.reshape(view.shape[0], -1)
    return {str(int(v)): (flat == v).sum(axis=1).astype(int).tolist() for v in np.unique(flat) if v > 0}


def pseudo_status(areas: dict[str, list[int]], n_slices: int, target_values: Sequence[int] | None,
                  min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """(organ, known) per slice: the target labels' summed area in the crop is at least ``min_area`` pixels."""
    total = np.zeros(n_slices, dtype=np.int64)
    for value, per_slice in areas.items():
        if target_values is None or int(value) in target_values:
            total += np.asarray(per_slice, dtype=np.int64)
    return total >= min_area, np.ones(n_slices, dtype=bool)


class PseudoLabeller:
    """Predicts organ areas of unlabelled scans with a :class:`PseudoLabelModel` and caches them per scan."""

    def __init__(self, model: PseudoLabelModel, ctx: PlansContext, plans_sha256: str, device):
        self.model, self.ctx, self.plans_sha256, self.device = model, ctx, plans_sha256, device
        self._predictor = None

    def _status_path(self, cache: UnlabelledCache, case_id: str) -> str:
        return join(cache.root, "organ_status", self.model.key, case_id + ".json")

    def cached_areas(self, cache: UnlabelledCache, case_id: str, image_sha256: str) -> dict | None:
        """The cached areas of a scan if made from this image, these plans and this model; else None."""
        path = self._status_path(cache, case_id)
        if not isfile(path):
            return None
        try:
            entry = _load_json(path)
        except (OSError, ValueError):
            return None
        current = (entry.get("image_sha256"), entry.get("plans_sha256")) == (image_sha256, self.plans_sha256)
        return entry["areas"] if current else None

    def predict(self, cache: UnlabelledCache, case: UnlabelledCase, image_sha256: str, record: dict) -> dict:
        """Predict one scan, map it onto its preprocessed slices, cache and return the areas per label and slice."""
        reader = self._initialised().plans_manager.image_reader_writer_class()
        image, properties = reader.read_images(list(case.files))
        segmentation = self._predictor.predict_single_npy_array(image, copy.deepcopy(properties), None, None, False)
        preprocessor = self.ctx.configuration_manager.preprocessor_class(verbose=False)
        _, seg, _ = preprocessor.run_case_npy(image, np.asarray(segmentation, dtype=np.int16)[None], properties,
                                              self.ctx.plans_manager, self.ctx.configuration_manager,
                                              self.ctx.dataset_json)
        if list(seg.shape[1:]) != list(record["shape"][1:]):
            raise PolyCLUserError(f"Pseudo-label of {case.key} has shape {list(seg.shape[1:])} after preprocessing, "
                                  f"the cached scan {record['shape'][1:]}: delete {cache.root} and run again.")
        areas = organ_areas(seg[0], self.ctx.patch_size)
        path = self._status_path(cache, case.case_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json({"image_sha256": image_sha256, "plans_sha256": self.plans_sha256,
                           "model": self.model.record(), "areas": areas}, path)
        return areas

    def _initialised(self):
        """nnU-Net's predictor for the model folder (built on first use; finds PolyCL's trainers too)."""
        if self._predictor is None:
            import torch
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            from nnunet_polycl.environment import temporary_environment, trainer_directory

            device = torch.device(self.device)
            predictor = nnUNetPredictor(use_mirroring=True, perform_everything_on_device=device.type == "cuda",
                                        device=device, verbose=False, allow_tqdm=False)
            extra = os.environ.get("nnUNet_extTrainer")
            with temporary_environment({"nnUNet_extTrainer": trainer_directory() + (os.pathsep + extra if extra
                                                                                     else "")}):
                predictor.initialize_from_trained_model_folder(
                    self.model.folder, [f if f == "all" else int(f) for f in self.model.folds], CHECKPOINT)
            self._predictor = predictor
        return self._predictor
