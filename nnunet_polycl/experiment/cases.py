"""The cases an experiment evaluates on: the fold's validation cases, or test cases from imagesTr / imagesTs.

Their raw images and reference labels are linked (symbolic links, nothing copied) into the experiment folder, so that
``nnUNetv2_predict -i`` gets exactly these cases and the evaluation compares against exactly their references.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from os.path import basename, isdir, isfile, join

from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import PolyCLUserError, require_nnunet_folder
from nnunet_polycl.splits import training_cases


@dataclass(frozen=True)
class EvaluationCases:
    """Cases to predict and evaluate, with the raw files they come from."""

    description: str  # e.g. "validation cases of fold 0"
    training: tuple[str, ...]  # the fold's training cases (fine-tuning draws its k scans from these)
    images: dict[str, tuple[str, ...]]  # case -> raw image files (one per channel)
    labels: dict[str, str]  # case -> raw reference label file

    @property
    def cases(self) -> tuple[str, ...]:
        return tuple(sorted(self.images))


def read_case_list(values: list[str]) -> list[str]:
    """Case identifiers from the command line: the identifiers themselves, or one file with one per line."""
    if len(values) == 1 and isfile(values[0]):
        with open(values[0]) as f:
            listed = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        if not listed:
            raise PolyCLUserError(f"The test case file {values[0]} lists no cases (one case identifier per line).")
        values = listed
    return sorted(dict.fromkeys(values))


def _find_case(raw: str, case: str, file_ending: str, n_channels: int) -> tuple[tuple[str, ...], str]:
    """Images and label of ``case`` in imagesTr/labelsTr or imagesTs/labelsTs of the raw dataset folder."""
    pattern = re.compile(re.escape(case) + r"_\d{4}" + re.escape(file_ending))
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        folder = join(raw, images_dir)
        images = sorted(join(folder, f) for f in os.listdir(folder) if pattern.fullmatch(f)) if isdir(folder) else []
        if not images:
            continue
        if len(images) != n_channels:
            raise PolyCLUserError(f"Case {case} has {len(images)} image file(s) in {folder}, but dataset.json names "
                                  f"{n_channels} channel(s).")
        label = join(raw, labels_dir, case + file_ending)
        if not isfile(label):
            raise PolyCLUserError(f"Case {case} has no reference label {label}: it cannot be evaluated. Choose cases "
                                  f"with labels (--test-cases) or add the label file.")
        return tuple(images), label
    raise PolyCLUserError(f"Case {case!r} was not found in {join(raw, 'imagesTr')} or {join(raw, 'imagesTs')} "
                          f"(expected files {case}_0000{file_ending} ...). Check the case identifiers.")


def select_cases(ctx: PlansContext, fold: int | str, test_cases: list[str] | None) -> EvaluationCases:
    """The fold's validation cases (default) or ``test_cases``, with their raw files.

    Raises:
        PolyCLUserError: unknown cases, cases without labels, test cases that fine-tuning trains on.
    """
    raw = join(require_nnunet_folder("nnUNet_raw"), ctx.dataset_name)
    if not isdir(raw):
        raise PolyCLUserError(f"{raw} does not exist: the experiment predicts the raw images and evaluates against "
                              f"the raw labels of dataset {ctx.dataset_name}. Set nnUNet_raw to the folder that "
                              f"holds it.")
    train, val = training_cases(ctx, fold)
    if test_cases:
        leaked = sorted(set(test_cases) & set(train))
        if leaked:
            raise PolyCLUserError(f"Test case(s) {', '.join(leaked[:5])} are training cases of fold {fold}: "
                                  f"fine-tuning and pre-training see them. Choose cases outside the fold's training "
                                  f"set (its validation cases or imagesTs).")
        cases, description = test_cases, f"{len(test_cases)} given test cases"
    else:
        cases, description = val, f"validation cases of fold {fold}"
    n_channels = len(ctx.dataset_json.get("channel_names", ctx.dataset_json.get("modality", {})))
    found = {c: _find_case(raw, c, ctx.dataset_json["file_ending"], n_channels) for c in cases}
    return EvaluationCases(description, tuple(sorted(train)), {c: f[0] for c, f in found.items()},
                           {c: f[1] for c, f in found.items()})


def _link(source: str, destination: str) -> None:
    if os.path.islink(destination) or isfile(destination):
        os.remove(destination)
    os.symlink(os.path.abspath(source), destination)


def link_cases(cases: EvaluationCases, images_folder: str, labels_folder: str) -> None:
    """Put links to the cases' images and labels (nnU-Net file names) into the two folders, and nothing else."""
    for folder in (images_folder, labels_folder):
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if os.path.islink(join(folder, name)):
                os.remove(join(folder, name))
    for case in cases.cases:
        for image in cases.images[case]:
            _link(image, join(images_folder, basename(image)))
        _link(cases.labels[case], join(labels_folder, basename(cases.labels[case])))
