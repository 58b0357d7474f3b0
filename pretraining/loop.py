"""The pre-training loop: Adam, cosine annealing with warm restarts, one forward pass per batch, checkpoints.

- Optimiser: Adam (``settings.lr``, paper: 1e-4). Schedule: ``CosineAnnealingWarmRestarts`` with a restart every 10
  epochs (paper), stepped after every iteration with ``T_0 = 10 * iterations_per_epoch``: the same curve as
  fractional per-epoch stepping, so the learning rate falls smoothly within an epoch.
- Mixed precision: autocast (bf16 where supported, else fp16 with a gradient scaler) on CUDA only; losses and
  cosines in float32.
- Each epoch ends with ``checkpoint_latest.pth`` written atomically (model = encoder + head, optimiser, scheduler,
  scaler, completed epochs, metric history, RNG states, settings), a log line and ``progress.png``, by rank 0 only in
  a multi-process run. The last epoch also writes ``checkpoint_final.pth``.
- No per-step host synchronisation: metrics accumulate on the device and are read every ``SYNC_EVERY`` steps and at
  the end of each epoch (:mod:`.epoch_metrics`); only fp16's gradient scaler (GPUs without bf16) still checks its
  gradients on the host every step. A non-finite loss stops the run at the next such read, before the
  epoch's checkpoint: what is saved never saw it, and the previous epoch's checkpoint stays; the message says whether
  an input batch held non-finite values (the data) or none did (the optimisation: a lower learning rate).
- Multi-process runs (DDP, :mod:`.distributed`): every rank trains on its shard of each global batch
  (:mod:`.sharding`) and the averaged gradient is that of the global batch's mean loss.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from nnunet_polycl.checkpoint import atomic_torch_save, capture_rng_state, plain, restore_rng_state
from nnunet_polycl.network import unwrap
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.distributed import SINGLE_PROCESS, Ranks
from nnunet_polycl.pretraining.epoch_metrics import SYNC_EVERY, EpochMetrics
from nnunet_polycl.pretraining.progress import PLOT_FILE, RunLog, empty_history, epoch_line, plot_progress
from nnunet_polycl.pretraining.settings import RESTART_EVERY_EPOCHS, PretrainSettings
from nnunet_polycl.pretraining.sharding import BatchShard, ShardedBatchSampler
from nnunet_polycl.pretraining.slice_data import make_loader
from nnunet_polycl.pretraining.task import PretrainingTask

LATEST_CHECKPOINT = "checkpoint_latest.pth"
FINAL_CHECKPOINT = "checkpoint_final.pth"


@dataclass
class TrainState:
    """Everything that a checkpoint restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    epoch: int = 0  # completed epochs
    history: dict = field(default_factory=empty_history)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 (or fp16 where bf16 is unsupported) on CUDA; None (full precision) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def new_state(model: nn.Module, lr: float, iterations_per_epoch: int, device: torch.device) -> TrainState:
    """Fresh optimiser, per-iteration warm-restart schedule and (for fp16) gradient scaler."""
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}  # one kernel for all tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, **fused)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=RESTART_EVERY_EPOCHS * iterations_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None
    return TrainState(model, optimizer, scheduler, scaler)


