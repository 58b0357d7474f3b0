"""How fine-tuning treats the pre-trained encoder: one plan of stages per adaptation (trainer suffix).

A pre-trained encoder under a random decoder and the full learning rate of training from scratch can lose what
pre-training learned in the first epochs. nnU-Net's trainer for self-supervised checkpoints (``PretrainedTrainer``,
in nnU-Net's repository after 2.8.1) therefore uses lr 1e-3 where training from scratch uses 1e-2, and a linear
warm-up of the whole network over the first 50 of 1000 epochs. Here those numbers scale with the schedule: the peak
rate is :data:`PRETRAINED_LR_FACTOR` x the schedule's rate, a warm-up lasts :data:`WARMUP_FRACTION` of its epochs.

Adaptations (each a sequence of :class:`Stage`, switched at epoch starts):

- ``direct``: the schedule as it is, whole network, from epoch 0 (nnU-Net's way for any initialisation);
- ``warmup``: the whole network warms up linearly to the peak rate, then the schedule's decay from that peak;
- ``decoderfirst``: the encoder is frozen while the decoder warms up to the peak rate, then the whole network warms up
  again from zero, then the decay;
- ``frozen``: the encoder stays frozen for the whole run; the decoder follows the schedule at its own rate;
- ``layerwise``: the whole network from epoch 0 on the schedule's curve, the encoder at :data:`ENCODER_LR_FACTOR` x
  the rate of the rest of the network (layer-wise learning rates; see :mod:`.layerwise`);
- ``warmupfull``: the schedule's own curve and rate, with each iteration's rate ramped linearly from 0 over the first
  :data:`WARMUP_FRACTION` of the run's iterations (per iteration: nnU-Net steps its schedulers once per epoch, and a
  short schedule's 5% of epochs is a single epoch, at whose start a per-epoch warm-up would already be at its peak).

"Frozen" means: not in the optimiser. Its parameters then never change (weight decay and momentum act only on
optimised parameters), whatever wraps the network (DDP, torch.compile), because the parameter objects are those of
the unwrapped module. Their gradients are set to zero by hooks (DDP needs a fixed set of parameters, so they keep
``requires_grad``): they neither pile up across iterations nor count in nnU-Net's gradient-norm clipping.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

ADAPTATIONS = ("direct", "warmup", "decoderfirst", "frozen", "layerwise", "warmupfull")
WARMUP_FRACTION = 50 / 1000
PRETRAINED_LR_FACTOR = 1e-3 / 1e-2
ENCODER_LR_FACTOR = 0.1  # layerwise: the encoder's rate over the decoder's


@dataclass(frozen=True)
class Stage:
    """Epochs ``first_epoch`` .. (next stage's first epoch - 1) of a run.

    Attributes:
        name: ``warmup_decoder``, ``warmup_all``, ``train`` or ``train_decoder``.
        trains_encoder: the encoder's parameters are optimised (False: frozen).
        warmup_epochs: length of a linear warm-up from 0 to the stage's rate (0: the schedule's decay instead).
        new_optimizer: start with a fresh optimiser (False: keep the previous stage's, with its momentum).
        encoder_lr_scale: the encoder's rate as a multiple of the rest of the network's (1: one rate for all).
        ramp_fraction: the first fraction of the run's iterations over which each iteration's rate is the scheduled
            one times a linear ramp from 0 to 1 (:func:`ramp_factor`; 0: no ramp).
    """

    name: str
    first_epoch: int
    trains_encoder: bool
    warmup_epochs: int = 0
    new_optimizer: bool = True
    encoder_lr_scale: float = 1.0
    ramp_fraction: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def warmup_length(num_epochs: int) -> int:
    """Warm-up epochs for a run of ``num_epochs``: :data:`WARMUP_FRACTION` of it, at least 1."""
    return max(1, round(num_epochs * WARMUP_FRACTION))


def stage_plan(adaptation: str, num_epochs: int) -> tuple[Stage, ...]:
    """The stages of ``adaptation`` over ``num_epochs`` epochs.

    Raises:
        ValueError: unknown adaptation (the message lists them).
    """
    w = warmup_length(num_epochs)
    plans = {
        "direct": (Stage("train", 0, True),),
        "warmup": (Stage("warmup_all", 0, True, w), Stage("train", w, True, new_optimizer=False)),
        "decoderfirst": (Stage("warmup_decoder", 0, False, w), Stage("warmup_all", w, True, w),
                         Stage("train", 2 * w, True, new_optimizer=False)),
        "frozen": (Stage("train_decoder", 0, False),),
        "layerwise": (Stage("train", 0, True, encoder_lr_scale=ENCODER_LR_FACTOR),),
        "warmupfull": (Stage("train", 0, True, ramp_fraction=WARMUP_FRACTION),),
    }
    if adaptation not in plans:
        raise ValueError(f"unknown adaptation {adaptation!r}; choose one of {list(ADAPTATIONS)}")
    return plans[adaptation]


def stage_at(plan: tuple[Stage, ...], epoch: int) -> Stage:
    """The stage that epoch ``epoch`` belongs to."""
    return [s for s in plan if s.first_epoch <= max(0, epoch)][-1]


def stage_lr(adaptation: str, schedule_lr: float) -> float:
    """The rate that the stages of ``adaptation`` warm up to and decay from."""
    return schedule_lr * PRETRAINED_LR_FACTOR if adaptation in ("warmup", "decoderfirst") else schedule_lr


def ramp_length(ramp_fraction: float, run_iterations: int) -> int:
    """Iterations of a ramp over ``ramp_fraction`` of a run of ``run_iterations`` (at least 1; 0 without a ramp)."""
    return max(1, round(ramp_fraction * run_iterations)) if ramp_fraction else 0


def ramp_factor(iteration: int, ramp_iterations: int) -> float:
    """The multiple of the scheduled rate at (0-based) ``iteration`` of a linear ramp over ``ramp_iterations``:
    1/n, 2/n, ... 1, then 1."""
    return min(1.0, (iteration + 1) / max(1, ramp_iterations))
