"""Workloads of the pre-training figures, built from the real pre-training code.

- :class:`ComputeWorkload` (figure 1): ``pretraining.loop.train_step`` (encoder + head forward, PolyCL loss, backward,
  Adam step, schedule step; bf16 autocast on CUDA as in the loop) on one random batch that stays on the device.
- :class:`DataPathWorkload` (figure 2): the real slice index, triplet sampler, ``TripletBatches`` dataset and
  ``make_loader`` DataLoader (workers, prefetching, pinned memory on CUDA) producing batches and copying them to the
  device with ``non_blocking=True``, as the loop does; no model.
- :class:`EndToEndWorkload` (figure 3): ``pretraining.loop.run_epoch``, the loop itself, over such a loader; in one
  rank of a multi-process run (figure 5) over the rank's shards of the global batches, with the model in DDP.

Everything comes from ``pretraining.session.prepare`` (the function ``polycl_pretrain`` calls), so the index,
sampler, dataset, objective and settings are those of a real run. The loader workloads draw their batches from an
``EpochBatchSampler`` whose epoch has a chosen number of full batches, filled from consecutive real epochs of the
run's sampler. A unit of work of these two workloads is one such epoch: it starts the loader once (the persistent
workers are already running), like a real epoch of the same number of batches.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from nnunet_polycl.heads import ContrastiveEncoder
from nnunet_polycl.network import build_plans_network, encoder_of, unwrap
from nnunet_polycl.pretraining.distributed import SINGLE_PROCESS, Ranks, wrap_model
from nnunet_polycl.pretraining.loop import TrainState, new_state, run_epoch, train_step
from nnunet_polycl.pretraining.session import PreparedRun, prepare
from nnunet_polycl.pretraining.settings import PretrainRequest
from nnunet_polycl.pretraining.sharding import ShardedBatchSampler
from nnunet_polycl.pretraining.slice_data import BatchRequest, EpochBatchSampler, make_loader
from nnunet_polycl.pretraining.task import PretrainingTask


@dataclass(frozen=True)
class ModelOptions:
    """How the benchmark runs the model: ``channels_last`` memory format, ``torch.compile``, and ``cpu_bf16``: bf16
    autocast on the CPU too (the loop autocasts on CUDA only), to measure what it would gain."""

    channels_last: bool = False
    compile: bool = False
    cpu_bf16: bool = False


def precision(options: ModelOptions, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around the loop's steps for ``cpu_bf16`` on the CPU; else nothing (the loop's own choice)."""
    if options.cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_pretraining(dataset: str | int, plans_identifier: str, configuration: str, fold: int | str,
                        strategy: str, batch_size: int, device: str, num_workers: int | None,
                        scratch_folder: str) -> PreparedRun:
    """``polycl_pretrain``'s own set-up with default settings, writing nothing (output folder: ``scratch_folder``).

    Raises:
        PolyCLUserError: as ``polycl_pretrain`` (unknown dataset, not preprocessed, no CUDA, ...).
    """
    return prepare(PretrainRequest(dataset, plans_identifier, configuration, fold, strategy, epochs=1,
                                   batch_size=batch_size, device=device, num_workers=num_workers,
                                   output_folder=scratch_folder))


