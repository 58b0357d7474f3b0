"""Which 2D slices pre-training draws from, and whether each contains the target organ.

A slice is ``data[:, z]`` of a case's nnU-Net-preprocessed array (C, Z, Y, X): the slice axis of the ``2d``
configuration after ``transpose_forward``. Its organ status comes from the preprocessed segmentation (one read per
case, vectorised over slices). nnU-Net sets the segmentation to -1 outside the crop mask, so "contains the organ"
is ``seg > 0`` (or ``seg`` in the chosen label values), never ``seg != 0``.

Organ status from the pixels the encoder sees: the encoder gets each slice centre-cropped (or padded) to the plans'
2D patch size (``pretraining/slice_data.py``), and nnU-Net clips that patch to the median image shape, so about half
the scans of a dataset are larger than the patch. The status is therefore computed on exactly that centre crop
(:func:`centered_bbox`, shared with the slice reader): an organ that lies only outside the crop does not count. The
crop is fixed (the same every epoch), so the status is computed once, when the index is built; drawing random crops
per epoch would need the status recomputed per crop and per epoch for no gain while the reader crops the centre.

Unknown organ status: nnU-Net needs a label map for every training case; unannotated (parts of) scans are marked
with the dataset's ignore label. A slice with no organ voxel that contains ignore-labelled voxels may hide the organ,
so its status is unknown (``organ_known`` False). Strategy S uses such slices; O and M refuse them
(see ``nnunet_polycl.sampling``). Slices of unlabelled scans (``nnunet_polycl.unlabelled``) without a weak label or
pseudo-label are unknown too; pre-training leaves those out of O and M instead (and logs how many).

The scans of one index may live in several preprocessed folders (the labelled dataset's and caches of unlabelled
scans): ``case_folders`` names the folder of each scan.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError


@dataclass(frozen=True)
class SliceIndex:
    """One row per slice: its scan, position and organ status.

    Attributes:
        case_ids: the scans (training cases), sorted.
        scan: int32 [N], index into ``case_ids``.
        z: int32 [N], slice position along axis 1 of the preprocessed (C, Z, Y, X) array.
        organ: bool [N], the slice contains the target organ (False where unknown).
        organ_known: bool [N], the organ status is known (defaults to all True).
        case_folders: the preprocessed folder of each scan (same length as ``case_ids``), or None when the caller
            reads all scans from one folder it knows.
    """

    case_ids: tuple[str, ...]
    scan: np.ndarray
    z: np.ndarray
    organ: np.ndarray
    organ_known: np.ndarray = field(default=None)
    case_folders: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.scan))
        known = np.ones(n, dtype=bool) if self.organ_known is None else self.organ_known
        object.__setattr__(self, "case_ids", tuple(str(c) for c in self.case_ids))
        for name, value, dtype in (("scan", self.scan, np.int32), ("z", self.z, np.int32),
                                   ("organ", self.organ, bool), ("organ_known", known, bool)):
            array = np.asarray(value)
            if array.shape != (n,):
                raise ValueError(f"SliceIndex.{name} must have shape ({n},) like scan; got {array.shape}.")
            object.__setattr__(self, name, array.astype(dtype, copy=False))
        if n and (self.scan.min() < 0 or self.scan.max() >= len(self.case_ids)):
            raise ValueError(f"SliceIndex.scan must index into case_ids (0..{len(self.case_ids) - 1}); "
                             f"got values {self.scan.min()}..{self.scan.max()}.")
        if self.case_folders is not None:
            object.__setattr__(self, "case_folders", tuple(str(f) for f in self.case_folders))
            if len(self.case_folders) != len(self.case_ids):
                raise ValueError(f"SliceIndex.case_folders must name one folder per case ({len(self.case_ids)}); "
                                 f"got {len(self.case_folders)}.")

    def __len__(self) -> int:
        return len(self.scan)

    def subset(self, mask: np.ndarray) -> SliceIndex:
        """The rows selected by a boolean mask or an index array (``case_ids`` unchanged)."""
        return SliceIndex(self.case_ids, self.scan[mask], self.z[mask], self.organ[mask], self.organ_known[mask],
                          self.case_folders)

    @staticmethod
    def concatenate(parts: Sequence[SliceIndex]) -> SliceIndex:
        """One index holding the scans and rows of ``parts`` in order (each part must name its ``case_folders``)."""
        if any(p.case_folders is None for p in parts):
            raise ValueError("SliceIndex.concatenate needs case_folders on every part (scans of several folders).")
        offsets = np.cumsum([0] + [len(p.case_ids) for p in parts])
        return SliceIndex(
            tuple(c for p in parts for c in p.case_ids),
            np.concatenate([p.scan.astype(np.int64) + o for p, o in zip(parts, offsets, strict=False)]),
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("z", "organ", "organ_known")),
            tuple(f for p in parts for f in p.case_folders))

    def unknown_cases(self) -> list[str]:
        """Cases with at least one slice of unknown organ status."""
        return [self.case_ids[i] for i in np.unique(self.scan[~self.organ_known])]


def resolve_labels(dataset_json: dict, labels: Sequence[str | int] | None) -> tuple[int, ...] | None:
    """Turn label names or values of dataset.json's ``labels`` into the segmentation values that mean "organ".

    A region name (region-based datasets) stands for all label values of the region. ``None`` means any foreground:
    returns None (``seg > 0``), or, when the dataset has an ignore label, all foreground values except it.

    Raises:
        PolyCLUserError: unknown name or value, or background; the message lists the valid ones.
    """
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    label_dict = dataset_json["labels"]
    manager = LabelManager(label_dict, dataset_json.get("regions_class_order"))
    foreground = [int(v) for v in manager.all_labels if v != 0]
    if labels is None:
        return tuple(foreground) if manager.has_ignore_label else None
    names = {k: v for k, v in label_dict.items() if k not in ("background", "ignore")}
    values: set[int] = set()
    for label in labels:
        text = str(label).strip()
        if text in names:
            region = names[text]
            values.update(int(v) for v in (region if isinstance(region, (list, tuple)) else [region]))
        elif text.lstrip("-").isdigit() and int(text) in foreground:
            values.add(int(text))
        else:
            raise PolyCLUserError(
                f"Unknown target label {label!r}. dataset.json 'labels' defines: "
                f"{', '.join(f'{k}={v}' for k, v in names.items())}. Pass one or more of these names or the values "
                f"{foreground} (background and the ignore label are not targets)."
            )
    values.discard(0)
    if not values:
        raise PolyCLUserError(f"Target labels {list(labels)} contain only background; choose a foreground label.")
    return tuple(sorted(values))


def middle_slices(n_slices: int, slice_fraction: float) -> tuple[int, int]:
    """``(start, stop)`` of the middle ``slice_fraction`` of ``n_slices`` slices (at least one slice)."""
    keep = min(n_slices, max(1, int(round(n_slices * slice_fraction))))
    start = (n_slices - keep) // 2
    return start, start + keep


def centered_bbox(shape: tuple[int, ...], size: tuple[int, ...]) -> list[list[int]]:
    """Half-open bounding box of ``size`` centred on an array of ``shape`` (negative / too large bounds = padding).

    The crop the encoder sees of each slice (``shape``: the slice's Y, X; ``size``: the plans' 2D patch size).
    """
    return [[(s - t) // 2, (s - t) // 2 + t] for s, t in zip(shape, size, strict=True)]


def encoder_view(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The part of ``array`` (..., Y, X) inside the centre crop of ``size`` (padding holds no pixels: not added)."""
    box = centered_bbox(tuple(array.shape[-2:]), tuple(size))
    (y0, y1), (x0, x1) = ((max(lo, 0), min(hi, s)) for (lo, hi), s in zip(box, array.shape[-2:], strict=True))
    return array[..., y0:y1, x0:x1]


