"""The four figures of ``polycl_benchmark`` (and the optional compute figure at another patch size).

Protocol of every figure: build the workload from the real code, warm it up (``warmup`` units, which on a fresh
model also yields the peak memory), choose the work per repeat (``steps``, or calibrated to about
``repeat_seconds``), then time ``repeats`` repeats. The repeats of the three pre-training figures are interleaved;
the two fine-tuning trainers run one after the other (see :func:`finetuning_figures`).
"""
from __future__ import annotations

from collections.abc import Callable
from os.path import join

import torch

from nnunet_polycl.benchmark.finetuning_workloads import (
    STOCK_TRAINER,
    augmentation_buffer_batches,
    polycl_trainer_name,
    started_trainer,
    trainer_environment,
)
from nnunet_polycl.benchmark.memory import peak_memory
from nnunet_polycl.benchmark.pretraining_workloads import (
    ComputeWorkload,
    DataPathWorkload,
    EndToEndWorkload,
    real_batch_shape,
)
from nnunet_polycl.benchmark.report import fits_in_8gb
from nnunet_polycl.benchmark.settings import BenchmarkSettings
from nnunet_polycl.benchmark.stats import summarise
from nnunet_polycl.benchmark.timing import Workload, calibrate, measure_interleaved
from nnunet_polycl.pretraining.outputs import write_pretrained_weights
from nnunet_polycl.pretraining.session import PreparedRun

Say = Callable[[str], None]
DATA_EPOCH_BATCHES = 50
FINETUNING_MIN_ITERATIONS = 2  # per repeat, when calibrated: one iteration is too short a sample on a busy CPU


def _progress(say: Say, repeats: int) -> Callable[[int, str, float], None]:
    return lambda repeat, name, seconds: say(f"  repeat {repeat + 1}/{repeats}: {name} {seconds:.2f} s")


def _timed_figures(plan: list[tuple[Workload, int, str]], s: BenchmarkSettings, device: torch.device,
                   say: Say) -> list[dict]:
    """Interleaved repeats of ``(workload, units per repeat, rate unit)``; one figure record each."""
    durations = measure_interleaved([(w, units) for w, units, _ in plan], s.repeats, device,
                                    _progress(say, s.repeats))
    figures = []
    for (workload, units, rate_unit), seconds in zip(plan, durations, strict=True):
        steps = units * workload.steps_per_unit
        figures.append({**summarise(steps * workload.items_per_step, seconds, rate_unit), "steps_per_repeat": steps})
    return figures


def _warm_compute(workload: ComputeWorkload, s: BenchmarkSettings, device: torch.device) -> tuple[int, dict]:
    """Warm-up (peak memory measured on it) and steps per repeat of a compute workload."""
    with peak_memory(device, workload.model) as memory:
        workload.run(s.warmup)
    steps = s.steps or calibrate(workload, device, s.repeat_seconds)
    return steps, memory


def _memory_fields(memory: dict) -> dict:
    fields = {"peak_memory_bytes": memory["peak_bytes"], "peak_memory_method": memory["method"]}
    if "reserved_bytes" in memory:
        fields["peak_reserved_bytes"] = memory["reserved_bytes"]
    return fields