def new_train_state(run: PreparedRun, options: ModelOptions) -> TrainState:
    """Model (encoder of the plans network + projection head), Adam and schedule, as ``session.execute`` builds them."""
    model = ContrastiveEncoder(encoder_of(build_plans_network(run.ctx)), run.settings.embed_dim).to(run.device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    state = new_state(model, run.settings.lr, len(run.task.sampler), run.device)
    if options.compile:
        state.model = torch.compile(model, dynamic=False)  # one static graph per input shape
    return state


def real_batch_shape(run: PreparedRun) -> tuple[int, ...]:
    """Shape ``[views * M, C, H, W]`` of the first batch the run's dataset produces."""
    rows = run.task.sampler.make_epoch(0)[: run.settings.batch_size]
    return tuple(run.task.dataset[BatchRequest(0, 0, rows)].shape)


class ComputeWorkload:
    """``train_step`` on a fixed random batch of ``shape`` on the device; a unit is one step."""

    steps_per_unit = 1

    def __init__(self, run: PreparedRun, options: ModelOptions, shape: tuple[int, ...], name: str = "compute"):
        self.name = name
        self.state = new_train_state(run, options)
        self.task, self.device = run.task, run.device
        self.batch = torch.randn(shape, device=run.device)
        self.items_per_step = shape[0] // run.task.objective.views
        self.options = options

    @property
    def model(self) -> torch.nn.Module:
        return unwrap(self.state.model)

    def run(self, units: int) -> None:
        with precision(self.options, self.device):
            for _ in range(units):
                train_step(self.state, self.task, self.batch, self.device)


def items_from_epochs(make_epoch, first_epoch: int, count: int) -> np.ndarray:
    """The first ``count`` items of the real epochs ``first_epoch``, ``first_epoch + 1``, ... concatenated."""
    parts, total, epoch = [], 0, first_epoch
    while total < count:
        parts.append(make_epoch(epoch))
        total += len(parts[-1])
        epoch += 1
    return np.concatenate(parts)[:count]


class _LoaderWorkload:
    """The run's dataset behind ``make_loader``; its epochs have ``batches`` full batches (a unit is one epoch). In a
    multi-process run the loader serves this rank's shards of them."""

    def __init__(self, run: PreparedRun, name: str, batches: int, ranks: Ranks = SINGLE_PROCESS):
        self.name = name
        self.task, self.device, self.ranks = run.task, run.device, ranks
        self.steps_per_unit, self.items_per_step = batches, run.settings.batch_size
        self.sampler = EpochBatchSampler(self._items, batches * run.settings.batch_size, run.settings.batch_size)
        shards = ShardedBatchSampler(self.sampler, ranks.rank, ranks.world_size) if ranks.distributed else self.sampler
        self.loader = make_loader(run.task.dataset, shards, run.settings.num_workers, run.device)
        self.epoch = 0

    def _items(self, epoch: int) -> np.ndarray:
        return items_from_epochs(self.task.sampler.make_epoch, epoch, self.sampler.num_items)

    def close(self) -> None:
        """Stop the loader's worker processes."""
        self.loader = None


class DataPathWorkload(_LoaderWorkload):
    """Batches from the loader copied to the device (``non_blocking``, as the loop does), no model."""

    def __init__(self, run: PreparedRun, batches: int):
        super().__init__(run, "data path", batches)

    def run(self, units: int) -> None:
        for _ in range(units):
            self.sampler.set_epoch(self.epoch)
            self.epoch += 1
            for batch in self.loader:
                batch.to(self.device, non_blocking=True)


class EndToEndWorkload(_LoaderWorkload):
    """``run_epoch``, the pre-training loop, over the loader's epochs of ``batches`` steps (of this rank's shards)."""

    def __init__(self, run: PreparedRun, options: ModelOptions, batches: int, ranks: Ranks = SINGLE_PROCESS):
        super().__init__(run, "end to end", batches, ranks)
        self.state = new_train_state(run, options)
        self.state.model = wrap_model(self.state.model, ranks, run.device)
        self.task_view = PretrainingTask(run.task.dataset, self.sampler, run.task.objective, run.task.triplet_sampler)
        self.options = options

    def run(self, units: int) -> None:
        with precision(self.options, self.device):
            for _ in range(units):
                self.state.epoch = self.epoch
                run_epoch(self.state, self.task_view, self.loader, self.device, self.epoch + 1, self.ranks)
                self.epoch += 1

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The trained encoder's weights (CPU), for ``write_pretrained_weights``."""
        return {k: v.detach().cpu() for k, v in unwrap(self.state.model).encoder.state_dict().items()}
