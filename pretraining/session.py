"""One ``polycl_pretrain`` run in two phases: :func:`prepare` validates everything and writes nothing (with
``--unlabelled``, after every input is validated, it writes only the caches of the unlabelled scans);
:func:`execute` creates the output folder, trains (or continues) and writes the final weights."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from os.path import isfile, join

import torch

from nnunet_polycl.checkpoint import (
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    remove_stale_temporary_files,
    seed_everything,
)
from nnunet_polycl.heads import ContrastiveEncoder
from nnunet_polycl.network import PlansContext, build_plans_network, encoder_of, load_plans_context
from nnunet_polycl.paths import (
    PRETRAINED_WEIGHTS_FILE,
    PRETRAINING_CONFIG_FILE,
    STRATEGIES,
    PolyCLUserError,
    default_pretraining_folder,
    resolve_dataset_name,
)
from nnunet_polycl.pretraining.distributed import (
    SINGLE_PROCESS,
    Ranks,
    barrier,
    check_batches_divide,
    check_process_count,
    requested_world_size,
    wrap_model,
)
from nnunet_polycl.pretraining.loop import (
    FINAL_CHECKPOINT,
    LATEST_CHECKPOINT,
    EpochOutputs,
    TrainState,
    change_lr,
    checkpoint_dict,
    new_state,
    restore_state,
    train,
)
from nnunet_polycl.pretraining.outputs import (
    check_output_folder,
    config_record,
    next_steps,
    remove_run_files,
    write_pretrained_weights,
)
from nnunet_polycl.pretraining.progress import RunLog
from nnunet_polycl.pretraining.settings import PretrainRequest, PretrainSettings, check_resumable, method_name
from nnunet_polycl.pretraining.sharding import smallest_batch
from nnunet_polycl.pretraining.slice_data import default_num_workers
from nnunet_polycl.pretraining.task import PretrainingTask, build_task
from nnunet_polycl.pretraining.training_slices import (
    check_unlabelled_request,
    training_slice_index,
    unlabelled_options,
)
from nnunet_polycl.slice_index import SliceIndex, resolve_labels
from nnunet_polycl.splits import parse_fold, training_cases
from nnunet_polycl.unlabelled import UnlabelledData


@dataclass
class PreparedRun:
    """A validated run: everything needed to start writing."""

    settings: PretrainSettings
    ctx: PlansContext
    train_ids: list[str]
    val_ids: list[str]
    index: SliceIndex
    task: PretrainingTask
    folder: str
    device: torch.device
    overwrite: bool
    continue_training: bool = False
    resume: dict | None = None
    resume_file: str | None = None
    world_size: int = 1  # processes of a DDP run
    unlabelled: UnlabelledData | None = None  # --unlabelled scans (their slices are in ``index``)

    @property
    def data(self) -> dict:
        """What the run trains on, stored in its checkpoints and compared on --c."""
        return {"case_ids": list(self.index.case_ids), "num_slices": len(self.index),
                "iterations_per_epoch": len(self.task.sampler)}

    @property
    def finished(self) -> bool:
        """--c on a run that already has all requested epochs and its final outputs."""
        return (self.resume is not None and self.resume["epoch"] >= self.settings.epochs
                and isfile(join(self.folder, FINAL_CHECKPOINT)) and isfile(join(self.folder, PRETRAINED_WEIGHTS_FILE)))


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for -device, with a clear error when the accelerator is not available."""
    if name == "cuda" and not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise PolyCLUserError(f"-device cuda was asked for, but CUDA is not available here (torch {torch.__version__}, "
                              f"{build}). Use -device cpu (much slower), or run on a machine with an NVIDIA GPU.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PolyCLUserError("-device mps was asked for, but MPS (Apple GPU) is not available here. Use -device cpu.")
    if name not in ("cuda", "cpu", "mps"):
        raise PolyCLUserError(f"Unknown device {name!r}: use cuda, cpu or mps.")
    return torch.device(name)


def _check_numbers(req: PretrainRequest) -> None:
    problems = [text for bad, text in (
        (req.epochs < 1, f"--epochs must be >= 1 (got {req.epochs})"),
        (req.batch_size < 1, f"--batch-size must be >= 1 (got {req.batch_size})"),
        (not (math.isfinite(req.lr) and req.lr > 0), f"--lr must be a positive number (got {req.lr})"),
        (req.temperature is not None and not (math.isfinite(req.temperature) and req.temperature > 0),
         f"--temperature must be a positive number (got {req.temperature})"),
        (req.embed_dim < 1, f"--embed-dim must be >= 1 (got {req.embed_dim})"),
        (not 0 < req.slice_fraction <= 1,
         f"--slice-fraction must be in (0, 1] (got {req.slice_fraction}; 0.3 = middle 30%)"),
        (req.num_workers is not None and req.num_workers < 0, f"--num-workers must be >= 0 (got {req.num_workers})"),
        (req.num_gpus < 1, f"-num_gpus must be >= 1 (got {req.num_gpus})"),
    ) if bad]
    if problems:
        raise PolyCLUserError("; ".join(problems) + ".")


def _resume_checkpoint(folder: str, settings: PretrainSettings) -> tuple[dict | None, str | None]:
    """The checkpoint --c continues from (latest, else final), checked against ``settings`` (its data is checked by
    :func:`check_same_data` once the slice index is built); (None, None) if none."""
    for name in (LATEST_CHECKPOINT, FINAL_CHECKPOINT):
        path = join(folder, name)
        if isfile(path):
            ckpt = load_checkpoint(path)
            missing = [k for k in ("epoch", "model", "optimizer", "scheduler", "history", "rng", "settings")
                       if k not in ckpt]
            if missing:
                raise PolyCLUserError(f"{path} is not a polycl_pretrain checkpoint (missing {missing}). Start again "
                                      f"with --overwrite.")
            check_resumable(ckpt["settings"], settings, path)
            return ckpt, path
    return None, None


def output_folder(req: PretrainRequest) -> str:
    """The run's output folder: ``-o``, else the default under ``nnUNet_results`` (absolute).

    Raises:
        PolyCLUserError: an unknown dataset or fold, or nnUNet_results not set (for the default folder).
    """
    if req.output_folder:
        return os.path.abspath(req.output_folder)
    return os.path.abspath(default_pretraining_folder(resolve_dataset_name(req.dataset), req.strategy,
                                                      req.plans_identifier, req.configuration, parse_fold(req.fold)))


def prepare(req: PretrainRequest) -> PreparedRun:
    """Validate all inputs and set the run up. Writes nothing but, once every input is valid, the caches of
    ``--unlabelled`` scans. Raises PolyCLUserError naming problem and fix."""
    _check_numbers(req)
    if req.strategy not in STRATEGIES:
        raise PolyCLUserError(f"Unknown strategy {req.strategy!r}; valid: {', '.join(STRATEGIES)}.")
    if req.labels and req.strategy not in ("O", "M"):
        raise PolyCLUserError(f"--label chooses the organ for strategies O and M; strategy {req.strategy} uses no "
                              f"labels. Drop --label or use -s O / -s M.")
    options = unlabelled_options(req)
    torch_device = resolve_device(req.device)
    world_size = requested_world_size(req.num_gpus)
    check_process_count(world_size, req.device, req.allow_cpu_ddp)
    ctx = load_plans_context(resolve_dataset_name(req.dataset), req.plans_identifier, req.configuration)
    fold = parse_fold(req.fold)
    train_ids, val_ids = training_cases(ctx, fold, write_missing=False)
    label_values = resolve_labels(ctx.dataset_json, req.labels)
    unlabelled = check_unlabelled_request(ctx, options, train_ids, val_ids, label_values)
    settings = PretrainSettings(
        ctx.dataset_name, req.plans_identifier, req.configuration, fold, req.strategy,
        None if not req.labels else tuple(str(x) for x in req.labels), label_values, req.epochs, req.batch_size,
        req.lr, float(req.temperature) if req.temperature is not None else 1.0 / req.batch_size, req.embed_dim,
        req.slice_fraction, req.seed, default_num_workers(world_size) if req.num_workers is None else req.num_workers,
        req.device, unlabelled_fingerprint=None if unlabelled is None else unlabelled.fingerprint)
    folder = output_folder(req)
    check_output_folder(folder, req.continue_training, req.overwrite)
    resume, resume_file = _resume_checkpoint(folder, settings) if req.continue_training else (None, None)
    index, unlabelled_data = training_slice_index(ctx, train_ids, label_values, req, unlabelled)
    task = build_task(ctx, index, req.strategy, req.batch_size, settings.temperature, req.seed)
    check_batches_divide(world_size, req.batch_size, smallest_batch(task.sampler),
                         "slices" if req.strategy == "simclr" else "triplets")
    run = PreparedRun(settings, ctx, train_ids, val_ids, index, task, folder, torch_device, req.overwrite,
                      req.continue_training, resume, resume_file, world_size, unlabelled_data)
    if resume is not None:
        check_same_data(resume.get("data"), run.data, resume_file)
    return run


def execute(run: PreparedRun, ranks: Ranks = SINGLE_PROCESS) -> str:
    """Create the output folder, train from scratch or from the checkpoint, write the final outputs.

    In a multi-process run every rank calls it (in its process group); rank 0 alone writes and logs.
    """
    s = run.settings
    if run.finished:
        if ranks.is_main:
            print(f"{run.folder} holds a finished run ({run.resume['epoch']} epochs); nothing to do. To train longer, "
                  f"pass --c with --epochs greater than {run.resume['epoch']}.", flush=True)
        return run.folder
    log = _start_outputs(run, ranks) if ranks.is_main else _silent
    barrier(ranks)  # the other ranks start once rank 0 has set up the folder
    seed_everything(s.seed)
    model = ContrastiveEncoder(encoder_of(build_plans_network(run.ctx)), s.embed_dim).to(run.device)
    state = new_state(model, s.lr, len(run.task.sampler), run.device)
    processes = f" x {ranks.world_size} processes (DDP)" if ranks.distributed else ""
    log(f"{method_name(s.strategy)} pre-training of {s.dataset_name} ({s.plans_identifier}, {s.configuration}, "
        f"fold {s.fold}): {len(run.train_ids)} training cases, {len(run.index)} slices ({int(run.index.organ.sum())} "
        f"with the organ), {len(run.task.sampler)} batches of {s.batch_size} per epoch, device {run.device}"
        f"{processes}, output {run.folder}")
    if run.unlabelled is not None:
        log(run.unlabelled.summary(s.strategy))
    _resume(run, state, log)
    state.model = wrap_model(model, ranks, run.device)
    title = f"{method_name(s.strategy)} {s.dataset_name} fold {s.fold}"
    outputs = EpochOutputs(run.folder, log, title, run.data) if ranks.is_main else None
    try:
        train(state, run.task, s, run.device, outputs, ranks)
    except PolyCLUserError as e:
        log(f"ERROR: {e}")
        raise
    finally:
        state.model = model  # drop the DDP wrapper: its reducer holds the process group, destroyed after this
    if ranks.is_main:
        encoder_state = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
        unlabelled = [] if run.unlabelled is None else [case.key for case, _ in run.unlabelled.plan.scans]
        weights = write_pretrained_weights(run.folder, run.ctx, encoder_state, s, state.epoch, run.train_ids,
                                           unlabelled)
        atomic_torch_save(checkpoint_dict(state, s, run.data), join(run.folder, FINAL_CHECKPOINT))
        log(f"Finished: {state.epoch} epochs done. Encoder weights for fine-tuning: {weights}")
        log(next_steps(s, run.folder))
    return run.folder


def _start_outputs(run: PreparedRun, ranks: Ranks) -> RunLog:
    """Rank 0: pin the split, create (or clear, for --overwrite) the folder, write config.json; returns the log."""
    training_cases(run.ctx, run.settings.fold)  # writes nnU-Net's split file when missing, pinning the split used
    os.makedirs(run.folder, exist_ok=True)
    remove_stale_temporary_files(run.folder)  # left by a run that was killed while writing (e.g. progress.png)
    if run.overwrite:
        remove_run_files(run.folder)
    record = config_record(run.settings, run.ctx, run.train_ids, run.val_ids, len(run.index), len(run.task.sampler))
    if run.unlabelled is not None:
        record["unlabelled"] = run.unlabelled.record(run.settings.strategy)
    atomic_write_json({**record, "processes": ranks.world_size}, join(run.folder, PRETRAINING_CONFIG_FILE))
    return RunLog(run.folder)


def _silent(*parts: object) -> None:
    """The log of ranks other than 0: they print and write nothing."""


def check_same_data(saved: dict | None, now: dict, checkpoint_file: str) -> None:
    """Refuse --c when the checkpoint was trained on other cases or another slice index (checkpoints from before
    this record existed are not checked)."""
    if saved is None or saved == now:
        return
    changed = [f"{key}: checkpoint {_short(saved.get(key))}, now {_short(now[key])}" for key in now
               if saved.get(key) != now[key]]
    raise PolyCLUserError(
        f"Cannot continue {checkpoint_file}: it was trained on other data ({'; '.join(changed)}). The dataset, its "
        f"preprocessing or the chosen cases changed since. Start again with --overwrite, or choose a new folder "
        f"with -o.")


def _short(value: object) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"{len(value)} cases {value[:2]} ... {value[-1:]}"
    return repr(value)


def _resume(run: PreparedRun, state: TrainState, log: RunLog) -> None:
    """Restore ``state`` from the --c checkpoint (if any) and apply a changed --lr."""
    if run.continue_training and run.resume is None:
        log(f"--c: no checkpoint in {run.folder} yet; starting from scratch.")
    if run.resume is None:
        return
    restore_state(state, run.resume)
    log(f"Continuing from {run.resume_file} after epoch {state.epoch}.")
    saved_lr = run.resume["settings"]["lr"]
    if saved_lr != run.settings.lr:
        change_lr(state, run.settings.lr)
        log(f"Base learning rate changed from {saved_lr:g} to {run.settings.lr:g}.")