def check_slice_fraction(slice_fraction: float) -> None:
    """Raise ValueError unless ``slice_fraction`` is in (0, 1]."""
    if not 0 < slice_fraction <= 1:
        raise ValueError(f"slice_fraction must be in (0, 1] (0.3 = middle 30% of each scan); got {slice_fraction}.")


def index_from_statuses(case_ids: Sequence[str], case_folders: Sequence[str],
                        statuses: Sequence[tuple[np.ndarray, np.ndarray]], slice_fraction: float = 1.0) -> SliceIndex:
    """The index of scans whose per-slice ``(organ, organ_known)`` arrays (one entry per slice) are given.

    Keeps the middle ``slice_fraction`` of each scan's slices (see :func:`middle_slices`).
    """
    check_slice_fraction(slice_fraction)
    parts = []
    for scan, (organ, known) in enumerate(statuses):
        start, stop = middle_slices(len(organ), slice_fraction)
        parts.append((np.full(stop - start, scan), np.arange(start, stop), organ[start:stop], known[start:stop]))
    if not parts:
        return SliceIndex((), np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), ())
    scan, z, organ, known = (np.concatenate(column) for column in zip(*parts, strict=True))
    return SliceIndex(tuple(case_ids), scan, z, organ, known, tuple(case_folders))


