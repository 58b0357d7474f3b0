"""Image checksums: what makes two scans "the same scan", and what tells the cache that a source file changed.

The checksum of a case is the SHA-256 of its image files' bytes (channel by channel). Hashing hundreds of CTs on every
run costs minutes, so each file's SHA-256 is remembered together with its size and modification time
(``polycl_image_checksums.json`` in the dataset's preprocessed folder) and recomputed only when either differs, the
rule ``make`` and ``rsync`` use. An identical copy of a file (any name, any folder) has the same checksum; a scan
saved again by another program (other compression or header) does not.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from os.path import abspath, isfile, join

from nnunet_polycl.checkpoint import atomic_write_json, file_sha256

MEMO_FILE = "polycl_image_checksums.json"


class ChecksumMemo:
    """File checksums remembered by (absolute path, size, mtime); :meth:`save` writes them atomically."""

    def __init__(self, folder: str):
        self.path = join(folder, MEMO_FILE)
        self.entries: dict[str, dict] = {}
        if isfile(self.path):
            try:
                with open(self.path) as f:
                    self.entries = json.load(f)
            except (OSError, ValueError):
                self.entries = {}  # a damaged memo only costs re-hashing
        self.changed = False

    def file_checksum(self, path: str) -> str:
        """SHA-256 of a file, from the memo while its size and modification time are unchanged."""
        path = abspath(path)
        stat = os.stat(path)
        entry = self.entries.get(path)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = file_sha256(path)
        self.entries[path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        self.changed = True
        return digest

    def image_checksum(self, files: Sequence[str]) -> str:
        """Checksum of one case: SHA-256 over its files' SHA-256s in channel order."""
        return hashlib.sha256("\n".join(self.file_checksum(f) for f in files).encode()).hexdigest()

    def save(self) -> None:
        """Write the memo if anything new was hashed."""
        if self.changed:
            atomic_write_json(self.entries, self.path)
            self.changed = False
