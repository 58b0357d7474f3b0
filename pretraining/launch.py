"""Starting a run: in this process, as N processes nnU-Net style (``-num_gpus N``), or as one rank of ``torchrun``.

- ``-num_gpus 1`` (default): this process trains.
- ``-num_gpus N``: like ``nnUNetv2_train -num_gpus``, this process validates everything first (a wrong input is
  reported before anything is written), then spawns N rank processes that meet on a free local port, and waits for
  them. Each rank prepares the run itself; rank 0 writes only after all ranks have joined the process group.
- ``torchrun --nproc-per-node N $(which polycl_pretrain) ...``: every process that torchrun starts is one rank
  (``env://``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

A rank that fails or is killed ends the run: the launcher gives the others :data:`STOP_GRACE_S` to stop on their own
(they fail at their next collective operation), then terminates them, and reports which rank failed and how (exit
status or signal), also when it happens after the last epoch: the run then counts as failed, and the message says
whether rank 0 had written the final files. Checkpoints are written atomically, so the last one written stays
complete and ``--c`` continues from it. A launcher that is killed takes its ranks with it (Linux: they receive SIGINT
when it dies). Under torchrun, torchrun's agent stops the others and names the failed rank and its signal.

The end of a multi-process run: every rank waits at a barrier until rank 0 has written the final files, drops the DDP
wrapper (its reducer holds the process group), and then destroys the process group, so that no rank tears its group
down (or exits) while another still uses it. Without this, a rank that left right after the last epoch's last
collective, while rank 0 was still writing, could abort in gloo's teardown (SIGABRT, "terminate called without an
active exception").

The output folder is locked (:mod:`nnunet_polycl.folder_lock`) for the whole run by the process the user started:
the launcher of ``-num_gpus N``, rank 0 under torchrun.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from os.path import getmtime, isfile, join

from nnunet_polycl.folder_lock import FolderLock
from nnunet_polycl.paths import PRETRAINED_WEIGHTS_FILE, PolyCLUserError
from nnunet_polycl.pretraining.cli import PROG
from nnunet_polycl.pretraining.distributed import (
    Ranks,
    barrier,
    destroy_process_group,
    init_process_group,
    torchrun_ranks,
)
from nnunet_polycl.pretraining.loop import FINAL_CHECKPOINT, LATEST_CHECKPOINT
from nnunet_polycl.pretraining.session import execute, output_folder, prepare
from nnunet_polycl.pretraining.settings import PretrainRequest

STOP_GRACE_S = 15.0  # after one rank failed: how long the others may take to stop by themselves, then to terminate
PR_SET_PDEATHSIG = 1


class RankFailedError(RuntimeError):
    """A rank process of a multi-process run died or failed with an unexpected error."""


def run_request(req: PretrainRequest) -> str:
    """Run ``req`` in this process, in ``req.num_gpus`` spawned processes, or as this torchrun rank; returns the
    output folder."""
    ranks = torchrun_ranks()
    if ranks is not None and ranks.distributed:
        return _run_torchrun_rank(req, ranks)
    with FolderLock(output_folder(req), PROG):
        run = prepare(req)
        if run.world_size == 1 or run.finished:
            return execute(run)
        _spawn_ranks(req, run.world_size, run.folder)
        return run.folder


def run_rank(req: PretrainRequest, ranks: Ranks, init_method: str) -> str:
    """One rank: prepare the run, join the process group (which waits for every rank), train, and leave together
    with the other ranks (see the module docstring)."""
    run = prepare(req)
    device = init_process_group(ranks, run.device.type, init_method)
    try:
        folder = execute(replace(run, device=device), ranks)
        try:
            barrier(ranks)  # rank 0 has written the final files; no rank leaves while another still communicates
        except RuntimeError as e:  # torch.distributed's errors: another rank died after the last epoch
            raise RankFailedError(_left_after_last_epoch(ranks, folder, e)) from None
        return folder
    finally:
        gc.collect()  # nothing of the run (DDP reducer, pending work) keeps the process group alive past its end
        destroy_process_group()


def _left_after_last_epoch(ranks: Ranks, folder: str, error: RuntimeError) -> str:
    """The error of a rank whose final barrier failed: another rank died after the last epoch."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if ranks.is_main:
        written = (f"This process had written {join(folder, FINAL_CHECKPOINT)} and {PRETRAINED_WEIGHTS_FILE} "
                   f"completely before")
    else:
        written = (f"Files in {folder} are complete where present (written atomically); without "
                   f"{FINAL_CHECKPOINT}, continue with --c")
    return (f"Process {ranks.rank} of {ranks.world_size}: another process of the run failed after the last epoch "
            f"({reason}); the launcher (or torchrun) names it and its signal. {written}.")


