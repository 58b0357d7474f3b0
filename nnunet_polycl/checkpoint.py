"""Checkpoint I/O shared by both stages: atomic writes, data-only files, readable load errors, RNG states.

nnU-Net writes its checkpoints in place, so a process killed while saving leaves a truncated file. Here every file is
written to a temporary file in the same folder and moved into place with ``os.replace`` (atomic on POSIX and Windows):
a reader sees either the old complete file or the new complete file, never a partial one.

Weights files are data: what this package writes (``pretrained_weights.pth``, the pre-training checkpoints) holds only
tensors and plain Python values (:func:`plain`), and it reads them with ``torch.load(weights_only=True)``
(:func:`load_data_only`), which refuses anything else instead of running it. A file that needs more (written by an
older version, or crafted) is loaded with full unpickling only after the explicit opt-in :data:`UNSAFE_LOAD_VARIABLE`.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from os.path import basename, dirname, isfile, join
from typing import Any

import numpy as np
import torch

from nnunet_polycl.paths import PolyCLUserError

UNSAFE_LOAD_VARIABLE = "POLYCL_ALLOW_UNSAFE_WEIGHTS_FILE"
PLAIN_SCALARS = (str, int, float, bool, type(None))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporary files: ".<target name>.<random>.tmp" next to the target


def remove_stale_temporary_files(folder: str) -> list[str]:
    """Delete the temporary files that ``atomic_write`` left in ``folder`` when its process was killed (SIGKILL
    cannot be caught, so it cannot clean up); the targets themselves are never half-written. Call it only while
    holding the folder (:mod:`nnunet_polycl.folder_lock`). Returns the names removed."""
    stale = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(TEMPORARY_SUFFIX)
             and isfile(join(folder, n))]
    for name in stale:
        os.remove(join(folder, name))
    return stale


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then move it onto ``path``.

    The file gets the permissions of a normally created file (0666 minus the umask), not mkstemp's private 0600.
    """
    folder = dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{basename(path)}.", suffix=TEMPORARY_SUFFIX, dir=folder)
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


def plain(value: Any) -> Any:
    """``value`` with only tensors, str, int, float, bool, None, lists and dicts inside: numpy scalars become Python
    scalars (``np.str_`` a str), numpy arrays and tuples lists, paths str. What ``torch.load(weights_only=True)``
    reads back without running code; tensors are kept as they are (not copied).

    Raises:
        TypeError: a value of another type (it would need unpickling code to be read back).
    """
    if isinstance(value, torch.Tensor) or type(value) in PLAIN_SCALARS:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    for kind in PLAIN_SCALARS[:-1]:  # subclasses (an IntEnum, a str subclass) as their plain base type
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"{type(value).__name__} cannot be stored in a data-only file: convert it to plain types")


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never left partially written; equal objects give equal bytes
    (the same sha256), whatever the temporary file was called."""
    atomic_write(path, lambda tmp: _torch_save_to(obj, tmp))


def save_data_only(obj: Any, path: str) -> None:
    """:func:`atomic_torch_save` of ``plain(obj)``: a file that ``torch.load(weights_only=True)`` reads."""
    atomic_torch_save(plain(obj), path)


def python_objects_in(path: str, error: Exception) -> list[str] | None:
    """The Python objects (``module.name``) a ``torch.save`` file needs beyond what ``weights_only`` loads (``error``:
    what ``weights_only`` raised), or None when it is no readable ``torch.save`` file."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path) or None
    except AttributeError:  # torch < 2.5: the names are only in the error message
        return re.findall(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(error)) or None
    except Exception:  # a damaged archive: unreadable, not unsafe
        return None


def load_data_only(path: str, what: str, map_location: str | torch.device = "cpu") -> tuple[Any, bool]:
    """``torch.load(path, weights_only=True)``: tensors and plain values only, so that loading runs no code.

    A file that needs other Python objects is loaded with full unpickling only when the user set
    ``$POLYCL_ALLOW_UNSAFE_WEIGHTS_FILE=1`` (for files of older versions they made themselves). Returns ``(content,
    unsafe)``, ``unsafe`` True when that opt-in was used (callers record it). Errors of unreadable files (truncated,
    not a PyTorch file) propagate as torch raises them (an UnpicklingError for a file that is no ``torch.save`` file).

    Raises:
        PolyCLUserError: the file needs Python objects and the opt-in is not set (``what`` names the file's kind).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True), False
    except pickle.UnpicklingError as e:
        needed = python_objects_in(path, e)
        if needed is None:
            raise pickle.UnpicklingError("not a file written by torch.save, or damaged") from None
    if os.environ.get(UNSAFE_LOAD_VARIABLE) == "1":
        print(f"WARNING: {UNSAFE_LOAD_VARIABLE}=1: loading {path} with full unpickling (it needs "
              f"{', '.join(needed)}).", file=sys.stderr, flush=True)
        return torch.load(path, map_location=map_location, weights_only=False), True
    shown = ", ".join(needed[:3]) + (f" and {len(needed) - 3} more" if len(needed) > 3 else "")
    raise PolyCLUserError(
        f"{what} {path} holds Python objects besides tensors and plain values ({shown}), and loading it could run "
        f"code, so it was not loaded. nnunet-polycl writes data-only files: write it again with this version "
        f"(polycl_pretrain --overwrite). Only if you made the file yourself with an older version, set "
        f"{UNSAFE_LOAD_VARIABLE}=1 to load it with full unpickling (the opt-in is recorded).")


def atomic_write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by this package, data only (:func:`load_data_only`).

    Raises:
        PolyCLUserError: the file is missing, truncated, corrupted, not a checkpoint dictionary, or it needs Python
            objects beyond data (a checkpoint of an older version) and the opt-in is not set.
    """
    if not isfile(path):
        raise PolyCLUserError(f"Checkpoint {path} does not exist.")
    try:
        ckpt, _ = load_data_only(path, "Checkpoint", map_location)
    except PolyCLUserError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise PolyCLUserError(
            f"Checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"It is truncated or corrupted. Delete it and start again with --overwrite, or restore it from a backup."
        ) from None
    if not isinstance(ckpt, dict):
        raise PolyCLUserError(f"Checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dictionary.")
    return ckpt


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's, torch's CPU and (when available) every CUDA generator, in plain types."""
    state = {"python": plain(random.getstate()), "numpy": plain(np.random.get_state(legacy=False)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (also of its tuple form in checkpoints of older versions); CUDA states
    are restored when CUDA is available and they were saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
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
