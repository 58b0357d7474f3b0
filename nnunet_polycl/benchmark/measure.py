"""One benchmark run: set up the real pre-training, measure every figure, assemble and write the result."""
from __future__ import annotations

import os
from datetime import datetime
from os.path import join

import torch

from nnunet_polycl.benchmark.figures import finetuning_figures, patch_figure, pretraining_figures
from nnunet_polycl.benchmark.pretraining_workloads import prepare_pretraining
from nnunet_polycl.benchmark.report import format_table, headline, load_average, machine_info
from nnunet_polycl.benchmark.scaling import default_processes, scaling_figure
from nnunet_polycl.benchmark.settings import BenchmarkSettings
from nnunet_polycl.checkpoint import atomic_write_json, seed_everything
from nnunet_polycl.paths import PRETRAINED_WEIGHTS_FILE


def say(line: str) -> None:
    """A progress line on the console."""
    print(f"{datetime.now():%H:%M:%S} {line}", flush=True)


def measure(s: BenchmarkSettings, scratch: str, log_file: str) -> dict:
    """All figures of ``s``; pre-training and fine-tuning write only into ``scratch`` (and ``log_file``)."""
    seed_everything(0)
    load_start = load_average()
    weights_folder = join(scratch, "pretraining")
    run = prepare_pretraining(s.dataset, s.plans_identifier, s.configuration, s.fold, s.strategy, s.batch_size,
                              s.device, s.num_workers, weights_folder)
    say(f"{run.ctx.dataset_name} ({s.plans_identifier}, {s.configuration}, fold {run.settings.fold}), strategy "
        f"{s.strategy}, device {run.device}, patch {list(run.ctx.patch_size)}")
    os.makedirs(weights_folder, exist_ok=True)
    figures, benchmark_mode = {}, torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = run.device.type == "cuda"  # as polycl_pretrain's loop sets it
    try:
        if s.patch is not None:  # first, while nothing else is in memory
            figures["compute_at_patch"] = patch_figure(run, s, say)
        figures.update(pretraining_figures(run, s, weights_folder if s.finetuning else None, say))
        # rank 0 of figure 5 runs here: with the setting its other ranks (and polycl_pretrain) use
        figures["multi_process"] = _multi_process_figure(s, figures["end_to_end"]["steps_per_repeat"], scratch)
    finally:
        torch.backends.cudnn.benchmark = benchmark_mode
    if s.finetuning:
        figures["finetuning"] = finetuning_figures(run, s, join(weights_folder, PRETRAINED_WEIGHTS_FILE), scratch,
                                                   log_file, say)
    return {
        "benchmark": "polycl_benchmark", "created": datetime.now().isoformat(timespec="seconds"),
        "dataset": run.ctx.dataset_name, "patch_size": list(run.ctx.patch_size),
        "settings": {**s.to_dict(), "num_workers": run.settings.num_workers, "fold": run.settings.fold},
        "machine": {**machine_info(run.device), "load_average_start": load_start, "load_average_end": load_average()},
        "figures": figures, "headline": headline(figures),
    }


def _multi_process_figure(s: BenchmarkSettings, steps: int, scratch: str) -> dict:
    """Figure 5, or why it was skipped."""
    processes = s.ddp_processes if s.ddp_processes is not None else default_processes(s.device)
    if processes < 2:
        reason = "--ddp-processes 0" if s.ddp_processes is not None else f"{processes} GPU visible"
        say(f"Multi-process figure skipped ({reason}; it needs 2 or more processes)")
        return {"skipped": f"{reason}; the figure needs 2 or more processes"}
    if s.device == "cuda":
        torch.cuda.empty_cache()  # rank 0 shares GPU 0 with this process
    return scaling_figure(s, processes, steps, join(scratch, "scaling"), say)


def write_result(result: dict, output: str) -> None:
    """Print the table and write the JSON (atomically)."""
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['cpus_available']} CPUs"
    options = [name for name, on in result["settings"]["model"].items() if on] or ["as polycl_pretrain runs"]
    print(f"\nPolyCL benchmark on {result['dataset']} (patch {result['patch_size']}), {where}, torch threads "
          f"{machine['torch_threads']}, load average {machine['load_average_start']} -> "
          f"{machine['load_average_end']}; pre-training model: {', '.join(options)}")
    print(format_table(result))
    atomic_write_json(result, output)
    print(f"Result written to {output}")