def checkpoint_dict(state: TrainState, settings: PretrainSettings, data: dict) -> dict:
    """The content of ``checkpoint_latest.pth`` / ``checkpoint_final.pth``; ``data`` identifies what the run trains
    on (``{"case_ids", "num_slices", "iterations_per_epoch"}``, compared on --c). Nothing in it depends on the number
    of processes: the model is stored unwrapped, and the optimiser state is the same on every rank. Plain types and
    tensors only (``torch.load(weights_only=True)`` reads it)."""
    return plain({
        "epoch": state.epoch,
        "model": {k: v.detach().cpu() for k, v in unwrap(state.model).state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "grad_scaler": None if state.scaler is None else state.scaler.state_dict(),
        "history": state.history,
        "rng": capture_rng_state(),
        "settings": settings.to_dict(),
        "data": data,
    })


def restore_state(state: TrainState, ckpt: dict) -> None:
    """Load a checkpoint written by :func:`checkpoint_dict` into ``state`` (and the global RNGs)."""
    unwrap(state.model).load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    if state.scaler is not None and ckpt.get("grad_scaler") is not None:
        state.scaler.load_state_dict(ckpt["grad_scaler"])
    state.epoch = int(ckpt["epoch"])
    state.history = {k: list(v) for k, v in ckpt["history"].items()}
    restore_rng_state(ckpt["rng"])


def change_lr(state: TrainState, lr: float) -> None:
    """Rescale the schedule of a restored run to base learning rate ``lr`` (--c with another --lr)."""
    for group, base in zip(state.optimizer.param_groups, state.scheduler.base_lrs, strict=True):
        group["lr"] *= lr / base
        group["initial_lr"] = lr
    state.scheduler.base_lrs = [lr] * len(state.optimizer.param_groups)


def train_step(state: TrainState, task: PretrainingTask, batch: torch.Tensor, device: torch.device,
               shard: BatchShard | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on this process's ``shard`` of a global batch (default: the whole batch is ``batch``).

    Returns ``(loss share, metric sums)`` as device tensors (see :mod:`.objectives`); nothing waits for the device. A
    non-finite loss is applied like any other: :class:`~.epoch_metrics.EpochMetrics` notices it at the next sync point.
    """
    shard = shard or BatchShard.of(batch.shape[0] // task.objective.views)
    dtype = amp_dtype(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    state.optimizer.zero_grad(set_to_none=True)
    with autocast:
        z = state.model(batch)
    share, sums = task.objective(z, shard)
    loss = share * shard.world_size  # DDP averages the ranks' gradients; their shares add up to the batch's loss
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    state.scheduler.step()
    return share.detach(), sums


def run_epoch(state: TrainState, task: PretrainingTask, loader, device: torch.device, epochs: int,
              ranks: Ranks = SINGLE_PROCESS) -> dict:
    """Train one epoch (``state.epoch + 1``) and return its metrics over all ranks.

    ``loader`` yields this rank's shards of ``task.sampler``'s global batches. The device is read every
    :data:`SYNC_EVERY` steps (finiteness, the loss tqdm shows) and at the end of the epoch.

    Raises:
        PolyCLUserError: a non-finite loss (the caller has saved nothing of this epoch yet).
    """
    epoch = state.epoch + 1
    task.sampler.set_epoch(state.epoch)
    state.model.train()
    metrics = EpochMetrics(device, ranks)
    lr, start = float("nan"), time.perf_counter()
    with tqdm(loader, total=len(task.sampler), desc=f"Epoch {epoch}/{epochs}", unit="batch", leave=False,
              mininterval=1.0, disable=not ranks.is_main) as bar:
        for step, batch in enumerate(bar):
            begin, end = task.sampler.bounds[step]
            shard = BatchShard.of(end - begin, ranks.rank, ranks.world_size)
            lr = state.optimizer.param_groups[0]["lr"]  # the learning rate this step uses
            batch = batch.to(device, non_blocking=True)
            share, sums = train_step(state, task, batch, device, shard)
            metrics.add(step, share, sums, shard, task.objective.implied_triplets(shard.size), batch)
            if (step + 1) % SYNC_EVERY == 0:
                _check_finite(state, metrics)
                bar.set_postfix(loss=f"{metrics.mean_loss():.4f}")
    _check_finite(state, metrics)
    totals = metrics.totals()
    seconds = time.perf_counter() - start
    views = task.objective.views
    return {**totals, "slices_per_s": views * metrics.items / seconds, "epoch_time_s": seconds, "lr": lr}


def _check_finite(state: TrainState, metrics: EpochMetrics) -> None:
    step, bad_input = metrics.first_non_finite_steps()
    if step is not None:
        raise diverged_error(state, step, bad_input)


def diverged_error(state: TrainState, iteration: int, bad_input: int | None = None) -> PolyCLUserError:
    """The error for a non-finite loss at ``iteration``: names the epoch, what was kept, and the fix, which depends on
    whether an input batch (the first at ``bad_input``) held non-finite values (the data) or not (the optimisation)."""
    if state.epoch:
        kept = f"{LATEST_CHECKPOINT} from epoch {state.epoch} was kept"
        resume = "continue from it with --c, or start again with --overwrite,"
    else:
        kept, resume = "no checkpoint had been written yet", "start again with --overwrite"
    if bad_input is not None:
        return PolyCLUserError(
            f"Training stopped in epoch {state.epoch + 1} (iteration {iteration}): non-finite loss, and the input "
            f"batch of iteration {bad_input} held non-finite values (NaN or Inf): the data is the cause, not the "
            f"learning rate. The run stopped and {kept}. Check the preprocessed images of the dataset (and the "
            f"--unlabelled scans) for NaN / Inf voxels, fix or remove them, then {resume.rstrip(',')}.")
    return PolyCLUserError(
        f"Training diverged in epoch {state.epoch + 1} (iteration {iteration}): non-finite loss while every input "
        f"batch was finite. The run stopped and {kept}. To fix it, {resume} with a lower --lr (this run: "
        f"{state.scheduler.base_lrs[0]:g}).")


@dataclass
class EpochOutputs:
    """What rank 0 writes after every epoch into ``folder``: checkpoint, log line, plot."""

    folder: str
    log: RunLog
    title: str
    data: dict  # what the run trains on (see checkpoint_dict)

    def write(self, state: TrainState, settings: PretrainSettings, metrics: dict, task: PretrainingTask) -> None:
        atomic_torch_save(checkpoint_dict(state, settings, self.data), os.path.join(self.folder, LATEST_CHECKPOINT))
        self.log(epoch_line(state.epoch, settings.epochs, metrics))
        if task.triplet_sampler is not None and task.triplet_sampler.fallbacks:
            self.log(f"Epoch {state.epoch}: anchors served by a fallback: {task.triplet_sampler.fallbacks}")
        plot_progress(state.history, os.path.join(self.folder, PLOT_FILE), self.title)


def train(state: TrainState, task: PretrainingTask, settings: PretrainSettings, device: torch.device,
          outputs: EpochOutputs | None, ranks: Ranks = SINGLE_PROCESS) -> None:
    """Train from ``state.epoch`` up to ``settings.epochs``; after every epoch ``outputs`` (rank 0's; None on the
    other ranks) checkpoints, logs and plots. On CUDA, cuDNN picks its fastest kernels (``cudnn.benchmark``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batches = ShardedBatchSampler(task.sampler, ranks.rank, ranks.world_size) if ranks.distributed else task.sampler
    loader = make_loader(task.dataset, batches, settings.num_workers, device)
    while state.epoch < settings.epochs:
        metrics = run_epoch(state, task, loader, device, settings.epochs, ranks)
        state.epoch += 1
        for key, value in metrics.items():
            state.history[key].append(value)
        if outputs is not None:
            outputs.write(state, settings, metrics, task)
