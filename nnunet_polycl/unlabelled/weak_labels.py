"""Weak organ labels, ``--organ-slices FILE``: per unlabelled scan, the first and last slice that contain the organ.

File formats (one or more rows per case; several rows of a case are several ranges; a row with ``first`` and ``last``
empty / null says the scan has no organ slice)::

    case,first,last                       [{"case": "scan_017", "first": 12, "last": 40},
    scan_017,12,40                         {"case": "scan_018", "first": null, "last": null}]
    scan_018,,

Indices are 0-based and inclusive, counted as in the raw image: along the image axis that nnU-Net's 2D
configuration slices (``transpose_forward[0]`` of the array that the plans' image reader returns; for NIfTI read with
SimpleITK and ``transpose_forward`` [0, 1, 2], the file's third voxel index k, which viewers such as ITK-SNAP show
1-based). Slice z of the preprocessed scan is raw slice ``z + first slice kept by nnU-Net's nonzero crop`` (the 2D
configuration never resamples along the slice axis). Every slice of a listed scan gets a status; scans not listed
have none. A weak label describes the whole slice, so it cannot be narrowed to the crop the encoder sees.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from os.path import isfile

import numpy as np

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError

Ranges = list[tuple[int, int]]
COLUMNS = ("case", "first", "last")


def _csv_rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = [n.strip().lower() for n in reader.fieldnames or []]
        if not set(COLUMNS) <= set(names):
            raise PolyCLUserError(f"--organ-slices file {path} needs the columns {', '.join(COLUMNS)} in its first "
                                  f"line; it has {names}.")
        return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _rows(path: str) -> list[dict]:
    if not isfile(path):
        raise PolyCLUserError(f"--organ-slices file {path} does not exist.")
    lower = path.lower()
    if lower.endswith(".csv"):
        try:
            return _csv_rows(path)
        except (UnicodeDecodeError, csv.Error) as e:
            raise PolyCLUserError(f"--organ-slices file {path} is not a text CSV file ({e}). Give a UTF-8 CSV with "
                                  f"the columns {', '.join(COLUMNS)}.") from None
    if lower.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except ValueError as e:
            raise PolyCLUserError(f"--organ-slices file {path} is not valid JSON: {e}.") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and set(COLUMNS) <= set(r) for r in rows):
            raise PolyCLUserError(f"--organ-slices file {path} must hold a JSON list of objects with the keys "
                                  f"{', '.join(COLUMNS)} (first / last null for a scan without the organ).")
        return rows
    raise PolyCLUserError(f"--organ-slices file {path}: use a .csv or .json file (columns / keys case, first, last).")


def _slice_number(value, what: str, where: str) -> int | None:
    """A slice index from a CSV cell or JSON value; None for an empty cell / null."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise PolyCLUserError(f"{where}: {what} must be a slice index (an integer >= 0), got {value!r}.")


def read_organ_slices(path: str, known_cases: Sequence[str]) -> dict[str, Ranges]:
    """Parse ``--organ-slices``: case -> organ slice ranges (inclusive; empty list: no organ slice).

    Raises:
        PolyCLUserError: unreadable file, missing columns, a bad index, first > last, one of first / last missing,
            or a case that is not one of ``known_cases`` (the unlabelled scans).
    """
    known = set(known_cases)
    ranges: dict[str, Ranges] = {}
    for number, row in enumerate(_rows(path), start=1):
        where = f"--organ-slices {path}, row {number}"
        case = str(row["case"]).strip()
        if case not in known:
            raise PolyCLUserError(f"{where}: case {case!r} is not one of the --unlabelled scans "
                                  f"({', '.join(sorted(known)[:5])}{' ...' if len(known) > 5 else ''}).")
        first, last = _slice_number(row["first"], "first", where), _slice_number(row["last"], "last", where)
        if (first is None) != (last is None):
            raise PolyCLUserError(f"{where}: give both first and last, or leave both empty for a scan without the "
                                  f"organ.")
        if first is not None and first > last:
            raise PolyCLUserError(f"{where}: first slice {first} is after last slice {last}.")
        ranges.setdefault(case, [])
        if first is not None:
            ranges[case].append((first, last))
    return ranges


def raw_slice_count(ctx: PlansContext, files: Sequence[str]) -> int:
    """Number of raw slices along the axis the 2D configuration slices (the image header only, where possible)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    reader_class = ctx.plans_manager.image_reader_writer_class
    if issubclass(reader_class, SimpleITKIO):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        size = tuple(reversed(reader.GetSize()))  # numpy order, as SimpleITKIO returns the array
        shape = (1, *size) if len(size) == 2 else size[-3:]
    else:
        shape = reader_class().read_images(list(files))[0].shape[1:]
    return int(shape[ctx.plans_manager.transpose_forward[0]])


def check_ranges(ranges: dict[str, Ranges], raw_slices: dict[str, int], path: str) -> None:
    """Raise a PolyCLUserError naming every range that is outside its scan."""
    outside = [f"{case}: {lo}-{hi} (the scan has slices 0-{raw_slices[case] - 1})"
               for case, rs in sorted(ranges.items()) for lo, hi in rs if hi >= raw_slices[case]]
    if outside:
        raise PolyCLUserError(f"--organ-slices {path}: slice ranges outside their scan: {'; '.join(outside[:5])}. "
                              f"Indices are 0-based along the raw image's slice axis; fix the file.")


def weak_status(ranges: Ranges, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(organ, known) per preprocessed slice of a cached case (see the cache record) from its organ ranges."""
    raw = record["first_slice"] + np.arange(record["shape"][1])
    organ = np.zeros(len(raw), dtype=bool)
    for lo, hi in ranges:
        organ |= (raw >= lo) & (raw <= hi)
    return organ, np.ones(len(raw), dtype=bool)
