"""Timing workloads on a device: warm-up, calibration of the work per repeat, interleaved repeats.

A workload does ``units`` units of work when run (a training step, an epoch of N batches, an iteration). Timings
synchronise the device before starting and stopping the clock, so that queued CUDA kernels are counted where they
belong.
Repeats of several workloads are interleaved (A, B, C, A, B, C, ...): on a shared machine a change of background load
then hits every figure alike instead of one figure's repeats, which keeps ratios between them meaningful.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import torch

MAX_UNITS = 100_000


class Workload(Protocol):
    """Something to time: ``run(units)`` does ``units`` units of ``steps_per_unit`` steps of ``items_per_step``."""

    name: str
    steps_per_unit: int
    items_per_step: int

    def run(self, units: int) -> None: ...


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(workload: Workload, units: int, device: torch.device) -> float:
    """Seconds that ``workload.run(units)`` takes, device synchronised at both ends."""
    synchronize(device)
    start = time.perf_counter()
    workload.run(units)
    synchronize(device)
    return time.perf_counter() - start


def calibrate(workload: Workload, device: torch.device, target_seconds: float, minimum: int = 1) -> int:
    """Units of work that take about ``target_seconds`` (at least ``minimum``), found by timing growing runs.

    Runs 1, 4, 16, ... units until a run takes a quarter of the target, then scales. The runs also warm up.
    """
    units = max(1, minimum)
    while True:
        seconds = timed(workload, units, device)
        if seconds >= target_seconds / 4 or units >= MAX_UNITS:
            return int(min(MAX_UNITS, max(minimum, round(units * target_seconds / max(seconds, 1e-9)))))
        units *= 4


def measure_interleaved(plan: Sequence[tuple[Workload, int]], repeats: int, device: torch.device,
                        progress=None) -> list[list[float]]:
    """Durations (s) of ``repeats`` runs of every ``(workload, units)`` of ``plan``, interleaved; one list each.

    ``progress(repeat, workload_name, seconds)``, when given, is called after every run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}.")
    durations: list[list[float]] = [[] for _ in plan]
    for repeat in range(repeats):
        for column, (workload, units) in zip(durations, plan, strict=True):
            column.append(timed(workload, units, device))
            if progress is not None:
                progress(repeat, workload.name, column[-1])
    return durations
