"""Where an experiment keeps its files, and the grid of runs (method x adaptation x seed x label budget k).

Layout of an experiment folder::

    experiment.json                         configuration (refuses to mix configurations) and history
    cases/imagesTs/, cases/labelsTs/        links to the evaluated cases' raw images and reference labels
    pretraining/<method>__seed<s>[__N<n>]__<tag>/
                                            polycl_pretrain output (shared by every k and adaptation), with <name>.log and
                                            <name>.finished.json beside it; ``__N<n>``: it used n unlabelled scans;
                                            O-pseudo: <method>__<adaptation>__seed<s>__k<k>[__N<n>]__<tag>
    runs/<method>__<adaptation>__<schedule>__seed<s>__k<k>[__N<n>]__<tag>/
                                            one run: its own nnUNet_results/, predictions/, evaluation/,
                                            finetune.log, predict.log and finished.json (written last); with
                                            --budgets also evaluation_budget_<f>/ (and predictions_budget_<f>/
                                            for --test-cases) per training budget f < 1
    runs/<run name>.interrupted-<time>/     an interrupted fine-tuning, moved aside before the run was redone
    reports/                                Table 1 (markdown, CSV), Fig. 4 (PNG), verdicts, every number (JSON)

``<tag>``: the first 8 hex digits of the sha256 of every other setting that defines the run (:func:`run_settings`:
the experiment's identity without the report statistics, and without the pre-training settings for the baseline), so
that a run of other settings (``--force-mix``) never reuses a folder made with different ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from os.path import join

from nnunet_polycl.experiment.presets import (
    K,
    method_adaptations,
    pretraining_strategy,
    trainer_name,
    uses_pseudo_labels,
)
from nnunet_polycl.finetuning.budgets import budget_name
from nnunet_polycl.paths import fold_folder_name, require_nnunet_folder

EXPERIMENT_FILE = "experiment.json"
FINISHED_FILE = "finished.json"
INTERRUPTED = ".interrupted-"  # runs/<name>.interrupted-<time>: a fine-tuning moved aside to be redone
STATISTICS_KEYS = ("pair_by", "interval")  # how the reports compare runs, not how runs are made
PRETRAINING_KEYS = ("pretrain_epochs", "pretrain_batch_size", "pretrain_lr", "slice_fraction", "pretraining_seeds",
                    "shared_pretraining_seed", "given_pretrained_weights", "unlabelled_folder", "unlabelled_count",
                    "unlabelled_scans_sha256", "organ_slices_sha256")


def run_settings(identity: dict, pretrained: bool) -> dict:
    """The settings of an experiment's identity that define one of its runs (pre-training ones only if
    ``pretrained``)."""
    return {key: value for key, value in identity.items()
            if key not in STATISTICS_KEYS and (pretrained or key not in PRETRAINING_KEYS)}


def settings_tag(settings: dict) -> str:
    """Short stable name of a settings dict: first 8 hex digits of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def arm_name(method: str, adaptation: str) -> str:
    """The compared arm: the method, and its adaptation unless it is the trainer's default."""
    return method if adaptation == "default" else f"{method}/{adaptation}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the protocol: pre-train (shared across k) -> fine-tune on k scans -> predict -> evaluate.

    ``seed`` fixes the labelled subset and the fine-tuning randomness; ``pretrain_seed`` the pre-training's (the
    run's seed, or the first seed when the experiment shares one pre-training between seeds); ``tag`` and
    ``pretraining_tag`` name the other settings of the run and of its pre-training (:func:`settings_tag`),
    ``baseline_tag`` those of the baseline run it is paired with. ``unlabelled``: the number of unlabelled scans its
    pre-training uses (None: the experiment uses none, or nothing is pre-trained).
    """

    method: str
    adaptation: str
    seed: int
    k: K
    pretrain_seed: int
    schedule: str = "default"
    tag: str = ""
    pretraining_tag: str = ""
    unlabelled: int | None = None
    baseline_tag: str = ""

    @property
    def arm(self) -> str:
        return arm_name(self.method, self.adaptation)

    @property
    def _unlabelled_part(self) -> str:
        return "" if self.unlabelled is None else f"__N{self.unlabelled}"

    @property
    def name(self) -> str:
        return (f"{self.method}__{self.adaptation}__{self.schedule}__seed{self.seed}__k{self.k}"
                f"{self._unlabelled_part}__{self.tag}")

    @property
    def pretraining_name(self) -> str | None:
        """Name of the pre-training this run fine-tunes from (None for the baseline); a pseudo-label pre-training
        belongs to its seed's baseline run of the same k and adaptation."""
        if pretraining_strategy(self.method) is None:
            return None
        if uses_pseudo_labels(self.method):
            return (f"{self.method}__{self.adaptation}__seed{self.seed}__k{self.k}{self._unlabelled_part}__"
                    f"{self.pretraining_tag}")
        return f"{self.method}__seed{self.pretrain_seed}{self._unlabelled_part}__{self.pretraining_tag}"

    @property
    def baseline(self) -> RunSpec:
        """The baseline run of the same adaptation, seed and k (paired with this run; O-pseudo's pseudo-labels)."""
        tag = self.tag if pretraining_strategy(self.method) is None else self.baseline_tag
        return RunSpec("baseline", self.adaptation, self.seed, self.k, self.seed, self.schedule, tag, "", None, tag)

    def trainer(self, schedule: str) -> str:
        return trainer_name(self.method, schedule, self.adaptation, self.k, self.seed)

    def to_dict(self) -> dict:
        return {"method": self.method, "adaptation": self.adaptation, "arm": self.arm, "seed": self.seed,
                "k": self.k, "pretrain_seed": self.pretrain_seed, "schedule": self.schedule, "tag": self.tag,
                "pretraining_tag": self.pretraining_tag, "unlabelled": self.unlabelled,
                "baseline_tag": self.baseline_tag}