def _run_torchrun_rank(req: PretrainRequest, ranks: Ranks) -> str:
    try:
        with FolderLock(output_folder(req), PROG) if ranks.is_main else contextlib.nullcontext():
            return run_rank(req, ranks, "env://")
    except PolyCLUserError:
        if not ranks.is_main:  # rank 0 reports it; the others end quietly with the same exit status
            raise SystemExit(2) from None
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the ranks' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_ranks(req: PretrainRequest, world_size: int, folder: str) -> None:
    """Start ``world_size`` rank processes and wait for them; raise if one fails (after stopping the others)."""
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(world_size)]  # (launcher's end, rank's end)
    init_method = f"tcp://127.0.0.1:{free_port()}"
    processes = [context.Process(target=_spawned_rank, name=f"polycl_pretrain rank {rank}",
                                 args=(rank, world_size, init_method, req, pipes[rank][1], os.getpid()))
                 for rank in range(world_size)]
    for process in processes:
        process.start()
    started = time.time()
    print(f"Started {world_size} processes (DDP, {'gloo' if req.device == 'cpu' else 'nccl'}), pids "
          f"{', '.join(str(p.pid) for p in processes)}", flush=True)
    try:
        failed = _wait_for_first_failure(processes)
    finally:
        stopped = _stop(processes)
    if failed is None:
        return
    messages = [reader.recv() for reader, _ in pipes if reader.poll()]
    if messages:  # the same user error on every rank (e.g. a diverged loss): rank 0 logged it
        raise PolyCLUserError(messages[0])
    raise RankFailedError(failure_message({rank: p.exitcode for rank, p in enumerate(processes)
                                           if p.exitcode != 0 and p not in stopped}, world_size, folder, started))


def failure_message(exitcodes: dict[int, int], world_size: int, folder: str, started: float) -> str:
    """The launcher's report of failed ranks (``{rank: exitcode}``, negative: killed by that signal) and of what
    the run left in ``folder`` (files written since ``started``, a ``time.time()``, are this run's)."""
    failures = "; ".join(f"process {rank} of {world_size} {_how_it_ended(code)}" for rank, code in exitcodes.items())
    finals = [join(folder, name) for name in (FINAL_CHECKPOINT, PRETRAINED_WEIGHTS_FILE)]
    if all(isfile(path) and getmtime(path) >= started for path in finals):
        left = (f"It failed after the last epoch: process 0 had written {finals[0]} and {finals[1]} completely "
                f"(atomically) before; they hold the finished run, but check the error above before using them.")
    else:
        left = (f"{join(folder, LATEST_CHECKPOINT)} holds the last completed epoch, if one was completed: continue "
                f"with --c (with the same or another -num_gpus).")
    return (f"{failures[0].upper()}{failures[1:]} (errors, if any, are printed above); the launcher stopped the "
            f"other processes. {left}")


def _how_it_ended(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _wait_for_first_failure(processes: list) -> multiprocessing.Process | None:
    """Wait until all processes ended successfully (None) or one failed (that process)."""
    running = list(processes)
    while running:
        multiprocessing.connection.wait([p.sentinel for p in running])
        for process in [p for p in running if p.exitcode is not None]:
            if process.exitcode != 0:
                return process
            running.remove(process)
    return None


def _stop(processes: list) -> list:
    """Give running processes :data:`STOP_GRACE_S` to end, then terminate (SIGTERM) them, then kill them; returns
    those that had to be terminated."""
    stopped = []
    for stop in (None, "terminate", "kill"):
        running = [p for p in processes if p.is_alive()]
        if not running:
            break
        for process in running:
            if stop is not None:
                getattr(process, stop)()
                stopped.append(process)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
    return stopped


def _spawned_rank(rank: int, world_size: int, init_method: str, req: PretrainRequest,
                  errors: multiprocessing.connection.Connection, launcher_pid: int) -> None:
    """Entry point of a spawned rank process: exits 2 after a user error (reported to the launcher), 130 on SIGINT;
    any other exception propagates (traceback on stderr, exit status 1)."""
    _die_with(launcher_pid)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so that atomic writes clean up
    try:
        run_rank(req, Ranks(rank, world_size, rank), init_method)
        status = 0
    except PolyCLUserError as e:
        errors.send(str(e))
        status = 2
    except KeyboardInterrupt:
        status = 130
    # Everything is written and closed, and multiprocessing cleans up before the interpreter exits; ending there
    # skips seconds of library teardown at interpreter exit.
    atexit.register(os._exit, status)
    sys.exit(status)


def _die_with(launcher_pid: int) -> None:
    """Linux: receive SIGINT when the launcher dies (so no orphaned rank keeps training); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):
        return
    if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
        sys.exit(130)
