"""All fine-tuning trainer names:
``nnUNetTrainerPolyCL[method][schedule][adaptation][_k<k>][_seed<s>]``.

Each suffix is one setting (nnU-Net's convention: the results folder is named after the class, so runs with different
settings never share a folder):

- method: none = ``polycl_pretrain``'s default strategy (O); ``_S``, ``_O``, ``_M``, ``_SimCLR`` load the
  pre-training of that strategy (``-s S|O|M|simclr``); ``_Baseline`` = same loss and schedule from random weights;
- schedule: none = nnU-Net's default; ``_paper``, ``_demo``, ``_long``, ``_short``, ``_quick``, ``_smoke`` (see :mod:`.schedules`);
- adaptation: none = the default (:data:`~nnunet_polycl.finetuning.trainer.DEFAULT_ADAPTATION`); ``_direct``,
  ``_warmup``, ``_decoderfirst``, ``_frozen``, ``_layerwise``, ``_warmupfull`` (see :mod:`.adaptation`);
- ``_k<k>`` (k >= 1): fine-tune on k of the fold's training cases (see :mod:`.labelled_subset`);
- ``_seed<s>`` (s >= 0): seed the run (network initialisation, batches, augmentation; see :mod:`.seeding`) and
  draw the ``_k`` cases with this seed.

A combined class inherits from the class named without its last suffix and sets one attribute, e.g.
``nnUNetTrainerPolyCL_S_paper_k3`` <- ``nnUNetTrainerPolyCL_S_paper`` <- ``nnUNetTrainerPolyCL_paper``. The method x
schedule combinations are module attributes; the other names are made on first access by the module ``__getattr__``
(PEP 562), which nnU-Net's trainer lookup (``hasattr`` / ``getattr`` on each module) reaches for training and
prediction alike. Every name maps to one class object.
"""
from __future__ import annotations

import re

from nnunet_polycl.finetuning.adaptation import ADAPTATIONS
from nnunet_polycl.finetuning.labelled_subset import SUBSET_SEED
from nnunet_polycl.finetuning.schedules import (
    nnUNetTrainerPolyCL_demo,
    nnUNetTrainerPolyCL_long,
    nnUNetTrainerPolyCL_paper,
    nnUNetTrainerPolyCL_quick,
    nnUNetTrainerPolyCL_short,
    nnUNetTrainerPolyCL_smoke,
)
from nnunet_polycl.finetuning.trainer import DEFAULT_ADAPTATION, nnUNetTrainerPolyCL
from nnunet_polycl.paths import DEFAULT_STRATEGY

BASE_NAME = "nnUNetTrainerPolyCL"
METHODS: dict[str, str | None] = {"_S": "S", "_O": "O", "_M": "M", "_SimCLR": "simclr", "_Baseline": None}
SCHEDULES: dict[str, type[nnUNetTrainerPolyCL]] = {
    "": nnUNetTrainerPolyCL, "_paper": nnUNetTrainerPolyCL_paper, "_demo": nnUNetTrainerPolyCL_demo,
    "_long": nnUNetTrainerPolyCL_long, "_short": nnUNetTrainerPolyCL_short,
    "_quick": nnUNetTrainerPolyCL_quick, "_smoke": nnUNetTrainerPolyCL_smoke,
}
NNUNET_SCHEDULE = "nnU-Net's default: 1000 epochs x 250 iterations, SGD lr 1e-2 with poly decay."
ADAPTATION_DOCS = {
    "direct": "the schedule as it is, whole network from epoch 0",
    "warmup": "linear warm-up of the whole network to 0.1 x the schedule's rate over 5% of the epochs, then its decay",
    "decoderfirst": "encoder frozen while the decoder warms up (5% of the epochs), then the whole network warms up "
                    "(5%), then the decay, at 0.1 x the schedule's rate",
    "frozen": "encoder frozen for the whole run; the decoder follows the schedule",
    "layerwise": "whole network from epoch 0 on the schedule's curve, the encoder at 0.1 x the decoder's rate",
    "warmupfull": "the schedule's curve at its full rate, each iteration's rate ramped linearly from 0 over the first 5% "
                  "of the iterations",
}
NAME_PATTERN = re.compile(
    BASE_NAME + r"(?P<method>" + "|".join(METHODS) + r")?(?P<schedule>" + "|".join(s for s in SCHEDULES if s) + r")?"
    r"(?:_(?P<adaptation>" + "|".join(ADAPTATIONS) + r"))?(?:_k(?P<k>[1-9][0-9]*))?(?:_seed(?P<seed>0|[1-9][0-9]*))?"
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
                         f"[{'|'.join(s for s in SCHEDULES if s)}][_{'|_'.join(ADAPTATIONS)}][_k<k>][_seed<s>]).")
    method, schedule, k = m.group("method"), m.group("schedule") or "", m.group("k")
    adaptation, seed = m.group("adaptation") or DEFAULT_ADAPTATION, m.group("seed")
    strategy = METHODS[method] if method else DEFAULT_STRATEGY
    init = ("random initialisation (baseline: loads no pre-trained weights)" if method == "_Baseline"
            else f"encoder pre-trained by polycl_pretrain -s {strategy}")
    schedule_doc = SCHEDULES[schedule].__doc__.strip().splitlines()[0] if schedule else NNUNET_SCHEDULE
    lines = [f"PolyCL fine-tuning trainer {name}: Dice loss, {init}.", "", f"Schedule: {schedule_doc}",
             f"Adaptation: {adaptation}: {ADAPTATION_DOCS[adaptation]}."]
    if k:
        lines.append(f"Labels: {k} of the fold's training cases (seeded choice, seed "
                     f"{SUBSET_SEED if seed is None else seed}; list in fold_<f>/polycl_labelled_cases.json).")
    lines.append("Randomness: unseeded, as nnU-Net." if seed is None else
                 f"Randomness: seeded with {seed} (initialisation, batches, augmentation).")
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
    if m.group("seed"):
        parent = trainer_class(name[: m.start("seed") - len("_seed")])
        setting = {"polycl_seed": int(m.group("seed"))}
    elif m.group("k"):
        parent = trainer_class(name[: m.start("k") - 2])
        setting = {"polycl_num_labelled_cases": int(m.group("k"))}
    elif m.group("adaptation"):
        parent = trainer_class(name[: m.start("adaptation") - 1])
        setting = {"polycl_adaptation": m.group("adaptation")}
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
    """PEP 562: any valid variant name (e.g. ``nnUNetTrainerPolyCL_M_demo_warmup_k4_seed2``) resolves to its class."""
    if is_variant_name(name):
        return trainer_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
