"""Does data loading starve the model? End-to-end pre-training speed against the model alone.

End-to-end: the real training loop (DataLoader workers reading preprocessed slices, forward, loss, backward, Adam
step) in slices per second. Model only: the same optimisation steps on random in-memory tensors of the same batch
shapes on the same device. Both are measured after a warm-up epoch, alternating, in the same process (the median of
the per-round ratios is reported, which tolerates a machine shared with other work).
"""
from __future__ import annotations

import statistics
import time

import torch

from nnunet_polycl.checkpoint import seed_everything
from nnunet_polycl.heads import ContrastiveEncoder
from nnunet_polycl.network import build_plans_network, encoder_of
from nnunet_polycl.pretraining.loop import TrainState, new_state, run_epoch, train_step
from nnunet_polycl.pretraining.session import PreparedRun
from nnunet_polycl.pretraining.slice_data import make_loader


def _model_only_epoch(state: TrainState, run: PreparedRun, batch_sizes: list[int], channels: int) -> float:
    """Slices per second of one epoch's optimisation steps on random tensors."""
    shape = (channels, *run.ctx.patch_size)
    batches = [torch.randn(n, *shape).to(run.device) for n in batch_sizes]
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        train_step(state, run.task, batch, run.device)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(batch_sizes) / (time.perf_counter() - start)


def measure_throughput(run: PreparedRun, rounds: int = 3) -> dict[str, float]:
    """``{'end_to_end', 'model_only', 'ratio'}`` in slices/s (medians over ``rounds``; ratio = median of ratios)."""
    s = run.settings
    seed_everything(s.seed)
    model = ContrastiveEncoder(encoder_of(build_plans_network(run.ctx)), s.embed_dim).to(run.device)
    state = new_state(model, s.lr, len(run.task.sampler), run.device)
    loader = make_loader(run.task.dataset, run.task.sampler, s.num_workers, run.device)
    views = run.task.objective.views
    batch_sizes = [views * (stop - start) for start, stop in run.task.sampler.bounds]
    channels = len(run.ctx.dataset_json["channel_names"])
    run_epoch(state, run.task, loader, run.device, s.epochs)  # warm-up: worker start-up, allocator, kernels
    _model_only_epoch(state, run, batch_sizes, channels)
    end_to_end, model_only = [], []
    for _ in range(rounds):
        state.epoch += 1
        end_to_end.append(run_epoch(state, run.task, loader, run.device, s.epochs)["slices_per_s"])
        model_only.append(_model_only_epoch(state, run, batch_sizes, channels))
    ratios = [e / m for e, m in zip(end_to_end, model_only, strict=True)]
    return {"end_to_end": statistics.median(end_to_end), "model_only": statistics.median(model_only),
            "ratio": statistics.median(ratios)}
