"""Per-mask segmentation metrics: volumetric Dice and symmetric surface Hausdorff distances in millimetres.

Definitions (one binary reference mask R, one binary prediction mask P on the same voxel grid, spacing in mm per
array axis, in the same axis order as the array; nnU-Net's readers return it that way as ``props['spacing']``):

- Dice = 2 |R and P| / (|R| + |P|), counted over the whole volume of one case (volumetric, not per slice).
- Surface S(M) of a mask M: the voxels of M with at least one of their 2*ndim face neighbours outside M (outside the
  image counts as outside M), i.e. ``M & ~binary_erosion(M)`` with the face-connected structuring element. Axes of
  length 1 (a 2D image stored as one slice) are dropped first, so a 2D mask gets an in-plane surface.
- Directed surface distances d(A -> B): for every voxel of S(A), the Euclidean distance in mm (voxel centres, the
  anisotropic spacing applied per axis) to the nearest voxel of S(B).
- HD = max(max d(R -> P), max d(P -> R)): the symmetric Hausdorff distance between the two surfaces.
- HD95 = max(q95 d(R -> P), q95 d(P -> R)), q95 being the 95th percentile with linear interpolation (numpy's
  default, ``torch.quantile``'s too): the larger of the two directed 95th percentiles. This is what
  ``monai.metrics.compute_hausdorff_distance(..., percentile=95)`` computes. It differs from medpy's ``hd95`` (the
  95th percentile of the union of both directed sets), which is usually a little smaller.

Empty masks (no crash, no NaN/inf returned; callers count these cases apart instead of averaging them):

============================  ======  ==============  =========================
case                          Dice    HD and HD95     ``status``
============================  ======  ==============  =========================
both masks non-empty          value   value           ``ok``
reference empty, prediction   0.0     None            ``empty_reference``
prediction empty, reference   0.0     None            ``empty_prediction``
both empty                    None    None            ``both_empty``
============================  ======  ==============  =========================

Volumes (ml) count the mask's voxels times the product of all spacings (for a 2D image, nnU-Net's readers put a
placeholder spacing on the flat axis, so there the volume is not meaningful; Dice and distances are).

Dice is None when both are empty because 0/0 is undefined (nnU-Net's evaluation reports NaN there too); a surface
distance to an empty set is undefined (MONAI would return inf or NaN).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn
from scipy.ndimage import binary_erosion, distance_transform_edt, find_objects, generate_binary_structure

STATUSES = ("ok", "empty_reference", "empty_prediction", "both_empty")
HD_PERCENTILE = 95.0


@dataclass(frozen=True)
class MaskMetrics:
    """Metrics of one binary prediction against one binary reference (see the module docstring)."""

    status: str
    dice: float | None
    hd: float | None
    hd95: float | None
    volume_reference_ml: float
    volume_prediction_ml: float

    def as_dict(self) -> dict:
        return asdict(self)


def _check_pair(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    if reference.shape != prediction.shape:
        raise ValueError(f"reference and prediction must have the same shape, got {reference.shape} and "
                         f"{prediction.shape}")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (reference.ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must hold one positive value (mm) per array axis ({reference.ndim}), "
                         f"got {spacing.tolist()}")
    return spacing


def _drop_flat_axes(masks: tuple[np.ndarray, ...], spacing: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Remove axes of length 1 (keeping at least one axis), from the masks and from the spacing alike."""
    keep = [a for a, n in enumerate(masks[0].shape) if n > 1] or [masks[0].ndim - 1]
    shape = tuple(masks[0].shape[a] for a in keep)
    return tuple(m.reshape(shape) for m in masks), spacing[keep]


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus one voxel (clipped to the image): surfaces and
    distances are unchanged, the distance transforms get cheaper."""
    box = find_objects((a | b).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, a.shape, strict=True))
    return a[box], b[box]


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean map of the voxels of ``mask`` with at least one face neighbour outside it (or outside the image)."""
    mask = np.asarray(mask, dtype=bool)
    structure = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=structure, border_value=0)


def directed_surface_distances(from_mask: np.ndarray, to_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from every surface voxel of ``from_mask`` to the nearest surface voxel of ``to_mask``.

    Both masks must be non-empty; the result has one entry per surface voxel of ``from_mask``.
    """
    from_mask, to_mask = np.asarray(from_mask, dtype=bool), np.asarray(to_mask, dtype=bool)
    spacing = _check_pair(from_mask, to_mask, spacing)
    if not from_mask.any() or not to_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    (from_mask, to_mask), spacing = _drop_flat_axes((from_mask, to_mask), spacing)
    from_mask, to_mask = _crop_to_union(from_mask, to_mask)
    distance_to_surface = distance_transform_edt(~surface_voxels(to_mask), sampling=spacing)
    return distance_to_surface[surface_voxels(from_mask)]


def hausdorff_distances(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                        percentile: float = HD_PERCENTILE) -> tuple[float, float]:
    """``(HD, HD<percentile>)`` in mm between two non-empty masks, as defined in the module docstring."""
    forward = directed_surface_distances(reference, prediction, spacing)
    backward = directed_surface_distances(prediction, reference, spacing)
    hd = max(forward.max(), backward.max())
    hd_p = max(np.percentile(forward, percentile), np.percentile(backward, percentile))
    return float(hd), float(hd_p)


def dice_coefficient(reference: np.ndarray, prediction: np.ndarray) -> float | None:
    """Volumetric Dice of two boolean masks (nnU-Net's TP/FP/FN counting); None if both are empty."""
    tp, fp, fn, _ = compute_tp_fp_fn_tn(np.asarray(reference, dtype=bool), np.asarray(prediction, dtype=bool))
    if tp + fp + fn == 0:
        return None
    return float(2 * tp / (2 * tp + fp + fn))


def mask_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                 ignore_mask: np.ndarray | None = None) -> MaskMetrics:
    """Dice, HD, HD95 and both volumes of one case and one label, with the empty-mask policy of this module.

    Args:
        reference, prediction: boolean masks of identical shape.
        spacing: voxel size in mm per array axis.
        ignore_mask: voxels to leave out of every metric (nnU-Net's ignore label), or None.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    spacing = _check_pair(reference, prediction, spacing)
    if ignore_mask is not None:
        reference, prediction = reference & ~ignore_mask, prediction & ~ignore_mask
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes = dict(volume_reference_ml=float(reference.sum()) * voxel_ml,
                   volume_prediction_ml=float(prediction.sum()) * voxel_ml)
    has_ref, has_pred = bool(reference.any()), bool(prediction.any())
    if not has_ref and not has_pred:
        return MaskMetrics("both_empty", None, None, None, **volumes)
    if not has_ref or not has_pred:
        status = "empty_reference" if not has_ref else "empty_prediction"
        return MaskMetrics(status, 0.0, None, None, **volumes)
    hd, hd95 = hausdorff_distances(reference, prediction, spacing)
    return MaskMetrics("ok", dice_coefficient(reference, prediction), hd, hd95, **volumes)
