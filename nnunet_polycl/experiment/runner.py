"""``run_experiment``: the paper's protocol (methods x adaptations x seeds x label budgets k) on one dataset and fold.

Each run pre-trains (once per method and pre-training seed, shared by every k and adaptation; nothing for the
baseline; O-pseudo once per seed, k and adaptation), fine-tunes with the run's trainer, predicts the evaluated cases
and evaluates them; with training budgets it also predicts and evaluates them from the checkpoint of each budget of
the same run. ``jobs`` runs go on in parallel (each step is a subprocess); a run starts as soon as what it needs is
done (its pre-training, or for a pseudo-label pre-training its baseline's fine-tuning; :mod:`.run_queue`), so that no
two jobs ever write the same pre-training. Unlabelled scans
(``--unlabelled``, see :mod:`.unlabelled`) are preprocessed once before the runs. Finished runs are skipped on the
next call; the reports are rewritten after every finished run.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from os.path import join
from queue import SimpleQueue

from nnunet_polycl.checkpoint import file_sha256
from nnunet_polycl.environment import temporary_environment
from nnunet_polycl.experiment.cases import EvaluationCases, link_cases, select_cases
from nnunet_polycl.experiment.layout import (
    ExperimentLayout,
    RunSpec,
    default_experiment_folder,
    run_grid,
    run_settings,
    settings_tag,
)
from nnunet_polycl.experiment.presets import (
    K,
    ProtocolSettings,
    check_adaptations,
    check_methods,
    get_preset,
    override_settings,
    parse_k,
    preset_adaptations,
    pretraining_strategy,
)
from nnunet_polycl.experiment.process import refuse_if_stopping
from nnunet_polycl.experiment.progress import ExperimentProgress
from nnunet_polycl.experiment.reports import evaluate_run, write_reports
from nnunet_polycl.experiment.run_queue import RunQueue, finetuned_milestone, pretrained_milestone
from nnunet_polycl.experiment.state import as_json, check_experiment, read_marker, record_call, write_marker
from nnunet_polycl.experiment.steps import (
    StepContext,
    base_environment,
    finetune,
    finetune_folder,
    finetune_marker,
    predict,
    predict_budgets,
    pretrain,
    training_budgets,
    training_record,
)
from nnunet_polycl.experiment.unlabelled import ExperimentUnlabelled, check_experiment_unlabelled
from nnunet_polycl.finetuning.budgets import FINAL_CHECKPOINT, parse_budgets
from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE
from nnunet_polycl.finetuning.pretrained import checked_weights, fine_tuning_target
from nnunet_polycl.folder_lock import FolderLock
from nnunet_polycl.network import PlansContext, load_plans_context
from nnunet_polycl.paths import PolyCLUserError, resolve_dataset_name
from nnunet_polycl.splits import parse_fold

CONFIGURATION = "2d"


@dataclass
class ExperimentRequest:
    """What the user asked for; None means "the preset's value"."""

    dataset: str
    fold: int | str = 0
    preset: str = "demo"
    methods: tuple[str, ...] | None = None
    adaptations: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    ks: tuple[K, ...] | None = None
    test_cases: list[str] | None = None
    output_folder: str | None = None
    device: str | None = None
    plans_identifier: str = "nnUNetPlans"
    pretrain_epochs: int | None = None
    pretrain_batch_size: int | None = None
    pretrain_lr: float | None = None
    slice_fraction: float | None = None
    schedule: str | None = None
    pretraining_seeds: str | None = None
    pair_by: str | None = None
    interval: str | None = None
    num_workers: int | None = None
    augmentation_workers: int | None = None
    cpu_threads: int | None = None
    jobs: int | None = None
    pretrained: dict[str, str] | None = None  # method -> an existing pretrained_weights.pth, used for every seed
    unlabelled: str | None = None  # folder of unlabelled scans for every pre-training (preset unlabelled: the raw's)
    organ_slices: str | None = None  # their weak labels, for O and M
    unlabelled_count: int | None = None  # only the first N scans of the folder (None: all; 0: none)
    budgets: tuple[float, ...] | None = None  # training budgets: fractions of the schedule (1 is always added)
    force_mix: bool = False
    progress: bool = True


@dataclass
class ExperimentResult:
    """What a call did: the folder, the runs it ran and skipped, and the report files."""

    folder: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _check_budgets(ks: tuple[K, ...], cases: EvaluationCases, fold: int | str) -> None:
    too_large = [k for k in ks if k != "all" and k > len(cases.training)]
    if too_large:
        raise PolyCLUserError(f"Label budget(s) k={', '.join(map(str, too_large))} exceed the {len(cases.training)} "
                              f"training cases of fold {fold}. Use k between 1 and {len(cases.training)}, or 'all'.")


def _check_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise PolyCLUserError("-device cuda was chosen (the paper preset's default) but CUDA is not available here. "
                              "Run on a machine with a GPU, or pass -device cpu.")
    if device not in ("cpu", "cuda", "mps"):
        raise PolyCLUserError(f"Unknown device {device!r}: use cpu, cuda or mps.")
    return device


def check_trainers(names: list[str]) -> None:
    """Make sure nnU-Net finds every fine-tuning trainer, before anything runs (nnU-Net's own lookup)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with temporary_environment({"nnUNet_extTrainer": base_environment()["nnUNet_extTrainer"]}):
        for name in sorted(set(names)):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    recursive_find_trainer_class_by_name(name)
                except RuntimeError:
                    raise PolyCLUserError(f"nnU-Net cannot find the fine-tuning trainer {name}. Check --methods, "
                                          f"--schedule and --k (see polycl_experiment -h).") from None


def _identity(plans_ctx: PlansContext, fold: int | str, settings: ProtocolSettings, cases: EvaluationCases,
              given: dict[str, str], shared_pretraining_seed: int | None,
              unlabelled: ExperimentUnlabelled | None) -> dict:
    """The settings that define an experiment's numbers (a changed plans file counts: re-planning changes them).

    ``shared_pretraining_seed``: the seed of the one pre-training that serves every seed (``--pretraining-seeds
    shared``), so that a later call with another first seed cannot fine-tune from another encoder unnoticed.
    ``unlabelled``: the unlabelled scans every pre-training uses (folder, count, their checksums, the weak labels).
    """
    plans_sha256 = file_sha256(join(plans_ctx.preprocessed_folder, plans_ctx.plans_identifier + ".json"))
    identity = {"dataset": plans_ctx.dataset_name, "fold": fold, "plans": plans_ctx.plans_identifier,
                "plans_sha256": plans_sha256, "configuration": CONFIGURATION, "evaluated_cases": list(cases.cases),
                **settings.to_dict(), **({} if unlabelled is None else unlabelled.identity())}
    if given:
        identity["given_pretrained_weights"] = {m: file_sha256(path) for m, path in sorted(given.items())}
    elif shared_pretraining_seed is not None:
        identity["shared_pretraining_seed"] = shared_pretraining_seed
    return identity


def check_given_weights(given: dict[str, str], methods: tuple[str, ...], plans_ctx: PlansContext,
                        fold: int | str) -> dict[str, str]:
    """``--pretrained METHOD=FILE``: absolute paths of files for pre-trained methods of the grid, each read (as data)
    and checked as the method's fine-tuning trainer checks it (strategy, dataset, plans, split, network), so that a
    bad file stops the experiment before any run starts."""
    checked = {}
    for method, path in given.items():
        if method not in methods or pretraining_strategy(method) is None:
            raise PolyCLUserError(f"--pretrained {method}={path}: {method} is not a pre-trained method of this "
                                  f"experiment (methods: {' '.join(methods)}; the baseline loads nothing).")
        if not os.path.isfile(path):
            raise PolyCLUserError(f"--pretrained {method}={path}: no such file. Give a pretrained_weights.pth that "
                                  f"polycl_pretrain wrote.")
        target = fine_tuning_target(plans_ctx, fold, pretraining_strategy(method))
        try:
            checked_weights(os.path.abspath(path), "--pretrained", target, plans_ctx)
        except PolyCLUserError as e:
            raise PolyCLUserError(f"--pretrained {method}={path}: {e}") from None
        checked[method] = os.path.abspath(path)
    return checked


def prepare(req: ExperimentRequest) -> tuple[StepContext, list[RunSpec], EvaluationCases]:
    """Validate the request, open (or create) the experiment folder and link the evaluated cases.

    Raises:
        PolyCLUserError: unknown dataset / preset / method, invalid k or fold, missing cases, or an experiment folder
            holding another configuration (without ``force_mix``).
    """
    dataset_name = resolve_dataset_name(req.dataset)
    fold = parse_fold(req.fold)
    preset = get_preset(req.preset)
    settings = override_settings(preset.settings, pretrain_epochs=req.pretrain_epochs,
                                 pretrain_batch_size=req.pretrain_batch_size, pretrain_lr=req.pretrain_lr,
                                 slice_fraction=req.slice_fraction,
                                 schedule=req.schedule, pretraining_seeds=req.pretraining_seeds, pair_by=req.pair_by,
                                 interval=req.interval, augmentation_workers=req.augmentation_workers,
                                 cpu_threads=req.cpu_threads)
    methods = check_methods(tuple(req.methods or preset.methods))
    adaptations = check_adaptations(tuple(req.adaptations or preset_adaptations(preset, methods)), methods)
    jobs = req.jobs if req.jobs is not None else preset.jobs
    if jobs < 1:
        raise PolyCLUserError(f"--jobs {jobs} is invalid: use 1 (one run at a time) or more parallel runs.")
    seeds = tuple(dict.fromkeys(req.seeds if req.seeds is not None else preset.seeds))
    ks = tuple(dict.fromkeys(parse_k(k) for k in (req.ks or preset.ks)))
    device = _check_device(req.device or preset.device)
    if not seeds:
        raise PolyCLUserError("No seeds given: pass at least one (--seeds 0).")
    plans_ctx = load_plans_context(dataset_name, req.plans_identifier, CONFIGURATION)
    cases = select_cases(plans_ctx, fold, req.test_cases)
    _check_budgets(ks, cases, fold)
    unlabelled = check_experiment_unlabelled(req.unlabelled, req.organ_slices, req.unlabelled_count, preset, methods,
                                             settings, plans_ctx, fold, str(req.dataset), req.progress)
    count = None if unlabelled is None else unlabelled.count
    shared = settings.pretraining_seeds == "shared" or bool(req.pretrained)
    layout = ExperimentLayout(experiment_folder(req))
    given = check_given_weights(req.pretrained or {}, methods, plans_ctx, fold)
    identity = _identity(plans_ctx, fold, settings, cases, given, seeds[0] if shared else None, unlabelled)
    budgets = parse_budgets(req.budgets or preset.budgets)
    if budgets:
        identity["budgets"] = list(budgets)
    runs = run_grid(methods, adaptations, seeds, ks, shared, as_json(identity), count)
    forced = check_experiment(layout.experiment_file, identity, req.force_mix)
    check_trainers([r.trainer(settings.schedule) for r in runs])
    os.makedirs(layout.root, exist_ok=True)
    record_call(layout.experiment_file, identity, {"methods": list(methods), "adaptations": list(adaptations),
                                                   "seeds": list(seeds), "ks": list(ks)}, forced)
    link_cases(cases, layout.images, layout.labels)
    progress = ExperimentProgress(len(runs), req.progress)
    for difference in forced:
        progress.message(f"WARNING (--force-mix): {difference}")
    for warning in [] if unlabelled is None else unlabelled.warnings:
        progress.message(f"WARNING: {warning}")
    if fold == "all" and not req.test_cases:
        progress.message("WARNING: with -f all the 'validation' cases are the training cases; the numbers measure "
                         "fit, not generalisation. Pass --test-cases to evaluate on held-out cases.")
    ctx = StepContext(dataset_name, fold, req.plans_identifier, CONFIGURATION, settings, device,
                      req.num_workers if req.num_workers is not None else preset.num_workers, layout, progress,
                      plans_ctx.dataset_json, jobs, not req.test_cases, given,
                      settings_record=run_settings(as_json(identity), pretrained=True), unlabelled=unlabelled,
                      budgets=budgets)
    return ctx, runs, cases


def _evaluate_budgets(ctx: StepContext, run: RunSpec, budgets: list[dict], end_predictions: str,
                      end_summary: dict) -> tuple[list, float]:
    """Each training budget's entry ``{fraction, epoch, iterations, checkpoint, predictions, evaluation,
    foreground_mean}`` (a budget at the last epoch is the end point itself), and the seconds its predictions took."""
    folders, seconds = predict_budgets(ctx, run, [b for b in budgets if b["checkpoint"] != FINAL_CHECKPOINT])
    entries = []
    for b in budgets:
        if b["checkpoint"] == FINAL_CHECKPOINT:
            entries.append({**b, "predictions": end_predictions, "evaluation": ctx.layout.evaluation(run),
                            "foreground_mean": end_summary["foreground_mean"]})
            continue
        folder = ctx.layout.evaluation(run, b["fraction"])
        ctx.progress.step(run.name, f"evaluation at budget {b['fraction']:g}", folder, what="summary")
        summary = evaluate_run(ctx.layout.labels, folders[b["fraction"]], ctx.dataset_json, folder)
        entries.append({**b, "predictions": folders[b["fraction"]], "evaluation": folder,
                        "foreground_mean": summary["foreground_mean"]})
    return entries, seconds


def _do_run(ctx: StepContext, run: RunSpec, reached: Callable[[str], None]) -> dict:
    """Every step of ``run``; ``reached`` hears of its pre-training and its fine-tuning as each is done."""
    refuse_if_stopping(run.name)  # a run started while a signal ends the steps
    start = time.time()
    weights = pretrain(ctx, run)
    if run.pretraining_name is not None:
        reached(pretrained_milestone(run.pretraining_name))
    finetune_s = finetune(ctx, run, weights)
    reached(finetuned_milestone(run.name))
    predictions, predict_s = predict(ctx, run)
    ctx.progress.step(run.name, "evaluation", ctx.layout.evaluation(run), what="summary")
    summary = evaluate_run(ctx.layout.labels, predictions, ctx.dataset_json, ctx.layout.evaluation(run))
    training = training_record(ctx, run)
    budgets, budgets_s = _evaluate_budgets(ctx, run, training_budgets(ctx, run, training), predictions, summary)
    record = {**run.to_dict(), "trainer": run.trainer(ctx.settings.schedule), "pretrained_weights": weights,
              "predictions": predictions, "training_schedule": training.get("schedule"), "budgets": budgets,
              "seconds": {"finetune": finetune_s, "predict": predict_s, "budgets": budgets_s,
                          "run": time.time() - start},
              "foreground_mean": summary["foreground_mean"], **run_provenance(ctx, run)}
    write_marker(ctx.layout.finished(run), record)
    return record


def run_provenance(ctx: StepContext, run: RunSpec) -> dict:
    """What the run's record adds to its spec: its settings set and their tag, the augmentation workers, the
    fine-tuning attempts moved aside and redone, and the labelled cases it was fine-tuned on."""
    finetuned = read_marker(finetune_marker(ctx, run)) or {}
    subset = read_marker(join(finetune_folder(ctx, run), SUBSET_FILE)) or {}
    return {"settings": ctx.settings_record, "settings_id": settings_tag(ctx.settings_record),
            "augmentation_workers": ctx.settings.augmentation_workers,
            "redone_from_scratch_after": finetuned.get("redone_from_scratch_after", []),
            "labelled_cases": subset.get("cases")}


def _finish(ctx: StepContext, result: ExperimentResult, run: RunSpec, record: dict) -> None:
    result.ran.append(run.name)
    result.reports = write_reports(ctx.layout)
    dice = record["foreground_mean"]["dice"]["mean"]
    ctx.progress.run_done(run.name, f"finished in {record['seconds']['run']:.0f} s, mean Dice "
                                    f"{'n/a' if dice is None else f'{dice:.4f}'}")


def _run_all(ctx: StepContext, result: ExperimentResult, runs: list[RunSpec]) -> None:
    """Run ``runs``, ``ctx.jobs`` at a time, each as soon as what it needs is done (:class:`RunQueue`). The first
    failure, or a signal (:class:`StoppedBySignal`, raised here in the main thread), stops new runs: the waiting ones
    never start. After a failure the running ones end and are finished as usual, then the first error is raised."""
    queue = RunQueue(runs)
    if ctx.jobs == 1:
        for run in queue.order():
            _finish(ctx, result, run, _do_run(ctx, run, lambda milestone: None))
        return
    events: SimpleQueue[str | Future] = SimpleQueue()  # milestones from the worker threads, and finished runs
    running: dict[Future, RunSpec] = {}
    error = None
    with ThreadPoolExecutor(max_workers=ctx.jobs) as pool:
        while True:
            while error is None and len(running) < ctx.jobs and (run := queue.pop_ready()) is not None:
                future = pool.submit(_do_run, ctx, run, events.put)
                running[future] = run
                future.add_done_callback(events.put)
            if not running:
                break
            event = events.get()
            if isinstance(event, str):
                queue.reached(event)
            elif event.exception() is not None:
                running.pop(event)
                error = error or event.exception()
            else:
                _finish(ctx, result, running.pop(event), event.result())
    if error is not None:
        raise error
    if len(queue):
        raise RuntimeError(f"{len(queue)} runs wait for something no run reports: {queue.order()[0].name} first.")


def experiment_folder(req: ExperimentRequest) -> str:
    """The experiment folder: ``-o``, else the default under ``nnUNet_results``, named with the number of unlabelled
    scans when there are any (absolute; raises PolyCLUserError for an unknown dataset, preset or fold)."""
    preset = get_preset(req.preset)
    count = req.unlabelled_count if req.unlabelled_count is not None else (
        "all" if req.unlabelled or preset.unlabelled else None)
    return os.path.abspath(req.output_folder or default_experiment_folder(
        resolve_dataset_name(req.dataset), preset.name, parse_fold(req.fold), count))


def run_experiment(req: ExperimentRequest) -> ExperimentResult:
    """Run (or continue) the experiment described by ``req``, holding its folder's lock (a second
    ``polycl_experiment`` on the same folder is refused); returns what was run and where the reports are."""
    with FolderLock(experiment_folder(req), "polycl_experiment"):
        return _run(req)


def _run(req: ExperimentRequest) -> ExperimentResult:
    start = time.time()
    ctx, runs, cases = prepare(req)
    result = ExperimentResult(ctx.layout.root)
    ctx.progress.message(f"Experiment folder {ctx.layout.root}: {len(runs)} runs ({ctx.jobs} at a time), evaluated "
                         f"on the {cases.description} ({len(cases.cases)} cases).")
    try:
        todo = []
        for run in runs:
            if read_marker(ctx.layout.finished(run)) is not None:
                result.skipped.append(run.name)
                ctx.progress.run_done(run.name, "already finished: skipped")
            else:
                todo.append(run)
        if ctx.unlabelled is not None and any(run.pretraining_name for run in todo):
            ctx.progress.message(ctx.unlabelled.description())
            ctx.unlabelled.preprocess()
        _run_all(ctx, result, todo)
        result.reports = write_reports(ctx.layout)
    finally:
        ctx.progress.close()
    result.seconds = time.time() - start
    return result
