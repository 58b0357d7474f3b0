"""The pre-training loop: Adam, cosine annealing with warm restarts, one forward pass per batch, checkpoints.

- Optimiser: Adam (``settings.lr``, paper: 1e-4). Schedule: ``CosineAnnealingWarmRestarts`` with a restart every 10
  epochs (paper), stepped after every iteration with ``T_0 = 10 * iterations_per_epoch``: the same curve as
  fractional per-epoch stepping, so the learning rate falls smoothly within an epoch.
- Mixed precision: autocast (bf16 where supported, else fp16 with a gradient scaler) on CUDA only; losses and
  cosines in float32.
- Each epoch ends with ``checkpoint_latest.pth`` written atomically (model = encoder + head, optimiser, scheduler,
  scaler, completed epochs, metric history, RNG states, settings), a log line and ``progress.png``. The last epoch
  also writes ``checkpoint_final.pth``.
- A non-finite loss stops the run before the bad step is applied or saved: the previous epoch's checkpoint stays.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from nnunet_polycl.checkpoint import atomic_torch_save, capture_rng_state, restore_rng_state
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.progress import PLOT_FILE, RunLog, empty_history, epoch_line, plot_progress
from nnunet_polycl.pretraining.settings import RESTART_EVERY_EPOCHS, PretrainSettings, method_name
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


def checkpoint_dict(state: TrainState, settings: PretrainSettings) -> dict:
    """The content of ``checkpoint_latest.pth`` / ``checkpoint_final.pth``."""
    return {
        "epoch": state.epoch,
        "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "grad_scaler": None if state.scaler is None else state.scaler.state_dict(),
        "history": state.history,
        "rng": capture_rng_state(),
        "settings": settings.to_dict(),
    }


def restore_state(state: TrainState, ckpt: dict) -> None:
    """Load a checkpoint written by :func:`checkpoint_dict` into ``state`` (and the global RNGs)."""
    state.model.load_state_dict(ckpt["model"])
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


def train_step(state: TrainState, task: PretrainingTask, batch: torch.Tensor,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on a whole batch; returns (loss, cos_pos, cos_neg), detached.

    Raises:
        FloatingPointError: the loss is not finite (the step is not applied).
    """
    dtype = amp_dtype(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    state.optimizer.zero_grad(set_to_none=True)
    with autocast:
        z = state.model(batch)
    loss, cos_pos, cos_neg = task.objective(z)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss {loss.item()}")
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    state.scheduler.step()
    return loss.detach(), cos_pos, cos_neg


def run_epoch(state: TrainState, task: PretrainingTask, loader, device: torch.device, epochs: int) -> dict:
    """Train one epoch (``state.epoch + 1``) and return its metrics; raises PolyCLUserError on a non-finite loss."""
    epoch = state.epoch + 1
    task.sampler.set_epoch(state.epoch)
    state.model.train()
    sums = torch.zeros(5, dtype=torch.float64)  # loss * M, sum cos+, sum cos-, correct, triplets
    slices, lr, start = 0, float("nan"), time.perf_counter()
    with tqdm(loader, total=len(task.sampler), desc=f"Epoch {epoch}/{epochs}", unit="batch", leave=False,
              mininterval=1.0) as bar:
        for step, batch in enumerate(bar):
            batch = batch.to(device, non_blocking=True)
            lr = state.optimizer.param_groups[0]["lr"]  # the learning rate this step uses
            try:
                loss, cos_pos, cos_neg = train_step(state, task, batch, device)
            except FloatingPointError as e:
                raise diverged_error(state, step + 1, str(e)) from None
            m = batch.shape[0] // task.objective.views
            sums += torch.stack([loss * m, cos_pos.sum(), cos_neg.sum(), (cos_pos > cos_neg).sum(),
                                 torch.tensor(cos_pos.numel(), device=loss.device)]).double().cpu()
            slices += batch.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - start
    n_triplets = max(sums[4].item(), 1.0)
    return {"loss": sums[0].item() / max(task.sampler.num_items, 1),
            "cos_pos": sums[1].item() / n_triplets, "cos_neg": sums[2].item() / n_triplets,
            "accuracy": sums[3].item() / n_triplets, "slices_per_s": slices / seconds, "epoch_time_s": seconds,
            "lr": lr}


def diverged_error(state: TrainState, iteration: int, what: str) -> PolyCLUserError:
    """The error for a non-finite loss: names the epoch, what was kept, and the fix."""
    if state.epoch:
        kept = f"{LATEST_CHECKPOINT} from epoch {state.epoch} was kept"
        fix = "continue from it with --c, or start again with --overwrite,"
    else:
        kept, fix = "no checkpoint had been written yet", "start again with --overwrite"
    return PolyCLUserError(
        f"Training diverged in epoch {state.epoch + 1} (iteration {iteration}): non-finite {what}. The run stopped "
        f"and {kept}. To fix it, {fix} with a lower --lr (this run: {state.scheduler.base_lrs[0]:g})."
    )


def train(state: TrainState, task: PretrainingTask, settings: PretrainSettings, folder: str, log: RunLog,
          device: torch.device) -> None:
    """Train from ``state.epoch`` up to ``settings.epochs``, checkpointing and logging after every epoch."""
    loader = make_loader(task.dataset, task.sampler, settings.num_workers, device)
    title = f"{method_name(settings.strategy)} {settings.dataset_name} fold {settings.fold}"
    while state.epoch < settings.epochs:
        metrics = run_epoch(state, task, loader, device, settings.epochs)
        state.epoch += 1
        for key, value in metrics.items():
            state.history[key].append(value)
        atomic_torch_save(checkpoint_dict(state, settings), os.path.join(folder, LATEST_CHECKPOINT))
        log(epoch_line(state.epoch, settings.epochs, metrics))
        if task.triplet_sampler is not None and task.triplet_sampler.fallbacks:
            log(f"Epoch {state.epoch}: anchors served by a fallback: {task.triplet_sampler.fallbacks}")
        plot_progress(state.history, os.path.join(folder, PLOT_FILE), title)
