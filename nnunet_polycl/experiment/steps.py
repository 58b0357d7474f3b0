"""The steps of one run, each the command a user would type: polycl_pretrain, nnUNetv2_train, nnUNetv2_predict, and
with training budgets the validation from each budget's checkpoint (the trainer's own at the end of nnUNetv2_train,
or polycl_validate; nnUNetv2_predict -chk for test cases).

Every step is skipped when its marker exists, and otherwise continued where the tool continues exactly
(``polycl_pretrain --c`` restores the RNG states of its last checkpoint) or redone: an unfinished fine-tuning is moved
aside (``runs/<name>.interrupted-<time>``) and redone from scratch, because ``nnUNetv2_train --c`` continues from
whichever checkpoint exists without the RNG states, which is not the run it replaces; prediction and evaluation are
redone. The fine-tuning's marker and the run's ``finished.json`` record the attempts moved aside.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from os.path import isdir, isfile, join

from nnunet_polycl.environment import trainer_directory
from nnunet_polycl.experiment.layout import INTERRUPTED, ExperimentLayout, RunSpec
from nnunet_polycl.experiment.presets import ProtocolSettings, pretraining_strategy, uses_pseudo_labels
from nnunet_polycl.experiment.process import StepFailedError, refuse_if_stopping, run_logged
from nnunet_polycl.experiment.progress import ExperimentProgress
from nnunet_polycl.experiment.state import read_marker, write_marker
from nnunet_polycl.experiment.unlabelled import ExperimentUnlabelled
from nnunet_polycl.finetuning.budgets import BUDGETS_VARIABLE
from nnunet_polycl.finetuning.pretrained import OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.trainer import CPU_THREADS_VARIABLE, RECORD_FILE
from nnunet_polycl.finetuning.validation import validation_folder_name
from nnunet_polycl.paths import PRETRAINED_WEIGHTS_FILE, fold_folder_name
from nnunet_polycl.pretraining.loop import FINAL_CHECKPOINT, LATEST_CHECKPOINT


@dataclass(frozen=True)
class StepContext:
    """What every step of every run needs."""

    dataset_name: str
    fold: int | str
    plans_identifier: str
    configuration: str
    settings: ProtocolSettings
    device: str
    num_workers: int
    layout: ExperimentLayout
    progress: ExperimentProgress
    dataset_json: dict
    jobs: int = 1
    on_validation_cases: bool = True  # evaluated cases = the fold's validation cases (else given test cases)
    given_weights: dict[str, str] = field(default_factory=dict)  # method -> pretrained_weights.pth to use as it is
    settings_record: dict = field(default_factory=dict)  # the experiment's settings that define its runs
    unlabelled: ExperimentUnlabelled | None = None  # unlabelled scans of every pre-training (None: none)
    budgets: tuple[float, ...] = ()  # training budgets (fractions of the schedule, 1 included); () = end point only


def base_environment() -> dict[str, str]:
    """This process's environment for the steps: this environment's console scripts first on PATH, the PolyCL
    trainers findable, unbuffered and plot-safe output, and no inherited pre-trained weights override or training
    budgets."""
    env = dict(os.environ)
    trainers = trainer_directory()
    listed = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if trainers not in listed:
        env["nnUNet_extTrainer"] = os.pathsep.join([trainers, *listed])
    scripts = os.path.dirname(sys.executable)  # this environment's console scripts come first
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", TQDM_MININTERVAL="2")
    env.pop(OVERRIDE_VARIABLE, None)
    env.pop(BUDGETS_VARIABLE, None)
    return env


def job_environment(env: dict[str, str], jobs: int, device: str, cpu_threads: int) -> dict[str, str]:
    """``env`` for one of ``jobs`` parallel jobs: on the CPU each gets ``cpu_threads`` torch threads
    (``OMP_NUM_THREADS`` and the PolyCL trainers' ``POLYCL_CPU_THREADS``; fixed, so that a seed gives the same weights
    on any machine) and cores / jobs nnU-Net worker processes (``nnUNet_def_n_proc``; they do not change results)."""
    if device != "cpu":
        return env
    threads, share = str(cpu_threads), str(max(1, (os.cpu_count() or 1) // jobs))
    return {**env, "OMP_NUM_THREADS": threads, CPU_THREADS_VARIABLE: threads, "nnUNet_def_n_proc": share}


def _run(ctx: StepContext, run_name: str, step: str, argv: list[str], env: dict[str, str], log: str) -> float:
    refuse_if_stopping(f"{step} of {run_name}")  # before its step line: a signal may have ended the run's last step
    ctx.progress.step(run_name, step, log)
    return run_logged(argv, job_environment(env, ctx.jobs, ctx.device, ctx.settings.cpu_threads), log, f"{step} of {run_name}",
                      ctx.progress.line)


def pretrain(ctx: StepContext, run: RunSpec) -> str | None:
    """Pre-train the encoder of ``run``'s method and seed once (shared by all k); returns the weights file (the given
    one, for a method whose weights were given with ``--pretrained``)."""
    strategy = pretraining_strategy(run.method)
    if strategy is None:
        return None
    if run.method in ctx.given_weights:
        return ctx.given_weights[run.method]
    folder = ctx.layout.pretraining(run.pretraining_name)
    weights, marker = join(folder, PRETRAINED_WEIGHTS_FILE), folder + ".finished.json"
    if read_marker(marker) is not None and isfile(weights):
        return weights
    s = ctx.settings
    argv = ["polycl_pretrain", "-d", ctx.dataset_name, "-p", ctx.plans_identifier, "-c", ctx.configuration,
            "-f", str(ctx.fold), "-s", strategy, "--epochs", str(s.pretrain_epochs), "--batch-size",
            str(s.pretrain_batch_size), "--lr", str(s.pretrain_lr), "--seed", str(run.pretrain_seed), "-device",
            ctx.device, "-o", folder,
            "--num-workers", str(ctx.num_workers), "--slice-fraction", str(s.slice_fraction)]
    if ctx.unlabelled is not None:
        argv += ctx.unlabelled.pretrain_arguments(run.method, pseudo_label_model(ctx, run))
    if any(isfile(join(folder, name)) for name in (LATEST_CHECKPOINT, FINAL_CHECKPOINT)):
        argv.append("--c")
    elif isdir(folder) and os.listdir(folder):
        argv.append("--overwrite")  # started, but crashed before its first checkpoint: nothing to keep
    seconds = _run(ctx, run.pretraining_name, "pre-training", argv, base_environment(), folder + ".log")
    if not isfile(weights):
        raise StepFailedError(f"polycl_pretrain finished but wrote no {weights}; see {folder}.log.")
    write_marker(marker, {"method": run.method, "seed": run.pretrain_seed, "unlabelled": run.unlabelled,
                          "weights": weights, "seconds": seconds})
    return weights


def pseudo_label_model(ctx: StepContext, run: RunSpec) -> str | None:
    """O-pseudo: the nnU-Net model folder of the run's baseline (same adaptation, seed and k), which must have
    finished; None for the other methods."""
    if not uses_pseudo_labels(run.method):
        return None
    baseline = run.baseline
    if read_marker(finetune_marker(ctx, baseline)) is None:
        raise StepFailedError(f"The pre-training {run.pretraining_name} needs the pseudo-labels of the baseline run "
                              f"{baseline.name}, which has not finished fine-tuning; run the same command again.")
    return os.path.dirname(finetune_folder(ctx, baseline))


def finetune_folder(ctx: StepContext, run: RunSpec) -> str:
    """nnU-Net's output folder of the run's fine-tuning (inside the run's own nnUNet_results)."""
    return join(ctx.layout.run_results(run), ctx.dataset_name,
                f"{run.trainer(ctx.settings.schedule)}__{ctx.plans_identifier}__{ctx.configuration}",
                fold_folder_name(ctx.fold))


def finetune_marker(ctx: StepContext, run: RunSpec) -> str:
    """The marker of the run's finished fine-tuning (trainer, weights, augmentation workers, attempts moved aside)."""
    return join(ctx.layout.run(run), "finetune.finished.json")


def move_aside(ctx: StepContext, run: RunSpec) -> str:
    """Move the run's folder (an interrupted fine-tuning) to ``runs/<name>.interrupted-<time>``; returns that path."""
    target = f"{ctx.layout.run(run)}{INTERRUPTED}{time.strftime('%Y%m%d-%H%M%S')}"
    while os.path.exists(target):
        target += "_"
    os.replace(ctx.layout.run(run), target)
    return target


def finetune(ctx: StepContext, run: RunSpec, weights: str | None) -> float:
    """``nnUNetv2_train`` with the run's trainer and the experiment's augmentation workers; a fine-tuning that was
    started but has no marker is moved aside first and redone from scratch."""
    marker = finetune_marker(ctx, run)
    if read_marker(marker) is not None and isfile(join(finetune_folder(ctx, run), FINAL_CHECKPOINT)):
        return 0.0
    moved = []
    if isdir(finetune_folder(ctx, run)):
        moved.append(move_aside(ctx, run))
        ctx.progress.message(f"[{run.name}] its fine-tuning was interrupted: moved to {moved[0]}; redone from scratch")
    os.makedirs(ctx.layout.run(run), exist_ok=True)
    env = base_environment()
    env.update(nnUNet_results=ctx.layout.run_results(run), nnUNet_n_proc_DA=str(ctx.settings.augmentation_workers))
    if weights is not None:
        env[OVERRIDE_VARIABLE] = weights
    if ctx.budgets:
        env[BUDGETS_VARIABLE] = " ".join(f"{b:g}" for b in ctx.budgets)
    trainer = run.trainer(ctx.settings.schedule)
    argv = ["nnUNetv2_train", ctx.dataset_name, ctx.configuration, str(ctx.fold), "-tr", trainer,
            "-p", ctx.plans_identifier, "-device", ctx.device]
    seconds = _run(ctx, run.name, "fine-tuning", argv, env, join(ctx.layout.run(run), "finetune.log"))
    if not isfile(join(finetune_folder(ctx, run), FINAL_CHECKPOINT)):
        raise StepFailedError(f"nnUNetv2_train finished but wrote no {FINAL_CHECKPOINT} in "
                              f"{finetune_folder(ctx, run)}; see its log.")
    write_marker(marker, {**run.to_dict(), "trainer": trainer, "pretrained_weights": weights, "seconds": seconds,
                          "augmentation_workers": ctx.settings.augmentation_workers,
                          "redone_from_scratch_after": moved})
    return seconds


def predict(ctx: StepContext, run: RunSpec) -> tuple[str, float]:
    """The folder of the run's predictions of the evaluated cases, and the seconds it took to make them.

    The fold's validation cases were predicted by ``nnUNetv2_train`` itself at the end of fine-tuning (nnU-Net's own
    validation, with the trainer's inference settings), as nnU-Net reports cross-validation: those are used. Other
    cases (``--test-cases``) are predicted with ``nnUNetv2_predict`` into the run's ``predictions/`` (redone from
    scratch).
    """
    if ctx.on_validation_cases:
        folder = join(finetune_folder(ctx, run), "validation")
        if not isdir(folder):
            raise StepFailedError(f"nnUNetv2_train wrote no validation predictions in {folder}; see "
                                  f"{join(ctx.layout.run(run), 'finetune.log')}.")
        return folder, 0.0
    return _predict_test_cases(ctx, run, None, None)


def _predict_test_cases(ctx: StepContext, run: RunSpec, budget: float | None, checkpoint: str | None
                        ) -> tuple[str, float]:
    """``nnUNetv2_predict`` of the given test cases from the run's final checkpoint (or ``checkpoint``)."""
    out = ctx.layout.predictions(run, budget)
    if isdir(out):
        shutil.rmtree(out)  # an unfinished run's partial predictions
    env = base_environment()
    env["nnUNet_results"] = ctx.layout.run_results(run)
    workers = str(max(1, ctx.num_workers))
    argv = ["nnUNetv2_predict", "-i", ctx.layout.images, "-o", out, "-d", ctx.dataset_name, "-c",
            ctx.configuration, "-f", str(ctx.fold), "-tr", run.trainer(ctx.settings.schedule), "-p",
            ctx.plans_identifier, "-device", ctx.device, "--disable_tta", "-npp", workers, "-nps", workers]
    if checkpoint is not None:
        argv += ["-chk", checkpoint]
    log = join(ctx.layout.run(run), "predict.log" if budget is None else f"predict_budget_{budget:g}.log")
    return out, _run(ctx, run.name, "prediction" if budget is None else f"prediction at budget {budget:g}", argv,
                     env, log)


def training_record(ctx: StepContext, run: RunSpec) -> dict:
    """What the run's trainer recorded in ``polycl_finetuning.json`` (initialisation, schedule, budgets); empty for
    a trainer that writes none."""
    path = join(finetune_folder(ctx, run), RECORD_FILE)
    if not isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def training_budgets(ctx: StepContext, run: RunSpec, record: dict) -> list[dict]:
    """The run's training budgets as its trainer recorded them (``record``: :func:`training_record`): ``[{fraction,
    epoch, iterations, checkpoint}]`` (empty without ``--budgets``)."""
    if not ctx.budgets:
        return []
    budgets = record.get("budgets") or []
    if sorted(b["fraction"] for b in budgets) != sorted(ctx.budgets):
        raise StepFailedError(f"The fine-tuning of {run.name} saved the budgets {[b['fraction'] for b in budgets]}, "
                              f"not {list(ctx.budgets)}: it was trained with other settings. Delete "
                              f"{ctx.layout.run(run)} to run it again.")
    return budgets


def predict_budgets(ctx: StepContext, run: RunSpec, budgets: list[dict]) -> tuple[dict[float, str], float]:
    """Predict the evaluated cases from each budget's checkpoint, exactly as the end point: nnU-Net's validation of
    the fold, which the PolyCL trainer ran at the end of ``nnUNetv2_train`` (``polycl_validate`` for a budget it did
    not validate, one call for all of them), or ``nnUNetv2_predict -chk``; returns ``{fraction: predictions folder}``
    and the seconds it took."""
    if not budgets:
        return {}, 0.0
    if not ctx.on_validation_cases:
        folders, seconds = {}, 0.0
        for b in budgets:
            folders[b["fraction"]], took = _predict_test_cases(ctx, run, b["fraction"], b["checkpoint"])
            seconds += took
        return folders, seconds
    folder = finetune_folder(ctx, run)
    folders = {b["fraction"]: join(folder, validation_folder_name(b["checkpoint"])) for b in budgets}
    missing = [b["checkpoint"] for b in budgets if not isdir(folders[b["fraction"]])]
    if not missing:
        return folders, 0.0
    env = base_environment()
    env["nnUNet_results"] = ctx.layout.run_results(run)
    argv = ["polycl_validate", ctx.dataset_name, ctx.configuration, str(ctx.fold), "-tr",
            run.trainer(ctx.settings.schedule), "-p", ctx.plans_identifier, "-device", ctx.device, "-chk", *missing]
    return folders, _run(ctx, run.name, "validation at the budgets", argv, env,
                         join(ctx.layout.run(run), "budgets.log"))
