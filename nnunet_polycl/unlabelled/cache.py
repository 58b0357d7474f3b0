"""The cache of preprocessed unlabelled scans, one folder per source folder and plans / configuration.

Layout, inside the dataset's preprocessed folder (``<source>`` = the folder's name and a hash of its absolute path,
``<data_identifier>`` = the configuration's, e.g. ``nnUNetPlans_2d``)::

    $nnUNet_preprocessed/DatasetXXX/polycl_unlabelled__<source>__<data_identifier>/
        data/CASE.b2nd, CASE_seg.b2nd, CASE.pkl     nnU-Net's preprocessed format (seg: 0, -1 outside the crop mask)
        records/CASE.json                            what the case was made from (the case is complete only with it)
        organ_status/<model>/CASE.json               pseudo-label areas per slice (``pseudo_labels.py``)
        .tmp/                                        cases being written
        .polycl.lock                                 held while a run fills the cache (``folder_lock.py``)

A case is written into ``.tmp`` and moved into ``data/``; its record is written last, atomically, and removed first
when the case is redone. A case is read only when its record exists and matches the source image's checksum and the
plans file's checksum, so an interrupted run never leaves a case that is read later, and a changed source file or
re-planned dataset invalidates exactly the cases it affects. A run holds the cache's lock while it checks and fills
the cache; a second run (another fold started beside it) waits for it, then finds the cases complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from os.path import basename, isdir, isfile, join

from nnunet_polycl.checkpoint import atomic_write_json
from nnunet_polycl.network import PlansContext

CACHE_PREFIX = "polycl_unlabelled__"
CASE_FILE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")


def cache_folder_name(source: str, data_identifier: str) -> str:
    """``polycl_unlabelled__<folder name>-<8 hex of its absolute path>__<data_identifier>``."""
    digest = hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:8]
    return f"{CACHE_PREFIX}{basename(os.path.normpath(source))}-{digest}__{data_identifier}"


class UnlabelledCache:
    """The cache folder of one source folder for one plans / configuration (see the module docstring)."""

    def __init__(self, ctx: PlansContext, source: str):
        self.source = source
        self.root = join(ctx.preprocessed_folder, cache_folder_name(source, ctx.configuration_manager.data_identifier))
        self.data_folder = join(self.root, "data")
        self.records_folder = join(self.root, "records")
        self.tmp_folder = join(self.root, ".tmp")

    def record(self, case_id: str) -> dict | None:
        """The record of a complete case, or None."""
        path = join(self.records_folder, case_id + ".json")
        if not isfile(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # a damaged record makes the case be redone

    def current_record(self, case_id: str, image_sha256: str, plans_sha256: str) -> dict | None:
        """The record of ``case_id`` if the cached case was made from this image with these plans, else None."""
        record = self.record(case_id)
        if record is None or record["image_sha256"] != image_sha256 or record["plans_sha256"] != plans_sha256:
            return None
        if not all(isfile(join(self.data_folder, case_id + s)) for s in CASE_FILE_SUFFIXES):
            return None
        return record

    def prepare_folders(self) -> None:
        """Create the folders and remove what an interrupted run left in ``.tmp``."""
        shutil.rmtree(self.tmp_folder, ignore_errors=True)
        for folder in (self.data_folder, self.records_folder, self.tmp_folder):
            os.makedirs(folder, exist_ok=True)

    def invalidate(self, case_id: str) -> None:
        """Remove a case: its record first (from then on it is incomplete), then its files."""
        for path in [join(self.records_folder, case_id + ".json")] + \
                [join(self.data_folder, case_id + s) for s in CASE_FILE_SUFFIXES]:
            if isfile(path):
                os.remove(path)

    def commit(self, case_id: str, written_truncated: str, record: dict) -> None:
        """Move a case written to ``written_truncated`` (+ suffixes) into ``data/`` and write its record."""
        for suffix in CASE_FILE_SUFFIXES:
            os.replace(written_truncated + suffix, join(self.data_folder, case_id + suffix))
        atomic_write_json(record, join(self.records_folder, case_id + ".json"))

    def remove_other_cases(self, keep: set[str]) -> list[str]:
        """Remove cached cases (complete or not) other than ``keep``; returns their identifiers."""
        found = set()
        if isdir(self.records_folder):
            found |= {n[:-len(".json")] for n in os.listdir(self.records_folder) if n.endswith(".json")}
        if isdir(self.data_folder):
            for name in os.listdir(self.data_folder):
                suffix = next((s for s in CASE_FILE_SUFFIXES[::-1] if name.endswith(s)), None)
                if suffix is not None:
                    found.add(name[:-len(suffix)])
        gone = sorted(found - keep)
        for case_id in gone:
            self.invalidate(case_id)
        return gone
