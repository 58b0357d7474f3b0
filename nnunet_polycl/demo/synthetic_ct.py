"""Small synthetic abdominal CT-like scans with a liver-like target organ, for demos and tests.

Each scan is a stack of axial slices (array order ``z, y, x``) in Hounsfield-like units: air outside an elliptic
body outline, subcutaneous fat, abdominal wall and paraspinal muscle, a vertebra with spinal canal, the aorta, two
kidneys, heterogeneous bowel / visceral fat and a liver-like blob. Scans differ as real CT does: in body size and
shape, field of view (how much of the image the body fills), position, spacing, contrast phase, the scanner's
intensity calibration (a global offset and gain) and noise. The liver covers only a contiguous part of the slices by construction, so every
scan has slices with and without the organ (see :func:`organ_slice_counts`). Everything is drawn from
``numpy.random.default_rng([seed, index])``: the same seed and index always give the same arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

LIVER_LABEL = 1
FILE_ENDING = ".nii.gz"  # scans are saved as NIfTI (SimpleITK)
AIR_HU = -1000.0
MIN_SLICES, MAX_SLICES = 16, 28
MIN_INPLANE, MAX_INPLANE = 40, 52

# tissue codes of the internal tissue map (painted in this order; later ones win)
_AIR, _FAT, _BOWEL, _MUSCLE, _KIDNEY, _AORTA, _LIVER, _BONE, _CANAL = range(9)


@dataclass(frozen=True)
class SyntheticScan:
    """One synthetic scan: ``image`` (int16 HU, z/y/x), ``label`` (uint8, 1 = liver), ``spacing`` (z, y, x) in mm."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]

    def save(self, image_path: str, label_path: str | None = None) -> None:
        """Write the image (and the label) as compressed NIfTI; array axis 0 (z) becomes the file's third axis."""
        for array, path in ((self.image, image_path), (self.label, label_path)):
            if path is not None:
                itk = sitk.GetImageFromArray(array)
                itk.SetSpacing(tuple(reversed(self.spacing)))  # SimpleITK wants x, y, z
                sitk.WriteImage(itk, path, useCompression=True)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation (texture and shape deformation)."""
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-8)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside the ellipse centred at (cx, cy) with semi-axes (ax, ay)."""
    return np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)


