"""Is an image file complete? A truncated scan must stop the run, not enter pre-training as zeros.

SimpleITK and nibabel can read a ``.nii.gz`` cut in the middle of its voxel data without an error, filling the
missing voxels with zeros. So before nnU-Net's reader sees a NIfTI file (``.nii``, ``.nii.gz``), its header is read
(nibabel, the library nnU-Net's NIfTI readers build on) and the file is decompressed to its end (gzip's length and
CRC check included): the voxel data must hold at least ``vox_offset + voxels x bytes per voxel`` bytes. Other formats
are checked by their reader's own errors.
"""
from __future__ import annotations

import gzip
import zlib

from nnunet_polycl.paths import PolyCLUserError

CHUNK = 1 << 20
NIFTI_ENDINGS = (".nii.gz", ".nii")


def check_complete_image(path: str) -> None:
    """Raise PolyCLUserError naming ``path`` when a NIfTI file is truncated or its compressed stream is damaged."""
    if not path.lower().endswith(NIFTI_ENDINGS):
        return
    expected = _expected_bytes(path)
    try:
        found = _decompressed_size(path)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise PolyCLUserError(
            f"{path} is damaged or truncated ({type(e).__name__}: {e}): its compressed data end early. Copy the "
            f"file again from its source, or remove it from the --unlabelled folder.") from None
    if found < expected:
        raise PolyCLUserError(
            f"{path} is truncated: its header announces {expected} bytes (header and voxels), the file holds "
            f"{found}. Copy the file again from its source, or remove it from the --unlabelled folder.")


def _expected_bytes(path: str) -> int:
    """``vox_offset`` plus the voxel data's size, from the NIfTI header."""
    import nibabel

    try:
        header = nibabel.load(path).header
    except Exception as e:  # nibabel's errors for unreadable headers are of many types
        raise PolyCLUserError(f"{path} has no readable NIfTI header ({type(e).__name__}: {e}). Copy the file again "
                              f"from its source, or remove it from the --unlabelled folder.") from None
    voxels = 1
    for size in header.get_data_shape():
        voxels *= int(size)
    return int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize


def _decompressed_size(path: str) -> int:
    """Bytes of the file after decompression (``.nii.gz``: read to the end of the gzip stream)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    total = 0
    with opener(path, "rb") as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total
