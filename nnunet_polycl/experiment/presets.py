"""The protocol's settings: methods, the two presets (``demo`` and ``paper``) and the names they map to.

A method is fine-tuned with the trainer ``nnUNetTrainerPolyCL<method><schedule><k>`` (for example
``nnUNetTrainerPolyCL_O_paper_k3``) and, except for the baseline, pre-trained by ``polycl_pretrain -s <strategy>``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Union

from nnunet_polycl.paths import PolyCLUserError

K = Union[int, str]  # a label budget: a number of labelled training scans, or "all"

METHODS = ("baseline", "simclr", "S", "O", "M")
# method -> (trainer name part, polycl_pretrain strategy or None when nothing is pre-trained)
_METHOD_PARTS = {"baseline": ("_Baseline", None), "simclr": ("_SimCLR", "simclr"), "S": ("_S", "S"),
                 "O": ("_O", "O"), "M": ("_M", "M")}
SCHEDULES = ("default", "paper", "demo", "smoke")


@dataclass(frozen=True)
class ProtocolSettings:
    """Settings that define an experiment's numbers; an experiment folder holds runs of one set of them."""

    pretrain_epochs: int
    pretrain_batch_size: int
    slice_fraction: float  # middle part of each scan's slices used for pre-training
    schedule: str  # fine-tuning schedule of the trainers, one of SCHEDULES

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A named protocol with its default grid (methods x seeds x k) and device."""

    name: str
    settings: ProtocolSettings
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    ks: tuple[K, ...]
    device: str
    num_workers: int


PRESETS = {
    # CPU, the whole grid within about 15 minutes on the demo dataset with 2 cores: every method, one seed, all
    # labelled scans and 2 of them; one short pre-training epoch (the middle 60% of each scan keeps slices without
    # the organ, which PolyCL-O and -M need as negatives).
    "demo": Preset("demo", ProtocolSettings(pretrain_epochs=1, pretrain_batch_size=16, slice_fraction=0.6,
                                            schedule="demo"),
                   methods=METHODS, seeds=(0,), ks=("all", 2), device="cpu", num_workers=0),
    # The paper: every model trained 10 times, 100 pre-training epochs with batch 20 on the middle 30% of each scan's
    # slices, 100 fine-tuning epochs, label budgets 1 to 9 labelled scans plus all of them (Fig. 4). For a GPU.
    "paper": Preset("paper", ProtocolSettings(pretrain_epochs=100, pretrain_batch_size=20, slice_fraction=0.3,
                                              schedule="paper"),
                    methods=METHODS, seeds=tuple(range(10)), ks=("all", *range(1, 10)), device="cuda",
                    num_workers=4),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises PolyCLUserError listing the valid names."""
    if name not in PRESETS:
        raise PolyCLUserError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def override_settings(settings: ProtocolSettings, pretrain_epochs: int | None = None,
                      pretrain_batch_size: int | None = None, slice_fraction: float | None = None,
                      schedule: str | None = None) -> ProtocolSettings:
    """``settings`` with the given (not None) values replaced, validated."""
    changes = {key: value for key, value in dict(pretrain_epochs=pretrain_epochs,
                                                  pretrain_batch_size=pretrain_batch_size,
                                                  slice_fraction=slice_fraction, schedule=schedule).items()
               if value is not None}
    new = replace(settings, **changes)
    if new.pretrain_epochs < 1 or new.pretrain_batch_size < 2:
        raise PolyCLUserError(f"Pre-training needs at least 1 epoch and a batch size of at least 2 (got "
                              f"--pretrain-epochs {new.pretrain_epochs}, --batch-size {new.pretrain_batch_size}).")
    if not 0 < new.slice_fraction <= 1:
        raise PolyCLUserError(f"--slice-fraction {new.slice_fraction} is invalid: use a value in (0, 1].")
    if new.schedule not in SCHEDULES:
        raise PolyCLUserError(f"Unknown fine-tuning schedule {new.schedule!r}: choose one of {', '.join(SCHEDULES)}.")
    return new


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Validated methods without duplicates, in the given order."""
    unknown = [m for m in methods if m not in _METHOD_PARTS]
    if unknown:
        raise PolyCLUserError(f"Unknown method(s) {', '.join(unknown)}: choose from {' '.join(METHODS)}.")
    return tuple(dict.fromkeys(methods))


def parse_k(value: str | int) -> K:
    """``"all"`` or a positive number of labelled scans; raises PolyCLUserError otherwise."""
    if value == "all":
        return "all"
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise PolyCLUserError(f"Invalid label budget k={value!r}: use 'all' or a number of labelled scans >= 1.")
    return k


def pretraining_strategy(method: str) -> str | None:
    """The ``polycl_pretrain -s`` strategy of ``method``; None for the baseline (random initialisation)."""
    return _METHOD_PARTS[method][1]


def trainer_name(method: str, schedule: str, k: K) -> str:
    """Fine-tuning trainer of one run, e.g. ``nnUNetTrainerPolyCL_O_demo_k3`` or ``nnUNetTrainerPolyCL_Baseline``."""
    schedule_part = "" if schedule == "default" else f"_{schedule}"
    k_part = "" if k == "all" else f"_k{k}"
    return f"nnUNetTrainerPolyCL{_METHOD_PARTS[method][0]}{schedule_part}{k_part}"
