"""Settings of one ``polycl_benchmark`` run, with the defaults of the normal and of the ``--tiny`` mode."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from nnunet_polycl.benchmark.pretraining_workloads import ModelOptions
from nnunet_polycl.paths import DEFAULT_STRATEGY, PolyCLUserError

DEMO_DATASET = 990
REPEAT_SECONDS = 2.0  # a timed repeat of compute / end to end / fine-tuning lasts about this long (when calibrated)
DATA_REPEAT_SECONDS = 1.0  # ... of the data path alone (much faster: a shorter repeat suffices)
TINY = {"batch_size": 4, "finetuning_batch_size": 2, "repeats": 2, "steps": 1, "warmup": 1,
        "finetuning_warmup": 1, "repeat_seconds": 0.05, "data_repeat_seconds": 0.05}


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure and how; ``steps`` None = calibrated so that a repeat lasts about ``repeat_seconds``."""

    dataset: str | int = DEMO_DATASET
    plans_identifier: str = "nnUNetPlans"
    configuration: str = "2d"
    fold: int | str = 0
    strategy: str = DEFAULT_STRATEGY
    device: str = "cuda"
    batch_size: int = 20
    repeats: int = 5
    steps: int | None = None
    warmup: int = 1
    num_workers: int | None = None
    threads: int | None = None  # torch intra-op threads of the benchmark process; None: torch's default
    model: ModelOptions = field(default_factory=ModelOptions)
    patch: tuple[int, int] | None = None
    finetuning: bool = True
    finetuning_batch_size: int | None = None  # None: the plans' batch size (as nnUNetv2_train); --tiny: 2
    finetuning_warmup: int = 2  # iterations, after the augmentation buffer was drained
    repeat_seconds: float = REPEAT_SECONDS
    data_repeat_seconds: float = DATA_REPEAT_SECONDS
    tiny: bool = False
    ddp_processes: int | None = None  # figure 5; None: 2 on the CPU, every visible GPU on CUDA; 0 or 1: skipped

    def to_dict(self) -> dict:
        return asdict(self)


def tiny_settings(settings: BenchmarkSettings, explicit: set[str]) -> BenchmarkSettings:
    """``settings`` with the tiny mode's values for every field in :data:`TINY` not in ``explicit``."""
    return replace(settings, tiny=True, **{k: v for k, v in TINY.items() if k not in explicit})


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def check_settings(s: BenchmarkSettings) -> None:
    """Raise a PolyCLUserError listing every invalid number."""
    problems = [text for bad, text in (
        (s.batch_size < 1, f"--batch-size must be >= 1 (got {s.batch_size})"),
        (s.repeats < 1, f"--repeats must be >= 1 (got {s.repeats})"),
        (s.steps is not None and s.steps < 1, f"--steps must be >= 1 (got {s.steps})"),
        (s.warmup < 1, f"--warmup must be >= 1 (got {s.warmup})"),
        (s.num_workers is not None and s.num_workers < 0, f"--num-workers must be >= 0 (got {s.num_workers})"),
        (s.threads is not None and s.threads < 1, f"--threads must be >= 1 (got {s.threads})"),
        (s.patch is not None and min(s.patch) < 8, f"--patch sizes must be >= 8 (got {s.patch})"),
        (s.ddp_processes is not None and s.ddp_processes < 0, f"--ddp-processes must be >= 0 (got {s.ddp_processes})"),
        (s.device == "cuda" and (s.ddp_processes or 0) > max(1, _visible_gpus()),
         f"--ddp-processes {s.ddp_processes} needs as many GPUs, {_visible_gpus()} visible"),
    ) if bad]
    if problems:
        raise PolyCLUserError("; ".join(problems) + ".")