def _liver_mask(rng: np.random.Generator, z, y, x, body: dict, nz: int) -> np.ndarray:
    """A deformed ellipsoid in the patient's right upper abdomen spanning slices ``z0..z1`` only (2 <= z0 < z1 < nz-2)."""
    z0 = int(rng.integers(2, max(3, nz // 4)))
    z1 = int(rng.integers(nz // 2 + 2, nz - 2))
    zc, hz = (z0 + z1) / 2, (z1 - z0) / 2 + 0.5
    cx = body["cx"] - rng.uniform(0.3, 0.45) * body["ax"]
    cy = body["cy"] - rng.uniform(0.0, 0.15) * body["ay"]
    ax, ay = rng.uniform(0.4, 0.55) * body["ax"], rng.uniform(0.45, 0.65) * body["ay"]
    taper = np.sqrt(np.clip(1 - ((z - zc) / hz) ** 2, 0.05, 1))
    deform = 0.12 * _smooth_noise(rng, z.shape, (1.5, 5, 5))
    mask = _ellipse(x, y, cx, cy, ax * taper, ay * taper) + deform < 1
    mask[:z0] = False
    mask[z1 + 1:] = False
    return mask


def _body_geometry(rng: np.random.Generator, ny: int, nx: int) -> dict:
    """Random body outline: centre, semi-axes and subcutaneous fat thickness (fraction of the radius)."""
    fov = rng.uniform(0.8, 1.1)  # the body fills more or less of the image
    return {"cx": nx / 2 + rng.uniform(-3, 3), "cy": ny / 2 + rng.uniform(-3, 3),
            "ax": nx * fov * rng.uniform(0.34, 0.41), "ay": ny * fov * rng.uniform(0.27, 0.33),
            "fat": rng.uniform(0.07, 0.18)}


def _tissue_map(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Integer map of tissue codes for one scan."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    b = _body_geometry(rng, ny, nx)
    scale = 1 + 0.05 * np.sin(np.pi * z / nz + rng.uniform(0, np.pi))
    r = _ellipse(x, y, b["cx"], b["cy"], b["ax"] * scale, b["ay"] * scale)
    r = r + 0.02 * _smooth_noise(rng, shape, (2, 6, 6))
    tissue = np.full(shape, _AIR, dtype=np.uint8)
    tissue[r < 1] = _FAT
    inner = 1 - b["fat"]
    tissue[r < inner] = _MUSCLE
    visceral_fat = _smooth_noise(rng, shape, (1, 2, 2)) > rng.uniform(0.3, 0.9)
    tissue[(r < inner - 0.06) & ~visceral_fat] = _BOWEL
    tissue[(r < inner - 0.06) & visceral_fat] = _FAT
    spine_x, spine_y = b["cx"] + rng.uniform(-1.5, 1.5), b["cy"] + 0.55 * b["ay"]
    for side in (-1, 1):
        tissue[_ellipse(x, y, spine_x + side * 0.22 * b["ax"], spine_y + 0.15 * b["ay"], 0.13 * b["ax"],
                        0.2 * b["ay"]) < 1] = _MUSCLE
        kz0, kz1 = sorted(rng.integers(nz // 4, nz, size=2))
        kidney = _ellipse(x, y, spine_x + side * 0.5 * b["ax"], spine_y - 0.1 * b["ay"], 0.12 * b["ax"],
                          0.2 * b["ay"]) < 1
        tissue[kidney & (z >= kz0 - 3) & (z <= kz1)] = _KIDNEY
    tissue[_ellipse(x, y, spine_x + 0.08 * b["ax"], spine_y - 0.3 * b["ay"], 0.06 * b["ax"], 0.08 * b["ay"]) < 1] = _AORTA
    tissue[_liver_mask(rng, z, y, x, b, nz) & (r < inner - 0.03)] = _LIVER
    tissue[_ellipse(x, y, spine_x, spine_y, 0.13 * b["ax"], 0.15 * b["ay"]) < 1] = _BONE
    tissue[_ellipse(x, y, spine_x, spine_y + 0.2 * b["ay"], 0.05 * b["ax"], 0.07 * b["ay"]) < 1] = _CANAL
    return tissue


def _intensities(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """Hounsfield-like values: per-tissue mean and texture, contrast phase, bowel gas and scanner noise."""
    enhancement = rng.uniform(0.0, 1.0)  # 0 = native scan, 1 = strong contrast agent
    means = {_AIR: AIR_HU, _FAT: rng.uniform(-110, -80), _BOWEL: rng.uniform(15, 30),
             _MUSCLE: rng.uniform(45, 60), _KIDNEY: 30 + 160 * enhancement, _AORTA: 40 + 220 * enhancement,
             _LIVER: rng.uniform(40, 55) + 15 * enhancement, _BONE: rng.uniform(350, 650), _CANAL: 15.0}
    texture_sd = {_AIR: 5.0, _FAT: 12.0, _BOWEL: 20.0, _MUSCLE: 8.0, _KIDNEY: 10.0, _AORTA: 6.0, _LIVER: 6.0,
                  _BONE: 90.0, _CANAL: 5.0}
    lut_mean = np.array([means[t] for t in range(len(means))], dtype=np.float32)
    lut_sd = np.array([texture_sd[t] for t in range(len(texture_sd))], dtype=np.float32)
    image = lut_mean[tissue] + lut_sd[tissue] * _smooth_noise(rng, tissue.shape, (0.7, 1.2, 1.2))
    gas = (tissue == _BOWEL) & (_smooth_noise(rng, tissue.shape, (0.8, 1.5, 1.5)) > rng.uniform(1.8, 2.6))
    image[gas] = rng.uniform(-900, -600)
    body = tissue != _AIR
    image[body] = rng.uniform(0.92, 1.08) * image[body] + rng.uniform(-20, 20)  # the scanner's calibration
    image += rng.uniform(4, 25) * rng.standard_normal(tissue.shape).astype(np.float32)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16)


def generate_scan(seed: int, index: int) -> SyntheticScan:
    """Scan number ``index`` of the series drawn with ``seed`` (independent of how many scans are made)."""
    rng = np.random.default_rng([seed, index])
    shape = (int(rng.integers(MIN_SLICES, MAX_SLICES + 1)), int(rng.integers(MIN_INPLANE, MAX_INPLANE + 1)),
             int(rng.integers(MIN_INPLANE, MAX_INPLANE + 1)))
    inplane = float(rng.uniform(1.5, 2.0))
    spacing = (float(rng.uniform(3.0, 5.0)), inplane, inplane)
    tissue = _tissue_map(rng, shape)
    scan = SyntheticScan(_intensities(rng, tissue), (tissue == _LIVER).astype(np.uint8) * LIVER_LABEL, spacing)
    with_organ, without_organ = organ_slice_counts(scan.label)
    if with_organ == 0 or without_organ == 0:
        raise RuntimeError(f"synthetic scan {index} (seed {seed}) has {with_organ} slices with the organ and "
                           f"{without_organ} without; this is a bug in the generator")
    return scan


def organ_slice_counts(label: np.ndarray) -> tuple[int, int]:
    """Number of axial slices (axis 0) that contain the organ and that do not."""
    has_organ = (label > 0).reshape(label.shape[0], -1).any(axis=1)
    return int(has_organ.sum()), int((~has_organ).sum())
