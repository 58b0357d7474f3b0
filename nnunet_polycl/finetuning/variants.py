"""All fine-tuning trainer names: ``nnUNetTrainerPolyCL[_S|_O|_M|_SimCLR|_Baseline][_paper|_demo|_smoke][_k<k>]``.

Each suffix is one setting (nnU-Net's convention: the results folder is named after the class, so runs with different
settings never share a folder):

- method: none = ``polycl_pretrain``'s default strategy (O); ``_S``, ``_O``, ``_M``, ``_SimCLR`` load the
  pre-training of that strategy (``-s S|O|M|simclr``); ``_Baseline`` = same loss and schedule from random weights;
- schedule: none = nnU-Net's default; ``_paper``, ``_demo``, ``_smoke`` (see :mod:`.schedules`);
- ``_k<k>`` (k >= 1): fine-tune on k of the fold's training cases (see :mod:`.labelled_subset`).

A combined class inherits from the class named without its last suffix and sets one attribute, e.g.
``nnUNetTrainerPolyCL_S_paper_k3`` <- ``nnUNetTrainerPolyCL_S_paper`` <- ``nnUNetTrainerPolyCL_paper``. The method x
schedule combinations are module attributes; ``_k`` names are made on first access by the module ``__getattr__``
(PEP 562), which nnU-Net's trainer lookup (``hasattr`` / ``getattr`` on each module) reaches for training and
prediction alike. Every name maps to one class object.
"""
from __future__ import annotations

import re

from nnunet_polycl.finetuning.labelled_subset import SUBSET_SEED
from nnunet_polycl.finetuning.schedules import (
    nnUNetTrainerPolyCL_demo,
    nnUNetTrainerPolyCL_paper,
    nnUNetTrainerPolyCL_smoke,
)
from nnunet_polycl.finetuning.trainer import nnUNetTrainerPolyCL
from nnunet_polycl.paths import DEFAULT_STRATEGY

BASE_NAME = "nnUNetTrainerPolyCL"
METHODS: dict[str, str | None] = {"_S": "S", "_O": "O", "_M": "M", "_SimCLR": "simclr", "_Baseline": None}
SCHEDULES: dict[str, type[nnUNetTrainerPolyCL]] = {
    "": nnUNetTrainerPolyCL, "_paper": nnUNetTrainerPolyCL_paper, "_demo": nnUNetTrainerPolyCL_demo,
    "_smoke": nnUNetTrainerPolyCL_smoke,
}
NNUNET_SCHEDULE = "nnU-Net's default: 1000 epochs x 250 iterations, SGD lr 1e-2 with poly decay."
NAME_PATTERN = re.compile(
    BASE_NAME + r"(?P<method>" + "|".join(METHODS) + r")?(?P<schedule>_paper|_demo|_smoke)?(?:_k(?P<k>[1-9][0-9]*))?"
)

_classes: dict[str, type[nnUNetTrainerPolyCL]] = {cls.__name__: cls for cls in SCHEDULES.values()}


def is_variant_name(name: str) -> bool:
    """Whether ``name`` follows the fine-tuning trainer grammar."""
    return NAME_PATTERN.fullmatch(name) is not None


def describe_variant(name: str) -> str:
    """Generated docstring of the trainer class ``name``."""
    m = NAME_PATTERN.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a PolyCL trainer name ({BASE_NAME}[_S|_O|_M|_SimCLR|_Baseline]"
                         f"[_paper|_demo|_smoke][_k<k>]).")
    method, schedule, k = m.group("method"), m.group("schedule") or "", m.group("k")
    strategy = METHODS[method] if method else DEFAULT_STRATEGY
    init = ("random initialisation (baseline: loads no pre-trained weights)" if method == "_Baseline"
            else f"encoder pre-trained by polycl_pretrain -s {strategy}")
    schedule_doc = SCHEDULES[schedule].__doc__.strip().splitlines()[0] if schedule else NNUNET_SCHEDULE
    lines = [f"PolyCL fine-tuning trainer {name}: Dice loss, {init}.", "", f"Schedule: {schedule_doc}"]
    if k:
        lines.append(f"Labels: {k} of the fold's training cases (seeded choice, seed {SUBSET_SEED}; list in "
                     f"fold_<f>/polycl_labelled_cases.json).")
    return "\n".join(lines)


def trainer_class(name: str) -> type[nnUNetTrainerPolyCL]:
    """The trainer class called ``name`` (created once, then cached).

    Raises:
        ValueError: ``name`` does not follow the grammar.
    """
    if name in _classes:
        return _classes[name]
    doc = describe_variant(name)
    m = NAME_PATTERN.fullmatch(name)
    if m.group("k"):
        parent = trainer_class(name[: m.start("k") - 2])
        setting = {"polycl_num_labelled_cases": int(m.group("k"))}
    else:
        parent = trainer_class(BASE_NAME + (m.group("schedule") or ""))
        setting = {"polycl_strategy": METHODS[m.group("method")]}
    cls = type(name, (parent,), {**setting, "__doc__": doc, "__module__": __name__, "__qualname__": name})
    _classes[name] = cls
    return cls


def _method_schedule_names() -> list[str]:
    return [BASE_NAME + method + schedule for method in METHODS for schedule in SCHEDULES]


for _name in _method_schedule_names():
    globals()[_name] = trainer_class(_name)
del _name

__all__ = ["nnUNetTrainerPolyCL", *(cls.__name__ for cls in SCHEDULES.values() if cls is not nnUNetTrainerPolyCL),
           *_method_schedule_names()]


def __getattr__(name: str) -> type[nnUNetTrainerPolyCL]:
    """PEP 562: any valid variant name (e.g. ``nnUNetTrainerPolyCL_M_demo_k4``) resolves to its class."""
    if is_variant_name(name):
        return trainer_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
