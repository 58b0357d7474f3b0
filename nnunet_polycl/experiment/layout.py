"""Where an experiment keeps its files, and the grid of runs (method x adaptation x seed x label budget k).

Layout of an experiment folder::

    experiment.json                         configuration (refuses to mix configurations) and history
    cases/imagesTs/, cases/labelsTs/        links to the evaluated cases' raw images and reference labels
    pretraining/<method>__seed<s>/          polycl_pretrain output (shared by every k and adaptation), with <name>.log and
                                            <name>.finished.json beside it
    runs/<method>__<adaptation>__seed<s>__k<k>/
                                            one run: its own nnUNet_results/, predictions/, evaluation/,
                                            finetune.log, predict.log and finished.json (written last); with
                                            --budgets also evaluation_budget_<f>/ (and predictions_budget_<f>/
                                            for --test-cases) per training budget f < 1
    reports/                                Table 1 (markdown, CSV), Fig. 4 (PNG), verdicts, every number (JSON)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from os.path import join

from nnunet_polycl.experiment.presets import K, pretraining_strategy, trainer_name
from nnunet_polycl.finetuning.budgets import budget_name
from nnunet_polycl.paths import fold_folder_name, require_nnunet_folder

EXPERIMENT_FILE = "experiment.json"
FINISHED_FILE = "finished.json"


def arm_name(method: str, adaptation: str) -> str:
    """The compared arm: the method, and its adaptation unless it is the trainer's default."""
    return method if adaptation == "default" else f"{method}/{adaptation}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the protocol: pre-train (shared across k) -> fine-tune on k scans -> predict -> evaluate.

    ``seed`` fixes the labelled subset and the fine-tuning randomness; ``pretrain_seed`` the pre-training's (the
    run's seed, or the first seed when the experiment shares one pre-training between seeds).
    """

    method: str
    adaptation: str
    seed: int
    k: K
    pretrain_seed: int

    @property
    def arm(self) -> str:
        return arm_name(self.method, self.adaptation)

    @property
    def name(self) -> str:
        return f"{self.method}__{self.adaptation}__seed{self.seed}__k{self.k}"

    @property
    def pretraining_name(self) -> str | None:
        """Name of the pre-training this run fine-tunes from (None for the baseline)."""
        return None if pretraining_strategy(self.method) is None else f"{self.method}__seed{self.pretrain_seed}"

    def trainer(self, schedule: str) -> str:
        return trainer_name(self.method, schedule, self.adaptation, self.k, self.seed)

    def to_dict(self) -> dict:
        return {"method": self.method, "adaptation": self.adaptation, "arm": self.arm, "seed": self.seed,
                "k": self.k, "pretrain_seed": self.pretrain_seed}


def run_grid(methods: tuple[str, ...], adaptations: tuple[str, ...], seeds: tuple[int, ...], ks: tuple[K, ...],
             shared_pretraining: bool = False) -> list[RunSpec]:
    """Every run, seed-major so that each seed's pre-trainings are made once and then used for all k."""
    return [RunSpec(m, a, s, k, seeds[0] if shared_pretraining else s)
            for s in seeds for m in methods for a in adaptations for k in ks]


def default_experiment_folder(dataset_name: str, preset: str, fold: int | str) -> str:
    """``$nnUNet_results/<dataset>/PolyCL_experiment__<preset>__fold_<f>``."""
    return join(require_nnunet_folder("nnUNet_results"), dataset_name,
                f"PolyCL_experiment__{preset}__{fold_folder_name(fold)}")


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
        return sorted(n for n in os.listdir(runs) if os.path.isfile(join(runs, n, FINISHED_FILE)))