def build_slice_index(ctx: PlansContext, case_ids: Sequence[str], labels: Sequence[int] | None = None,
                      slice_fraction: float = 1.0) -> SliceIndex:
    """Index the slices of ``case_ids`` in the preprocessed data of ``ctx``.

    The organ status of a slice is computed on the centre crop of the plans' 2D patch size (what the encoder sees).

    Args:
        ctx: plans context of the ``2d`` configuration (``ctx.data_folder`` holds the preprocessed cases).
        case_ids: the scans to use (e.g. the training cases of a fold); sorted in the result.
        labels: segmentation values that count as the organ (see ``resolve_labels``); None: any foreground.
        slice_fraction: in (0, 1]; keep the middle fraction of each scan's slices (0.3 = the paper's middle 30%).

    Raises:
        ValueError: slice_fraction outside (0, 1], or an empty ``labels``.
        PolyCLUserError: no cases, or a case missing from the preprocessed data.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if labels is not None and len(labels) == 0:
        raise ValueError("labels must be None (any foreground) or name at least one value; got an empty sequence.")
    check_slice_fraction(slice_fraction)
    ids = sorted(set(case_ids))
    if not ids:
        raise PolyCLUserError(f"No cases to index in {ctx.data_folder}.")
    dataset_class = infer_dataset_class(ctx.data_folder)
    missing = sorted(set(ids) - set(dataset_class.get_identifiers(ctx.data_folder)))
    if missing:
        raise PolyCLUserError(f"Cases {missing[:5]} are not in {ctx.data_folder}; re-run nnUNetv2_preprocess or "
                              f"fix the split file.")
    if labels is None:
        labels = resolve_labels(ctx.dataset_json, None)
    ignore = ctx.dataset_json["labels"].get("ignore")
    dataset = dataset_class(ctx.data_folder, list(ids))
    statuses = []
    for case in ids:
        _, seg, _, _ = dataset.load_case(case)
        statuses.append(slice_status(encoder_view(np.asarray(seg[0]), ctx.patch_size), labels, ignore))
    return index_from_statuses(ids, [ctx.data_folder] * len(ids), statuses, slice_fraction)


def slice_status(seg: np.ndarray, labels: Sequence[int] | None,
                 ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per slice of a (Z, Y, X) segmentation: (contains the organ, organ status known)."""
    flat = seg.reshape(seg.shape[0], -1)
    organ = (flat > 0).any(axis=1) if labels is None else np.isin(flat, labels).any(axis=1)
    if ignore is None:
        return organ, np.ones_like(organ)
    return organ, organ | ~(flat == ignore).any(axis=1)
