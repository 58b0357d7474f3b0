"""Figure 5: multi-process (DDP) scaling of the pre-training loop end to end.

Scaling efficiency = throughput of N processes / (N x throughput of one process), both measured in this run with the
same per-process batch (the N-process run trains on global batches of N x ``--batch-size`` triplets, each process
on its share of ``--batch-size``: weak scaling), the same per-process loader workers and torch threads, and
the real loop (``run_epoch``) over the real data, after warm-up. The benchmark process is rank 0 of the N processes
and also runs the one-process reference, its repeats interleaved with the N-process repeats (while it runs, the other
ranks wait at a barrier, idle); every N-process repeat starts at a barrier and rank 0's time is reported (the
gradient all-reduce of every step keeps the ranks in step). The efficiency is the median of the per-repeat ratios.

On CUDA: one process per GPU (nccl). On the CPU: N gloo processes that share the machine's cores; each process, and
the one-process reference, gets ``CPUs / N`` torch threads, so the figure says what N CPU processes on N x that many
cores would give (communication, loader, imbalance), not how one GPU per process would scale.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.multiprocessing as torch_mp

from nnunet_polycl.benchmark.pretraining_workloads import EndToEndWorkload, ModelOptions
from nnunet_polycl.benchmark.settings import BenchmarkSettings
from nnunet_polycl.benchmark.stats import paired_ratio, summarise
from nnunet_polycl.benchmark.timing import timed
from nnunet_polycl.checkpoint import seed_everything
from nnunet_polycl.environment import available_cpus
from nnunet_polycl.pretraining.distributed import Ranks, barrier, destroy_process_group, init_process_group
from nnunet_polycl.pretraining.launch import free_port
from nnunet_polycl.pretraining.session import prepare
from nnunet_polycl.pretraining.settings import PretrainRequest
from nnunet_polycl.pretraining.slice_data import default_num_workers


def default_processes(device: str) -> int:
    """2 on the CPU (gloo), every visible GPU on CUDA (the figure needs at least 2)."""
    return 2 if device == "cpu" else torch.cuda.device_count()


def _request(s: BenchmarkSettings, processes: int, workers: int, folder: str) -> PretrainRequest:
    return PretrainRequest(s.dataset, s.plans_identifier, s.configuration, s.fold, s.strategy, epochs=1,
                           batch_size=s.batch_size * processes, device=s.device, num_workers=workers,
                           output_folder=folder, num_gpus=processes, allow_cpu_ddp=True)


def _timed_repeats(workloads: list[EndToEndWorkload], s: BenchmarkSettings, ranks: Ranks) -> list[list[float]]:
    """``s.warmup`` warm-up epochs of every workload, then ``s.repeats`` timed epochs of each, interleaved; a
    multi-process workload's epochs start at a barrier (a single-process one runs while the other ranks wait)."""
    for workload in workloads:
        workload.run(s.warmup)
    durations: list[list[float]] = [[] for _ in workloads]
    for _ in range(s.repeats):
        for workload, column in zip(workloads, durations, strict=True):
            if workload.ranks.distributed:
                barrier(ranks)
            column.append(timed(workload, 1, workload.device))
    return durations


def _rank(ranks: Ranks, init_method: str, request: PretrainRequest, threads: int, steps: int, s: BenchmarkSettings,
          reference: PretrainRequest | None = None) -> list[list[float]]:
    """One rank of the N-process measurement: the repeat durations of its workloads. Rank 0 also runs the
    one-process ``reference`` (first in the list), its repeats interleaved with the N-process ones."""
    run = prepare(request)
    device = init_process_group(ranks, run.device.type, init_method)
    workloads = []
    try:
        torch.set_num_threads(threads)
        seed_everything(0)
        if reference is not None:
            workloads.append(EndToEndWorkload(replace(prepare(reference), device=device), ModelOptions(), steps))
        workloads.append(EndToEndWorkload(replace(run, device=device), ModelOptions(), steps, ranks))
        return _timed_repeats(workloads, s, ranks)
    finally:
        for workload in workloads:
            workload.close()
        destroy_process_group()


def _helper(rank: int, world_size: int, init_method: str, request: PretrainRequest, threads: int, steps: int,
            s: BenchmarkSettings) -> None:
    """A spawned rank 1.. (rank 0 is the benchmark process itself)."""
    torch.backends.cudnn.benchmark = s.device == "cuda"
    _rank(Ranks(rank, world_size, rank), init_method, request, threads, steps, s)


def scaling_figure(s: BenchmarkSettings, processes: int, steps: int, folder: str,
                   say: Callable[[str], None]) -> dict:
    """Figure 5 for ``processes`` ranks: one-process and N-process throughput and the scaling efficiency.

    This process is rank 0 of the N processes (ranks 1.. are spawned); its repeats of the one-process reference
    (while the other ranks wait) alternate with repeats of all N together.
    """
    if s.threads is not None:
        threads = s.threads
    else:
        threads = max(1, available_cpus() // processes) if s.device == "cpu" else torch.get_num_threads()
    workers = s.num_workers if s.num_workers is not None else default_num_workers(processes)
    backend = "gloo" if s.device == "cpu" else "nccl"
    say(f"Multi-process: 1 then {processes} processes ({backend}), {s.batch_size} triplets, {threads} torch threads "
        f"and {workers} loader workers per process, {steps} steps per repeat")
    init_method, request = f"tcp://127.0.0.1:{free_port()}", _request(s, processes, workers, folder)
    context = torch_mp.get_context("spawn")
    helpers = [context.Process(target=_helper, args=(rank, processes, init_method, request, threads, steps, s))
               for rank in range(1, processes)]
    for helper in helpers:
        helper.start()
    saved_threads = torch.get_num_threads()
    try:
        one, many = _rank(Ranks(0, processes, 0), init_method, request, threads, steps, s,
                          reference=_request(s, 1, workers, folder))
    finally:
        torch.set_num_threads(saved_threads)
        for helper in helpers:
            helper.join()
    if any(helper.exitcode != 0 for helper in helpers):
        raise RuntimeError(f"a spawned rank of the multi-process figure failed: {[h.exitcode for h in helpers]}")
    one, many = (summarise(steps * s.batch_size * n, seconds, "triplets/s") for n, seconds in
                 ((1, one), (processes, many)))
    return {"one_process": {**one, "processes": 1, "steps_per_repeat": steps},
            "n_processes": {**many, "processes": processes, "steps_per_repeat": steps},
            "processes": processes, "backend": backend,
            "per_process_batch": s.batch_size, "threads_per_process": threads, "workers_per_process": workers,
            "scaling_efficiency": paired_ratio(many["per_repeat"], [processes * r for r in one["per_repeat"]]),
            "what": "weak scaling: global batch = processes x per-process batch" + (
                "; CPU processes share this machine's cores (each gets CPUs / processes threads)"
                if s.device == "cpu" else "; one GPU per process")}
