"""Atomic writes for evaluation outputs: a temporary file in the target folder, then ``os.replace``.

A crash never leaves a half-written summary or report behind, and a reader never sees one.
"""
from __future__ import annotations

import json
import math
import os
from os.path import dirname, isfile
from typing import Any, Callable, Iterable

import numpy as np

from nnunet_polycl.checkpoint import atomic_write
from nnunet_polycl.paths import PolyCLUserError


def _atomic(path: str, write: Callable[[str], None]) -> str:
    os.makedirs(dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, write)
    return path


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic(path, write)


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars turned into Python numbers, tuples and arrays into lists, NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON (strict: no NaN tokens) atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(json_ready(obj), indent=2, allow_nan=False) + "\n")


def save_figure_atomic(fig, path: str, dpi: int = 120) -> str:
    """Save a matplotlib figure as PNG atomically; returns ``path``."""
    return _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def refuse_overwrite(paths: Iterable[str], overwrite: bool) -> None:
    """Raise a PolyCLUserError naming the first existing file of ``paths`` unless ``overwrite`` is set."""
    existing = [p for p in paths if isfile(p)]
    if existing and not overwrite:
        raise PolyCLUserError(f"{existing[0]} already exists. Choose another output folder or pass --overwrite "
                              f"(overwrite=True) to replace it.")
