"""Find the unlabelled images of ``--unlabelled FOLDER``: nnU-Net's imagesTs naming, the dataset's channels and ending.

A folder holds one file per case and channel, named ``CASE_XXXX<file_ending>`` as in nnU-Net's ``imagesTs``
(``XXXX`` = the 4-digit channel index of dataset.json's ``channel_names``; ``<file_ending>`` = dataset.json's
``file_ending``). Hidden files and sub-folders are ignored. Anything else is an error that names the files and the
expected pattern, raised before anything is read or written: no images at all, files with another ending (mixed file
endings), names without the ``_XXXX`` channel suffix, or cases whose channels are not exactly the dataset's.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from os.path import abspath, isdir, isfile, join

from nnunet_polycl.paths import PolyCLUserError

_SHOWN = 5  # files named in an error message


@dataclass(frozen=True)
class UnlabelledCase:
    """One unlabelled scan: its source folder (absolute), case identifier and image files in channel order."""

    source: str
    case_id: str
    files: tuple[str, ...]

    @property
    def key(self) -> str:
        """``<source>/<case_id>``: unique over all ``--unlabelled`` folders."""
        return join(self.source, self.case_id)


def dataset_channels(dataset_json: dict) -> list[str]:
    """The channel names of dataset.json (``channel_names``, or ``modality`` of older datasets), in index order."""
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not channels:
        raise PolyCLUserError("dataset.json has no 'channel_names': it is not an nnU-Net v2 dataset.json.")
    return [channels[k] for k in sorted(channels, key=int)]


def _listing(names: Sequence[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(sorted(names)[:_SHOWN]) + more


def discover_folder(folder: str, dataset_json: dict) -> list[UnlabelledCase]:
    """The cases of one folder, sorted by identifier.

    Raises:
        PolyCLUserError: missing folder, no images, another file ending, a name that does not follow nnU-Net's
            naming, or a case whose channels differ from the dataset's.
    """
    source = abspath(folder)
    ending, channels = dataset_json["file_ending"], dataset_channels(dataset_json)
    expected = f"CASE_0000{ending}" + (f" ... CASE_{len(channels) - 1:04d}{ending}" if len(channels) > 1 else "")
    if not isdir(source):
        raise PolyCLUserError(f"--unlabelled folder {source} does not exist or is not a folder.")
    files = sorted(n for n in os.listdir(source) if not n.startswith(".") and isfile(join(source, n)))
    if not files:
        raise PolyCLUserError(f"--unlabelled folder {source} holds no images. Put the scans there named as nnU-Net's "
                              f"imagesTs ({expected}).")
    other_ending = [n for n in files if not n.endswith(ending)]
    if other_ending:
        raise PolyCLUserError(
            f"--unlabelled folder {source} holds files that do not end in the dataset's file ending {ending!r}: "
            f"{_listing(other_ending)}. All images must have the dataset's ending (dataset.json 'file_ending'); "
            f"convert them, or move other files out of the folder.")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    bad_names = [n for n in files if not pattern.match(n)]
    if bad_names:
        raise PolyCLUserError(
            f"--unlabelled folder {source}: {_listing(bad_names)} do not follow nnU-Net's naming {expected} (case "
            f"identifier, '_', 4-digit channel index). Rename them as for nnUNetv2_predict's input folder.")
    by_case: dict[str, dict[int, str]] = {}
    for name in files:
        case, channel = pattern.match(name).groups()
        by_case.setdefault(case, {})[int(channel)] = join(source, name)
    _check_channels(source, by_case, channels, ending)
    return [UnlabelledCase(source, case, tuple(ch[i] for i in range(len(channels))))
            for case, ch in sorted(by_case.items())]


def _check_channels(source: str, by_case: dict[str, dict[int, str]], channels: list[str], ending: str) -> None:
    wanted = set(range(len(channels)))
    wrong = {case: sorted(ch) for case, ch in by_case.items() if set(ch) != wanted}
    if not wrong:
        return
    counts = sorted({len(ch) for ch in by_case.values()})
    kind = "cases with different channels (mixed channels)" if len(counts) > 1 else "another channel count"
    shown = "; ".join(f"{case}: {', '.join(f'{c:04d}' for c in ch)}" for case, ch in sorted(wrong.items())[:_SHOWN])
    raise PolyCLUserError(
        f"--unlabelled folder {source} has {kind}: the dataset has {len(channels)} channel(s) "
        f"({', '.join(f'{i:04d}={name}' for i, name in enumerate(channels))}), but {len(wrong)} case(s) have other "
        f"channel files ({shown}). Every case needs exactly the files CASE_0000{ending} to "
        f"CASE_{len(channels) - 1:04d}{ending}.")


def discover_unlabelled(folders: Sequence[str], dataset_json: dict) -> list[UnlabelledCase]:
    """The cases of all ``--unlabelled`` folders in the order given (a folder named twice counts once).

    Raises:
        PolyCLUserError: see :func:`discover_folder`.
    """
    seen: list[str] = []
    for folder in folders:
        if abspath(folder) not in seen:
            seen.append(abspath(folder))
    return [case for folder in seen for case in discover_folder(folder, dataset_json)]
