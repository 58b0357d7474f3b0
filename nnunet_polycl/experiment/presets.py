"""The protocol's settings: methods, adaptations, the presets and the trainer names they map to.

A run (method, adaptation, seed, k) is fine-tuned with the trainer
``nnUNetTrainerPolyCL<method><schedule><adaptation><_k><_seed>`` (for example
``nnUNetTrainerPolyCL_O_paper_warmup_k3_seed2``) and, except for the baseline, pre-trained by
``polycl_pretrain -s <strategy> --seed <seed>``. The seed therefore fixes everything the method does not choose: the
labelled subset, the pre-training and the fine-tuning randomness.

With unlabelled scans (``--unlabelled``), every pre-training also uses them; O and M take their organ status from
the weak labels (``--organ-slices``), and ``O-pseudo`` is O whose organ status comes from pseudo-labels of the same
seed's k-scan baseline (``polycl_pretrain --organ-status-from``): its pre-training is made per seed, k and adaptation,
after that baseline run, and it is fine-tuned with the O trainer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Union

from nnunet_polycl.evaluation.reports import PAIRINGS
from nnunet_polycl.evaluation.statistics import INTERVALS
from nnunet_polycl.finetuning.adaptation import ADAPTATIONS
from nnunet_polycl.paths import PolyCLUserError

K = Union[int, str]  # a label budget: a number of labelled training scans, or "all"

METHODS = ("baseline", "simclr", "S", "O", "O-pseudo", "M")
PSEUDO_LABEL_METHODS = ("O-pseudo",)  # organ status of the unlabelled scans from the seed's k-scan baseline
# method -> (trainer name part, polycl_pretrain strategy or None when nothing is pre-trained)
_METHOD_PARTS = {"baseline": ("_Baseline", None), "simclr": ("_SimCLR", "simclr"), "S": ("_S", "S"),
                 "O": ("_O", "O"), "O-pseudo": ("_O", "O"), "M": ("_M", "M")}
SCHEDULES = ("default", "paper", "demo", "long", "short", "quick", "smoke")
PRETRAINING_SEEDS = ("per-seed", "shared")


@dataclass(frozen=True)
class ProtocolSettings:
    """Settings that define an experiment's numbers; an experiment folder holds runs of one set of them.

    ``pretraining_seeds``: ``per-seed`` (each seed pre-trains its own encoder) or ``shared`` (one pre-training with
    seed 0 serves every seed: cheaper, but the pre-training randomness is then not sampled, and the report says so).
    ``pair_by`` and ``interval``: the statistics of the reports (see ``nnunet_polycl.evaluation.reports``).
    ``augmentation_workers``: nnU-Net's data-augmentation worker processes of every fine-tuning
    (``nnUNet_n_proc_DA``); fixed by the experiment because the worker count changes the batches a seed draws, so that
    a seed means the same run on every machine with the same software.
    ``cpu_threads``: torch threads of every step on the CPU, fixed for the same reason (the thread count changes the
    floating-point sums: 1 against 2 threads gave other weights after one pre-training epoch); parallel jobs add cores.
    """

    pretrain_epochs: int
    pretrain_batch_size: int
    pretrain_lr: float
    slice_fraction: float  # middle part of each scan's slices used for pre-training
    schedule: str  # fine-tuning schedule of the trainers, one of SCHEDULES
    pretraining_seeds: str = "per-seed"
    pair_by: str = "run"
    interval: str = "t"
    augmentation_workers: int = 0
    cpu_threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A named protocol with its default grid (methods x adaptations x seeds x k), device and parallel jobs."""

    name: str
    settings: ProtocolSettings
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    ks: tuple[K, ...]
    device: str
    num_workers: int
    adaptations: tuple[str, ...] = ("default",)
    jobs: int = 1
    description: str = ""
    unlabelled: bool = False  # needs unlabelled scans (default: the raw dataset's imagesUnlabelled folder)
    budgets: tuple[float, ...] = (0.5, 1.0)  # training budgets evaluated (--budgets overrides): the end-of-training check


