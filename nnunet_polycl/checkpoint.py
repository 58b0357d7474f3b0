"""Checkpoint I/O shared by both stages: atomic writes, readable load errors, RNG state capture and restore.

nnU-Net writes its checkpoints in place, so a process killed while saving leaves a truncated file. Here every file is
written to a temporary file in the same folder and moved into place with ``os.replace`` (atomic on POSIX and Windows):
a reader sees either the old complete file or the new complete file, never a partial one.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Callable
from os.path import basename, dirname, isfile
from typing import Any

import numpy as np
import torch

from nnunet_polycl.paths import PolyCLUserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then move it onto ``path``.

    The file gets the permissions of a normally created file (0666 minus the umask), not mkstemp's private 0600.
    """
    folder = dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if isfile(tmp):
            os.remove(tmp)
        raise


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_save_to(obj: Any, tmp: str) -> None:
    with open(tmp, "wb") as f:  # a file object: the archive's inner folder is "archive", not the random temp name
        torch.save(obj, f)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never left partially written; equal objects give equal bytes
    (the same sha256), whatever the temporary file was called."""
    atomic_write(path, lambda tmp: _torch_save_to(obj, tmp))


def atomic_write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by this package (trusted: it holds numpy RNG states, so not ``weights_only``).

    Raises:
        PolyCLUserError: the file is missing, truncated, corrupted or not a checkpoint dictionary.
    """
    if not isfile(path):
        raise PolyCLUserError(f"Checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise PolyCLUserError(
            f"Checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"It is truncated or corrupted. Delete it and start again with --overwrite, or restore it from a backup."
        ) from None
    if not isinstance(ckpt, dict):
        raise PolyCLUserError(f"Checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dictionary.")
    return ckpt


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's, torch's CPU and (when available) every CUDA generator."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored when CUDA is available and they were saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
