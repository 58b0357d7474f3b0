"""``polycl_benchmark``: how fast pre-training and fine-tuning run on a preprocessed dataset and a device.

Three layers as in nnU-Net's ``run_training``: :func:`benchmark_entry` parses arguments only, :func:`run_benchmark`
does the job (typed, callable from Python), :mod:`.figures` and the workload modules do the parts. The run writes
nothing outside a scratch folder except the JSON result and the log of nnU-Net's output next to it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from os.path import abspath, exists, splitext

import torch

from nnunet_polycl.benchmark.pretraining_workloads import ModelOptions
from nnunet_polycl.benchmark.settings import (
    DEMO_DATASET,
    BenchmarkSettings,
    check_settings,
    tiny_settings,
)
from nnunet_polycl.paths import DEFAULT_STRATEGY, STRATEGIES, PolyCLUserError

PROG = "polycl_benchmark"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Benchmark PolyCL on a preprocessed dataset: (1) pure compute of a pre-training step "
        "on random tensors, (2) the pre-training data path alone, (3) the pre-training loop end to end, (4) "
        "fine-tuning iterations/s of nnUNetTrainerPolyCL against nnUNetTrainer, (5) multi-process scaling of the loop. "
        "Prints a table, writes JSON.")
    p.add_argument("-d", default=str(DEMO_DATASET), metavar="DATASET",
                   help=f"dataset id or name, preprocessed for 2d (default: the demo dataset {DEMO_DATASET})")
    p.add_argument("-p", default="nnUNetPlans", metavar="PLANS", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-c", default="2d", metavar="CONFIGURATION", help="a 2D configuration (default: 2d)")
    p.add_argument("-f", default="0", metavar="FOLD", help="fold (default: 0)")
    p.add_argument("-s", "--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                   help=f"pre-training strategy (default: {DEFAULT_STRATEGY})")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu"), help="device (default: cuda)")
    p.add_argument("--batch-size", type=int, default=None, help="triplets per pre-training batch (default: 20)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure, median reported (default: 5)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps (batches, iterations) per repeat (default: calibrated to ~2 s per repeat, at least 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up steps of the pre-training figures before timing (default: 1; fine-tuning: 2 "
                        "iterations after draining the batches nnU-Net's augmentation workers hold ready)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="pre-training DataLoader workers (default: polycl_pretrain's, min(8, CPUs))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the benchmark process (default: torch's, one per core). On a machine "
                        "shared with other work, 1 gives far steadier CPU timings")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the pre-training model; nnUNet_compile=true for the trainers")
    p.add_argument("--channels-last", action="store_true", help="pre-training model in channels_last memory format")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="what-if: bf16 autocast for pre-training on the CPU too (polycl_pretrain autocasts on CUDA "
                        "only); pays off on CPUs with AVX512-BF16 or AMX")
    p.add_argument("--patch", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="also measure pure compute (and its peak memory) on random H x W slices, e.g. 256 256")
    p.add_argument("--no-finetuning", action="store_true", help="skip figure 4 (fine-tuning)")
    p.add_argument("--ddp-processes", type=int, default=None, metavar="N",
                   help="figure 5, multi-process scaling of the loop: N processes against one (default: 2 on the CPU, "
                        "with gloo; every visible GPU on CUDA, skipped with fewer than 2; 0 skips it)")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long smoke run (batch 4, 2 repeats of 1 step); explicit options still apply")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="JSON result (default: polycl_benchmark_<device>_<date-time>.json in the current folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def _settings(args: argparse.Namespace) -> BenchmarkSettings:
    given = {"batch_size": args.batch_size, "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup}
    explicit = {k for k, v in given.items() if v is not None}
    settings = BenchmarkSettings(
        dataset=args.d, plans_identifier=args.p, configuration=args.c, fold=args.f, strategy=args.strategy,
        device=args.device, num_workers=args.num_workers, threads=args.threads,
        patch=tuple(args.patch) if args.patch else None,
        model=ModelOptions(channels_last=args.channels_last, compile=args.compile, cpu_bf16=args.cpu_bf16),
        finetuning=not args.no_finetuning, ddp_processes=args.ddp_processes, **{k: given[k] for k in explicit})
    return tiny_settings(settings, explicit) if args.tiny else settings


def benchmark_entry(argv: Sequence[str] | None = None) -> None:
    """Console entry point: parse, run, print user errors as ``polycl_benchmark: error: ...`` (exit 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    output = args.output or f"polycl_benchmark_{args.device}_{datetime.now():%Y%m%d-%H%M%S}.json"
    try:
        run_benchmark(_settings(args), output, overwrite=args.overwrite)
    except PolyCLUserError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except KeyboardInterrupt:
        sys.exit(130)


def log_file_for(output: str) -> str:
    """Where nnU-Net's console output of the fine-tuning figure goes: ``<output stem>.nnunet.log``."""
    return splitext(output)[0] + ".nnunet.log"


def _check_output(output: str, overwrite: bool) -> None:
    for path in (output, log_file_for(output)):
        if exists(path) and not overwrite:
            raise PolyCLUserError(f"{path} exists. Choose another file with -o, or pass --overwrite to replace it.")
    folder = os.path.dirname(abspath(output))
    if not os.path.isdir(folder):
        raise PolyCLUserError(f"The folder of -o {output} does not exist; create it first.")


def run_benchmark(settings: BenchmarkSettings, output: str, overwrite: bool = False) -> dict:
    """Measure every figure, print the table, write the JSON result to ``output``; returns the result.

    Raises:
        PolyCLUserError: invalid settings, an existing output (without ``overwrite``), or any input problem
            ``polycl_pretrain`` would report (unknown or unprocessed dataset, no CUDA, ...).
    """
    from nnunet_polycl.benchmark.measure import measure, write_result

    check_settings(settings)
    output = abspath(output)
    _check_output(output, overwrite)
    if overwrite and exists(log_file_for(output)):
        os.remove(log_file_for(output))
    start, threads = time.perf_counter(), torch.get_num_threads()
    try:
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        with tempfile.TemporaryDirectory(prefix="polycl_benchmark_") as scratch:
            result = measure(settings, scratch, log_file_for(output))
    finally:
        torch.set_num_threads(threads)
    result["wall_time_s"] = time.perf_counter() - start
    write_result(result, output)
    return result
