"""The processes of a multi-process (torch DDP) pre-training run: ranks, process group, collectives.

- One process per GPU (``nccl``), or, for tests, several processes on the CPU (``gloo``). Rank 0 alone writes files
  (checkpoints, log, plot, ``config.json``, ``pretrained_weights.pth``) and prints progress.
- The model is wrapped in ``DistributedDataParallel``: gradients are averaged over the ranks during the backward
  pass. Each rank's loss is its share of the global batch's mean loss (see :mod:`.sharding`), so the loop multiplies
  it by the world size before the backward pass and the averaged gradient is that of the global mean.
- Collectives time out after :data:`PROCESS_GROUP_TIMEOUT`: a rank that hangs (rather than dies, which the launcher
  notices at once) takes the others down within that bound.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from nnunet_polycl.environment import available_cpus
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.sharding import BatchShard

PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)
CPU_DDP_FLAG = "--allow-cpu-ddp"


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = Ranks()


def torchrun_ranks() -> Ranks | None:
    """The ranks that ``torchrun`` (or another ``env://`` launcher) gives this process; None outside one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def requested_world_size(num_gpus: int) -> int:
    """The run's number of processes: torchrun's world size under torchrun, else ``-num_gpus``.

    Raises:
        PolyCLUserError: ``-num_gpus`` given under torchrun and different from torchrun's world size.
    """
    ranks = torchrun_ranks()
    if ranks is None:
        return num_gpus
    if num_gpus not in (1, ranks.world_size):
        raise PolyCLUserError(
            f"-num_gpus {num_gpus} under torchrun, which started {ranks.world_size} processes: under torchrun the "
            f"number of processes is torchrun's (--nproc-per-node). Drop -num_gpus.")
    return ranks.world_size


def check_process_count(world_size: int, device: str, allow_cpu_ddp: bool) -> None:
    """Refuse a number of processes the device cannot serve; names the fix.

    Raises:
        PolyCLUserError: more than one process on the CPU without ``--allow-cpu-ddp``, or on MPS; more CUDA
            processes than visible GPUs.
    """
    if world_size <= 1:
        return
    if device == "cpu" and not allow_cpu_ddp:
        raise PolyCLUserError(
            f"-num_gpus {world_size} with -device cpu: several processes on the CPU (gloo) are meant for tests and "
            f"are slower than one process using all cores. Use -device cuda with {world_size} GPUs, or -num_gpus 1; "
            f"pass {CPU_DDP_FLAG} to run {world_size} CPU processes anyway.")
    if device == "mps":
        raise PolyCLUserError(f"-num_gpus {world_size} with -device mps: multi-process training needs CUDA GPUs (or "
                              f"the CPU with {CPU_DDP_FLAG}). Use -num_gpus 1.")
    if device == "cuda" and world_size > torch.cuda.device_count():
        raise PolyCLUserError(
            f"-num_gpus {world_size} but only {torch.cuda.device_count()} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Use -num_gpus "
            f"{max(1, torch.cuda.device_count())} or make more GPUs visible.")


def check_batches_divide(world_size: int, batch_size: int, smallest_batch: int, views_name: str) -> None:
    """Every global batch must split into non-empty shards, and ``--batch-size`` evenly.

    Raises:
        PolyCLUserError: ``batch_size`` is not a multiple of ``world_size``, or the epoch's last batch is smaller
            than ``world_size``.
    """
    if world_size == 1:
        return
    if batch_size % world_size:
        lower, upper = (batch_size // world_size) * world_size, (batch_size // world_size + 1) * world_size
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise PolyCLUserError(
            f"--batch-size {batch_size} does not divide across {world_size} processes: every process takes the same "
            f"share of each global batch. Use --batch-size {options}, or another -num_gpus.")
    if smallest_batch < world_size:
        raise PolyCLUserError(
            f"The epoch's last batch has {smallest_batch} {views_name}, fewer than the {world_size} processes that "
            f"share it. Use another --batch-size (or --slice-fraction) so that the last batch keeps at least "
            f"{world_size}, or fewer processes.")


def init_process_group(ranks: Ranks, device_type: str, init_method: str) -> torch.device:
    """Join the run's process group (nccl on CUDA, gloo elsewhere); returns this rank's device.

    On CUDA the rank uses GPU ``local_rank``; on the CPU each rank gets an equal share of the cores as torch threads.
    """
    device = torch.device("cpu") if device_type == "cpu" else torch.device(device_type, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        cpus = available_cpus()
        torch.set_num_threads(max(1, cpus // ranks.world_size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init_method, rank=ranks.rank,
                            world_size=ranks.world_size, timeout=PROCESS_GROUP_TIMEOUT)
    return device


def destroy_process_group() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(tensor: torch.Tensor, ranks: Ranks, op: str = "sum") -> torch.Tensor:
    """Sum (or ``op="min"``) ``tensor`` over the ranks, in place; no-op in a single process."""
    if ranks.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return tensor


def barrier(ranks: Ranks) -> None:
    """Wait until every rank has arrived (no-op in a single process)."""
    if ranks.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a multi-process run (rank 0's weights are broadcast), else ``model``."""
    if not ranks.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order; the backward pass returns to each rank the gradient of the summed
    losses of all ranks with respect to its own rows (like ``torch.distributed.nn.functional.all_gather``, for rows
    of unequal counts, on gloo and nccl)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, shard: BatchShard) -> torch.Tensor:
        ctx.shard = shard
        longest = max(stop - start for start, stop in shard.bounds)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in shard.bounds]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, shard.bounds, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.shard.start:ctx.shard.stop], None


def gather_rows(tensor: torch.Tensor, shard: BatchShard) -> torch.Tensor:
    """The global batch's rows ``[M, ...]`` from every rank's ``tensor`` (its shard's rows), with gradient."""
    if shard.world_size == 1:
        return tensor
    return _GatherRows.apply(tensor, shard)