def pretraining_figures(run: PreparedRun, s: BenchmarkSettings, weights_folder: str | None,
                        say: Say) -> dict[str, dict]:
    """Figures 1-3 (compute, data path, end to end); writes pre-trained weights to ``weights_folder`` if given.

    Compute and end to end do the same number of steps per repeat. The data path's epochs have at least as many
    batches, and at least a real epoch's up to :data:`DATA_EPOCH_BATCHES`, so that it measures throughput rather
    than the latency of a loader's first batch; its repeats are calibrated separately.
    """
    shape = real_batch_shape(run)
    say(f"Pre-training workloads: batch {list(shape)} ({s.batch_size} triplets), "
        f"{run.settings.num_workers} loader workers, {len(run.index)} slices")
    compute = ComputeWorkload(run, s.model, shape)
    steps, memory = _warm_compute(compute, s, run.device)
    data = DataPathWorkload(run, max(steps, min(len(run.task.sampler), DATA_EPOCH_BATCHES)))
    e2e = EndToEndWorkload(run, s.model, steps)
    try:
        data.run(1)  # starts the workers
        data_units = 1 if s.steps else calibrate(data, run.device, s.data_repeat_seconds)
        e2e.run(1)
        say(f"Timing {s.repeats} repeats: compute {steps} steps, data path {data_units * data.steps_per_unit} "
            f"batches, end to end {steps} steps")
        figures = _timed_figures([(compute, steps, "triplets/s"), (data, data_units, "triplets/s"),
                                  (e2e, 1, "triplets/s")], s, run.device, say)
        if weights_folder is not None:
            write_pretrained_weights(weights_folder, run.ctx, e2e.encoder_state(), run.settings, e2e.epoch,
                                     run.train_ids)
    finally:
        data.close()
        e2e.close()
    figures[0].update(_memory_fields(memory))
    return dict(zip(("compute", "data_path", "end_to_end"), figures, strict=True))


def patch_figure(run: PreparedRun, s: BenchmarkSettings, say: Say) -> dict:
    """Compute figure on random slices of ``s.patch`` (e.g. the paper's 256 x 256), with its peak memory."""
    channels = real_batch_shape(run)[1]
    shape = (run.task.objective.views * s.batch_size, channels, *s.patch)
    say(f"Compute at patch {s.patch[0]}x{s.patch[1]}: batch {list(shape)}")
    workload = ComputeWorkload(run, s.model, shape, name=f"compute {s.patch[0]}x{s.patch[1]}")
    steps, memory = _warm_compute(workload, s, run.device)
    figure = _timed_figures([(workload, steps, "triplets/s")], s, run.device, say)[0]
    figure.update(patch_size=list(s.patch), **_memory_fields(memory))
    return {**figure, "fits_in_8gb": fits_in_8gb(figure)}


def finetuning_figures(run: PreparedRun, s: BenchmarkSettings, weights_file: str, scratch: str, log_file: str,
                       say: Say) -> dict[str, dict]:
    """Figure 4: iterations/s of stock ``nnUNetTrainer``, then of the PolyCL trainer, each running alone.

    The trainers run one after the other, not interleaved: a started trainer's data augmentation workers keep
    producing batches in the background, which would slow down the other trainer's timed repeats. Before its
    warm-up iterations, each trainer's loader is drained of the batches its augmenter can hold ready
    (:func:`augmentation_buffer_batches`): served from that buffer, iterations would look faster than the steady
    state whenever augmentation is the bottleneck. The iterations per repeat are calibrated on the stock trainer
    and used for both.
    """
    environment = trainer_environment(join(scratch, "nnUNet_results"), weights_file, s.model.compile)
    benchmark_mode = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = run.device.type == "cuda"  # as nnUNetv2_train sets it
    figures, iterations, buffered = {}, s.steps, augmentation_buffer_batches()
    try:
        for key, name in (("stock", STOCK_TRAINER), ("polycl", polycl_trainer_name(run.settings.strategy))):
            say(f"Fine-tuning: starting {name} (nnU-Net's output goes to {log_file})")
            with started_trainer(run.ctx.dataset_name, run.settings.configuration, run.settings.fold,
                                 run.settings.plans_identifier, name, run.device, environment, log_file,
                                 s.finetuning_batch_size) as workload:
                workload.drain(buffered)
                workload.run(s.finetuning_warmup)
                iterations = iterations or calibrate(workload, run.device, s.repeat_seconds,
                                                     minimum=FINETUNING_MIN_ITERATIONS)
                say(f"Timing {s.repeats} repeats of {iterations} iterations")
                figure = _timed_figures([(workload, iterations, "iterations/s")], s, run.device, say)[0]
                figures[key] = {**figure, "trainer": name, "warmup_iterations": s.finetuning_warmup,
                                "drained_batches": buffered}
    finally:
        torch.backends.cudnn.benchmark = benchmark_mode
    return figures
