"""What an experiment folder remembers: its configuration (``experiment.json``) and which steps have finished.

Every finished step leaves a small JSON marker written atomically *after* its outputs; a step without its marker is
unfinished (a crash, a kill) and is continued or redone on the next call. ``experiment.json`` pins the settings that
define the numbers (dataset, fold, plans, configuration, evaluated cases, protocol settings): a second call with other
settings is refused, so that one table never mixes runs made differently, unless the user forces it.
"""
from __future__ import annotations

import json
import os
import time
from os.path import isfile
from typing import Any

from nnunet_polycl.checkpoint import atomic_write_json
from nnunet_polycl.paths import PolyCLUserError

FORMAT_VERSION = 2  # 2: run folders name the schedule and a tag of the run's settings; augmentation workers fixed


def read_marker(path: str) -> dict | None:
    """The content of a marker file, or None when it is missing or unreadable (then the step is unfinished)."""
    if not isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(path: str, data: dict[str, Any]) -> None:
    """Write a marker atomically, stamped with the time."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json({**data, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}, path)


def _differences(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{key}: folder has {saved.get(key)!r}, now {current.get(key)!r}" for key in keys
            if saved.get(key) != current.get(key)]


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            saved = json.load(f)
        saved["identity"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PolyCLUserError(f"{path} is not an experiment file written by polycl_experiment. Use another "
                              f"experiment folder (-o) or remove that file.") from None
    return saved


def as_json(obj: Any) -> Any:
    """``obj`` in the form it takes in JSON (tuples become lists), for comparing with what was saved."""
    return json.loads(json.dumps(obj))  # the form it takes in JSON (tuples -> lists)


def check_experiment(path: str, identity: dict[str, Any], force_mix: bool) -> list[str]:
    """Compare ``identity`` (the settings that define the numbers) with the ``experiment.json`` at ``path``.

    Returns the differences (empty for a new folder); they are allowed only with ``force_mix``.

    Raises:
        PolyCLUserError: another identity without ``force_mix``, or an unreadable experiment.json.
    """
    if not isfile(path):
        return []
    saved = _load(path)
    if saved.get("format_version", 1) < FORMAT_VERSION:
        raise PolyCLUserError(
            f"The experiment folder {os.path.dirname(path)} was made by an older polycl_experiment (format "
            f"{saved.get('format_version', 1)}: run folders without the schedule and settings tag, augmentation "
            f"workers not fixed), so its runs cannot be told apart from new ones. Nothing was run. Use a new folder "
            f"with -o; the old folder's reports stay as they are.")
    differences = _differences(saved["identity"], as_json(identity))
    if differences and not force_mix:
        raise PolyCLUserError(
            f"The experiment folder {os.path.dirname(path)} holds runs made with a different configuration "
            f"({'; '.join(differences)}). Nothing was run. Use another folder with -o, repeat the settings of that "
            f"folder, or pass --force-mix to add runs with the new settings to the same tables.")
    return differences


def record_call(path: str, identity: dict[str, Any], grid: dict[str, list], forced: list[str]) -> None:
    """Create ``experiment.json`` (identity of the first call) or add this call to its history.

    ``grid`` holds the requested methods / seeds / ks, which may grow between calls; ``forced`` the differences
    that ``--force-mix`` let through.
    """
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "grid": grid, "identity": as_json(identity)}
    if forced:
        entry["forced_mix"] = forced
    saved = _load(path) if isfile(path) else {"format_version": FORMAT_VERSION, "identity": as_json(identity),
                                               "history": []}
    saved["history"].append(entry)
    atomic_write_json(saved, path)
