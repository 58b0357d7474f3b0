"""Every setting of one pre-training run, as recorded in ``config.json`` and in the checkpoints."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from nnunet_polycl.paths import DEFAULT_STRATEGY, Fold, PolyCLUserError
from nnunet_polycl.unlabelled.scans import DEFAULT_MIN_ORGAN_AREA

# Settings that may change when a run is continued with --c (more epochs, another machine, a lower learning rate
# after a diverged epoch); all others define the run and must stay the same.
RESUMABLE_CHANGES = ("epochs", "num_workers", "device", "lr")
# The learning-rate schedule of the paper: cosine annealing with a warm restart every 10 epochs.
RESTART_EVERY_EPOCHS = 10


def method_name(strategy: str) -> str:
    """``PolyCL-O`` ... for the triplet strategies, ``SimCLR`` for the baseline (for logs and plots)."""
    return "SimCLR" if strategy == "simclr" else f"PolyCL-{strategy}"


@dataclass(frozen=True)
class PretrainRequest:
    """What the user asked ``polycl_pretrain`` for, before validation (the command line, or keyword arguments of
    ``run_pretraining``). Defaults are the command's; ``None`` means "derive it" (temperature 1 / batch size, workers
    from the CPU count, the default output folder)."""

    dataset: str | int
    plans_identifier: str = "nnUNetPlans"
    configuration: str = "2d"
    fold: Fold = 0
    strategy: str = DEFAULT_STRATEGY
    labels: Sequence[str | int] | None = None
    epochs: int = 100
    batch_size: int = 20
    lr: float = 1e-4
    temperature: float | None = None
    embed_dim: int = 256
    slice_fraction: float = 1.0
    device: str = "cuda"
    continue_training: bool = False
    seed: int = 0
    num_workers: int | None = None
    output_folder: str | None = None
    overwrite: bool = False
    num_gpus: int = 1  # processes (one per GPU, torch DDP); under torchrun, torchrun's world size
    allow_cpu_ddp: bool = False  # several processes with -device cpu (gloo): for tests
    # Unlabelled scans (nnunet_polycl.unlabelled): folders, their organ status for O / M, preprocessing processes.
    unlabelled: Sequence[str] | None = None
    organ_slices: str | None = None
    organ_status_from: str | None = None
    organ_status_other_dataset: bool = False
    min_organ_area: int = DEFAULT_MIN_ORGAN_AREA
    num_processes: int | None = None  # -np; None: nnU-Net's default_num_processes
    unlabelled_count: int | None = None  # only the first scans of the folders; None: all


@dataclass(frozen=True)
class PretrainSettings:
    """Resolved settings of a run (labels resolved to segmentation values, temperature to a number)."""

    dataset_name: str
    plans_identifier: str
    configuration: str
    fold: int | str
    strategy: str
    labels: tuple[str, ...] | None
    label_values: tuple[int, ...] | None
    epochs: int
    batch_size: int
    lr: float
    temperature: float
    embed_dim: int
    slice_fraction: float
    seed: int
    num_workers: int
    device: str
    unlabelled_fingerprint: str | None = None  # the unlabelled scans and their organ status inputs (None: none)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("labels", "label_values"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PretrainSettings:
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}  # fields added later take their default
        for key in ("labels", "label_values"):
            values[key] = None if values[key] is None else tuple(values[key])
        return cls(**values)


def check_resumable(saved: dict, current: PretrainSettings, checkpoint_file: str) -> None:
    """Raise a PolyCLUserError listing every run-defining setting that differs from the checkpoint's."""
    now = current.to_dict()
    compared = [key for key in now if key not in RESUMABLE_CHANGES and key != "labels"]  # label_values compared
    changed = [f"{key}: checkpoint {saved.get(key)!r}, now {now[key]!r}" for key in compared
               if saved.get(key) != now[key]]
    if changed:
        raise PolyCLUserError(
            f"Cannot continue {checkpoint_file} with different settings ({'; '.join(changed)}). Pass the settings the "
            f"run was started with (they are in config.json next to it), or start again with --overwrite."
        )
