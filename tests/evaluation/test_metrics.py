"""Dice, HD and HD95 of ``nnunet_polycl.metrics``: closed-form cases, the empty-mask policy, and agreement with two
independent implementations: MONAI's ``compute_hausdorff_distance`` (same definition: surface = mask XOR its
face-connected erosion, symmetric = max of the two directed values, HD95 = max of the two directed 95th percentiles)
and a brute-force reference below (explicit neighbour test, all-pairs distances, hand-written percentile)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from scipy.ndimage import binary_erosion, gaussian_filter
from scipy.spatial.distance import cdist

from nnunet_polycl.metrics import (
    MaskMetrics,
    dice_coefficient,
    directed_surface_distances,
    hausdorff_distances,
    mask_metrics,
    surface_voxels,
)

ANISOTROPIC = (2.5, 0.7, 1.3)
TOL_MM = 1e-3


def box(shape, lower, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(lo, lo + n) for lo, n in zip(lower, size, strict=True))] = True
    return mask


def shifted(mask: np.ndarray, offset) -> np.ndarray:
    """``mask`` moved by ``offset`` voxels, zero-filled (no wrap-around)."""
    out = np.zeros_like(mask)
    src = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, mask.shape, strict=True))
    dst = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, mask.shape, strict=True))
    out[dst] = mask[src]
    return out


def brute_force_surface(mask: np.ndarray) -> np.ndarray:
    """Voxel coordinates (index units) of mask voxels having a face neighbour outside the mask or the image."""
    padded = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    outside_neighbour = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            outside_neighbour |= ~np.roll(padded, step, axis=axis)[core]
    return np.argwhere(mask & outside_neighbour)


def brute_force_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    pa = brute_force_surface(a) * np.asarray(spacing)
    pb = brute_force_surface(b) * np.asarray(spacing)
    return np.concatenate([cdist(chunk, pb).min(axis=1) for chunk in np.array_split(pa, max(1, len(pa) // 2000))])


def percentile_by_hand(values: np.ndarray, q: float) -> float:
    """Linear interpolation between the two order statistics around rank q/100 * (n - 1)."""
    v = np.sort(values)
    rank = q / 100 * (len(v) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return float(v[lo] + (rank - lo) * (v[hi] - v[lo]))


def brute_force_hd(reference, prediction, spacing) -> tuple[float, float]:
    d1 = brute_force_directed(reference, prediction, spacing)
    d2 = brute_force_directed(prediction, reference, spacing)
    return max(d1.max(), d2.max()), max(percentile_by_hand(d1, 95), percentile_by_hand(d2, 95))


def monai_hd(reference, prediction, spacing) -> tuple[float, float]:
    args = dict(y_pred=torch.from_numpy(prediction)[None, None], y=torch.from_numpy(reference)[None, None],
                include_background=True, spacing=[float(s) for s in spacing])
    return (compute_hausdorff_distance(**args).item(), compute_hausdorff_distance(**args, percentile=95).item())


def random_blob(shape, seed: int, sigma: float = 2.5) -> np.ndarray:
    return gaussian_filter(np.random.default_rng(seed).random(shape), sigma) > 0.5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_boxes_offset_by_d_mm_have_hd_d_and_closed_form_dice(axis):
    shift_voxels, size = 3, (10, 12, 8)
    reference = box((30, 30, 30), (5, 6, 7), size)
    offset = [0, 0, 0]
    offset[axis] = shift_voxels
    prediction = shifted(reference, offset)
    m = mask_metrics(reference, prediction, ANISOTROPIC)
    assert m.status == "ok"
    assert m.hd == pytest.approx(shift_voxels * ANISOTROPIC[axis], abs=1e-9)
    assert m.dice == pytest.approx((size[axis] - shift_voxels) / size[axis], abs=1e-12)
    assert m.volume_reference_ml == pytest.approx(np.prod(size) * np.prod(ANISOTROPIC) / 1000)


def test_hd95_of_plates_is_the_offset_and_ignores_a_small_outlier():
    reference = box((20, 20, 20), (5, 3, 3), (1, 10, 10))  # a one-voxel thick plate: all of it is surface
    prediction = shifted(reference, (4, 0, 0))
    offset_mm = 4 * ANISOTROPIC[0]
    assert hausdorff_distances(reference, prediction, ANISOTROPIC) == pytest.approx((offset_mm, offset_mm))
    prediction[17, 3, 3] = True  # one stray voxel 12 voxels above the reference plate's corner
    hd, hd95 = hausdorff_distances(reference, prediction, ANISOTROPIC)
    assert hd == pytest.approx(12 * ANISOTROPIC[0])
    assert hd95 == pytest.approx(offset_mm)


def test_a_2d_image_stored_as_one_slice_gets_an_in_plane_surface():
    reference = box((1, 40, 40), (0, 10, 10), (1, 15, 15))
    prediction = shifted(reference, (0, 0, 2))
    flat = mask_metrics(reference, prediction, (999.0, 0.5, 0.8))
    assert flat.hd == pytest.approx(2 * 0.8)
    assert (flat.hd, flat.hd95) == pytest.approx(monai_hd(reference[0], prediction[0], (0.5, 0.8)), abs=TOL_MM)


@pytest.mark.parametrize("ref_empty, pred_empty, status, dice", [
    (True, True, "both_empty", None),
    (True, False, "empty_reference", 0.0),
    (False, True, "empty_prediction", 0.0),
])
def test_empty_masks_follow_the_documented_policy(ref_empty, pred_empty, status, dice):
    full = box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    empty = np.zeros_like(full)
    m = mask_metrics(empty if ref_empty else full, empty if pred_empty else full, ANISOTROPIC)
    assert m == MaskMetrics(status, dice, None, None, m.volume_reference_ml, m.volume_prediction_ml)
    assert (m.volume_reference_ml == 0) == ref_empty and (m.volume_prediction_ml == 0) == pred_empty
    assert dice_coefficient(empty, empty) is None


def test_ignored_voxels_count_for_nothing():
    reference = box((20, 20, 20), (5, 5, 5), (6, 6, 6))
    prediction = reference | box((20, 20, 20), (12, 5, 5), (3, 6, 6))  # extra slab, entirely inside the ignore area
    ignore = box((20, 20, 20), (12, 0, 0), (8, 20, 20))
    m = mask_metrics(reference, prediction, ANISOTROPIC, ignore_mask=ignore)
    assert (m.dice, m.hd, m.hd95) == (1.0, 0.0, 0.0)
    assert mask_metrics(reference, prediction, ANISOTROPIC).dice < 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_agree_with_monai_and_brute_force(seed):
    shape, spacing = (24, 30, 28), (3.0, 1.5, 0.8)
    reference, prediction = random_blob(shape, seed), random_blob(shape, seed + 100)
    ours = hausdorff_distances(reference, prediction, spacing)
    assert ours == pytest.approx(monai_hd(reference, prediction, spacing), abs=TOL_MM)
    assert ours == pytest.approx(brute_force_hd(reference, prediction, spacing), abs=1e-9)


def test_surface_matches_brute_force_and_touches_the_image_border():
    mask = random_blob((16, 18, 20), 7)
    mask[0, 5:10, 5:10] = True
    assert np.array_equal(np.argwhere(surface_voxels(mask)), brute_force_surface(mask))
    a, b = random_blob((16, 18, 20), 8), random_blob((16, 18, 20), 9)
    np.testing.assert_allclose(np.sort(directed_surface_distances(a, b, ANISOTROPIC)),
                               np.sort(brute_force_directed(a, b, ANISOTROPIC)), atol=1e-9)


def test_api_misuse_raises_value_error():
    a = np.ones((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="same shape"):
        mask_metrics(a, np.ones((4, 4, 5), dtype=bool), ANISOTROPIC)
    with pytest.raises(ValueError, match="one positive value"):
        mask_metrics(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="non-empty"):
        directed_surface_distances(a, np.zeros_like(a), ANISOTROPIC)


@pytest.mark.real_ct
@pytest.mark.parametrize("spacing", [None, (3.0, 1.5, 0.8)], ids=["file-spacing", "declared-anisotropic"])
def test_real_liver_mask_against_eroded_and_shifted_copies(shared_ct, spacing):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(shared_ct / "liver.nii.gz"))
    liver = np.pad(sitk.GetArrayFromImage(image) == 1, 4)  # the liver touches the image border: keep shifts exact
    spacing = spacing or tuple(reversed(image.GetSpacing()))
    offset = (2, -1, 3)
    offset_mm = float(np.linalg.norm(np.multiply(offset, spacing)))
    eroded = binary_erosion(liver, iterations=2)
    for other in (eroded, shifted(liver, offset)):
        ours = mask_metrics(liver, other, spacing)
        assert (ours.hd, ours.hd95) == pytest.approx(monai_hd(liver, other, spacing), abs=TOL_MM)
        assert (ours.hd, ours.hd95) == pytest.approx(brute_force_hd(liver, other, spacing), abs=1e-9)
        assert 0.5 < ours.dice < 1 and ours.hd95 <= ours.hd
    translated = mask_metrics(liver, shifted(liver, offset), spacing)  # every surface voxel moves by offset_mm
    assert translated.volume_prediction_ml == translated.volume_reference_ml
    assert translated.hd <= offset_mm + 1e-9