PRESETS = {
    "demo": Preset(
        "demo", ProtocolSettings(pretrain_epochs=3, pretrain_batch_size=16, pretrain_lr=1e-3, slice_fraction=1.0,
                                 schedule="quick",
                                 pretraining_seeds="shared", augmentation_workers=0),
        methods=("baseline", "O"), adaptations=("default", "O=layerwise"), seeds=tuple(range(5)), ks=(1,),
        device="cpu", num_workers=0, jobs=2,
        description="CPU, the README demo: baseline against PolyCL-O fine-tuned layer-wise (its encoder at 0.1 x the "
                    "decoder's learning rate, the adaptation chosen on fold 0) at 1 labelled scan to the end of "
                    "training (_quick), 5 seeds sharing one pre-training"),
    "study": Preset(
        "study", ProtocolSettings(pretrain_epochs=3, pretrain_batch_size=20, pretrain_lr=1e-3, slice_fraction=1.0,
                                  schedule="demo", augmentation_workers=2),
        methods=("baseline", "S", "O"), seeds=tuple(range(5)), ks=(1, 2, 4, "all"), device="cuda", num_workers=2,
        jobs=8, description="one GPU, the label-efficiency study on the demo dataset (60 runs of the _demo schedule, 8 "
                            "at a time)"),
    "paper": Preset(
        "paper", ProtocolSettings(pretrain_epochs=100, pretrain_batch_size=20, pretrain_lr=1e-4, slice_fraction=0.3,
                                  schedule="paper", augmentation_workers=8),
        methods=("baseline", "simclr", "S", "O", "M"), seeds=tuple(range(10)), ks=("all", *range(1, 10)),
        device="cuda", num_workers=4, jobs=1, description="the paper: 10 seeds, 100 + 100 epochs, k = 1..9 and all; "
                                                          "for a GPU"),
    # Few labels, many unlabelled scans, fine-tuned twice as long as the paper (_long, 200 passes): the settings chosen
    # on fold 0 (pre-training 2 epochs, lr 1e-3, batch 16; O also fine-tuned layer-wise, the adaptation chosen there),
    # to be reported on another fold (-f 1). Each seed pre-trains its own encoders (O-pseudo: per seed and k, after
    # that seed's baseline). At k = 1, about 5 min per fine-tuning and 5 per pre-training on 2 CPU cores, 2 at a time
    # (k = 1: about 2.5 h). The N sweep: the same command with --unlabelled-count 0 / 50 ... --k 1 (one experiment
    # folder per N; baseline runs copied).
    "unlabelled": Preset(
        "unlabelled", ProtocolSettings(pretrain_epochs=2, pretrain_batch_size=16, pretrain_lr=1e-3,
                                       slice_fraction=1.0, schedule="long"),
        methods=("baseline", "S", "O", "O-pseudo"), adaptations=("default", "O=default", "O=layerwise"),
        seeds=tuple(range(5)), ks=(1, 2, 4), device="cpu", num_workers=0, jobs=2, unlabelled=True,
        budgets=(0.25, 0.5, 1.0),
        description="CPU (k = 1: about 2.5 h on 2 cores), few labels and many unlabelled scans, fine-tuned twice as "
                    "long as the paper (_long): pre-training on the fold's training scans plus the unlabelled "
                    "scans (S; O with the weak labels, fine-tuned the default way and layer-wise; O-pseudo with the "
                    "seed's k-scan baseline's pseudo-labels) against the baseline"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises PolyCLUserError listing the valid names."""
    if name not in PRESETS:
        raise PolyCLUserError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def override_settings(settings: ProtocolSettings, **changes) -> ProtocolSettings:
    """``settings`` with the given (not None) values replaced, validated."""
    new = replace(settings, **{key: value for key, value in changes.items() if value is not None})
    if not new.pretrain_lr > 0:
        raise PolyCLUserError(f"--pretrain-lr {new.pretrain_lr} is invalid: use a positive learning rate.")
    if new.pretrain_epochs < 1 or new.pretrain_batch_size < 2:
        raise PolyCLUserError(f"Pre-training needs at least 1 epoch and a batch size of at least 2 (got "
                              f"--pretrain-epochs {new.pretrain_epochs}, --batch-size {new.pretrain_batch_size}).")
    if new.augmentation_workers < 0:
        raise PolyCLUserError(f"--augmentation-workers {new.augmentation_workers} is invalid: use 0 (augment in the "
                              f"training process) or more worker processes.")
    if new.cpu_threads < 1:
        raise PolyCLUserError(f"--cpu-threads {new.cpu_threads} is invalid: use 1 or more torch threads per job.")
    if not 0 < new.slice_fraction <= 1:
        raise PolyCLUserError(f"--slice-fraction {new.slice_fraction} is invalid: use a value in (0, 1].")
    for value, valid, flag in ((new.schedule, SCHEDULES, "--schedule"),
                               (new.pretraining_seeds, PRETRAINING_SEEDS, "--pretraining-seeds"),
                               (new.pair_by, tuple(PAIRINGS), "--pair-by"), (new.interval, tuple(INTERVALS),
                                                                             "--interval")):
        if value not in valid:
            raise PolyCLUserError(f"Unknown {flag} {value!r}: choose one of {', '.join(valid)}.")
    return new


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Validated methods without duplicates, in the given order."""
    unknown = [m for m in methods if m not in _METHOD_PARTS]
    if unknown:
        raise PolyCLUserError(f"Unknown method(s) {', '.join(unknown)}: choose from {' '.join(METHODS)}.")
    return tuple(dict.fromkeys(methods))


def _split_item(item: str) -> tuple[str, str]:
    """An ``--adaptations`` item as ``(method, adaptation)``; the method is ``""`` for an item of every method."""
    method, _, adaptation = item.rpartition("=")
    return method, adaptation


def method_adaptations(methods: tuple[str, ...], adaptations: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each method's adaptations from ``--adaptations`` items: ``A`` applies to every method that has no item of its
    own, ``METHOD=A`` to that method only (``default O=layerwise``: the baseline on the trainer's default, O fine-tuned
    layer-wise); a method with neither gets ``default``."""
    pinned: dict[str, list[str]] = {}
    common: list[str] = []
    for method, adaptation in map(_split_item, adaptations):
        if method:
            pinned.setdefault(method, []).append(adaptation)
        else:
            common.append(adaptation)
    return {m: tuple(dict.fromkeys(pinned.get(m) or common or ["default"])) for m in methods}


def preset_adaptations(preset: Preset, methods: tuple[str, ...]) -> tuple[str, ...]:
    """The preset's ``--adaptations`` items for the methods run: its items for other methods are left out (the demo's
    ``O=layerwise`` with ``--methods baseline S``)."""
    return tuple(a for a in preset.adaptations if _split_item(a)[0] in ("", *methods))


def check_adaptations(adaptations: tuple[str, ...], methods: tuple[str, ...]) -> tuple[str, ...]:
    """Validated ``--adaptations`` items (``A`` or ``METHOD=A``; ``default`` = the trainer's default, no suffix)
    without duplicates."""
    valid = ("default", *ADAPTATIONS)
    unknown = [a for a in adaptations if _split_item(a)[1] not in valid]
    if unknown:
        raise PolyCLUserError(f"Unknown adaptation(s) {', '.join(unknown)}: choose from {' '.join(valid)} (or "
                              f"METHOD=ADAPTATION for one method, e.g. O=layerwise).")
    strangers = [a for a in adaptations if _split_item(a)[0] not in ("", *methods)]
    if strangers:
        raise PolyCLUserError(f"--adaptations {' '.join(strangers)} names a method that is not run (methods: "
                              f"{' '.join(methods)}): add it to --methods or drop the item.")
    per_method = method_adaptations(methods, adaptations)
    for method in [m for m in methods if uses_pseudo_labels(m) and "baseline" in methods]:
        orphans = [a for a in per_method[method] if a not in per_method["baseline"]]
        if orphans:
            raise PolyCLUserError(f"{method} takes its pseudo-labels from the baseline run of the same adaptation, "
                                  f"but the baseline does not run {' '.join(orphans)}: add "
                                  f"{' '.join(f'baseline={a}' for a in orphans)} to --adaptations.")
    return tuple(dict.fromkeys(adaptations))


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


def uses_pseudo_labels(method: str) -> bool:
    """Whether the method's pre-training takes the organ status of unlabelled scans from the seed's baseline."""
    return method in PSEUDO_LABEL_METHODS


def pretraining_strategy(method: str) -> str | None:
    """The ``polycl_pretrain -s`` strategy of ``method``; None for the baseline (random initialisation)."""
    return _METHOD_PARTS[method][1]


def trainer_name(method: str, schedule: str, adaptation: str, k: K, seed: int | None) -> str:
    """Fine-tuning trainer of one run, e.g. ``nnUNetTrainerPolyCL_O_demo_warmup_k3_seed1``."""
    schedule_part = "" if schedule == "default" else f"_{schedule}"
    adaptation_part = "" if adaptation == "default" else f"_{adaptation}"
    k_part = "" if k == "all" else f"_k{k}"
    seed_part = "" if seed is None else f"_seed{seed}"
    return f"nnUNetTrainerPolyCL{_METHOD_PARTS[method][0]}{schedule_part}{adaptation_part}{k_part}{seed_part}"