def run_grid(methods: tuple[str, ...], adaptations: tuple[str, ...], seeds: tuple[int, ...], ks: tuple[K, ...],
             shared_pretraining: bool = False, identity: dict | None = None,
             unlabelled: int | None = None) -> list[RunSpec]:
    """Every run, seed-major so that each seed's pre-trainings are made once and then used for all k; the runs' names
    carry the schedule and the tags of ``identity``'s settings (the experiment's, see :func:`run_settings`).

    ``adaptations``: the ``--adaptations`` items (``A`` for every method, ``METHOD=A`` for one, see
    :func:`method_adaptations`). ``unlabelled``: the number of unlabelled scans every pre-training uses (None: none).
    A pseudo-label pre-training is never shared between seeds: it depends on the seed's baseline.
    """
    identity = identity or {}
    per_method = method_adaptations(methods, adaptations)
    tags = {pretrained: settings_tag(run_settings(identity, pretrained)) for pretrained in (False, True)}
    pretraining_tag = settings_tag({key: identity.get(key) for key in
                                    ("dataset", "fold", "plans", "plans_sha256", "configuration", *PRETRAINING_KEYS)})
    return [RunSpec(m, a, s, k, s if uses_pseudo_labels(m) or not shared_pretraining else seeds[0],
                    identity.get("schedule", "default"), tags[pretraining_strategy(m) is not None], pretraining_tag,
                    None if pretraining_strategy(m) is None else unlabelled, tags[False])
            for s in seeds for m in methods for a in per_method[m] for k in ks]


def default_experiment_folder(dataset_name: str, preset: str, fold: int | str,
                              unlabelled: int | str | None = None) -> str:
    """``$nnUNet_results/<dataset>/PolyCL_experiment__<preset>[__N<unlabelled scans, or all>]__fold_<f>``."""
    count = "" if unlabelled is None else f"__N{unlabelled}"
    return join(require_nnunet_folder("nnUNet_results"), dataset_name,
                f"PolyCL_experiment__{preset}{count}__{fold_folder_name(fold)}")


@dataclass(frozen=True)
class ExperimentLayout:
    """Paths inside one experiment folder."""

    root: str

    @property
    def experiment_file(self) -> str:
        return join(self.root, EXPERIMENT_FILE)

    @property
    def images(self) -> str:
        return join(self.root, "cases", "imagesTs")

    @property
    def labels(self) -> str:
        return join(self.root, "cases", "labelsTs")

    @property
    def reports(self) -> str:
        return join(self.root, "reports")

    def pretraining(self, name: str) -> str:
        return join(self.root, "pretraining", name)

    def run(self, run: RunSpec) -> str:
        return join(self.root, "runs", run.name)

    def run_results(self, run: RunSpec) -> str:
        """The run's own ``nnUNet_results`` folder (keeps seeds and methods apart)."""
        return join(self.run(run), "nnUNet_results")

    def predictions(self, run: RunSpec, budget: float | None = None) -> str:
        """The run's predictions of ``--test-cases`` (at the training ``budget``; None: the end point)."""
        return join(self.run(run), "predictions" if budget is None else f"predictions_{budget_name(budget)}")

    def evaluation(self, run: RunSpec, budget: float | None = None) -> str:
        """Folder of the run's evaluation summary (``summary.json`` / ``.csv`` / ``.md``) at the training
        ``budget`` (None: the end point)."""
        return join(self.run(run), "evaluation" if budget is None else f"evaluation_{budget_name(budget)}")

    def finished(self, run: RunSpec) -> str:
        return join(self.run(run), FINISHED_FILE)

    def finished_runs(self) -> list[str]:
        """Names of the runs in this folder that have a ``finished.json`` marker."""
        runs = join(self.root, "runs")
        if not os.path.isdir(runs):
            return []
        return sorted(n for n in os.listdir(runs)
                      if INTERRUPTED not in n and os.path.isfile(join(runs, n, FINISHED_FILE)))
