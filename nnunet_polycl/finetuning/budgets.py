"""Training budgets: one fine-tuning run looked at after fractions of its schedule's iterations.

``$POLYCL_BUDGETS`` (``polycl_experiment --budgets`` sets it, e.g. ``"0.25 0.5 1"``) makes the PolyCL trainers save
``checkpoint_budget_<f>.pth`` at the end of the epoch that completes the fraction ``f`` of the run's epochs. Every
epoch has the same number of iterations, so this is the same fraction of its iterations, rounded to the nearest
epoch boundary and at least one epoch: epoch ``max(1, floor(f x epochs + 0.5))``. A fraction that lands on the last
epoch is ``checkpoint_final.pth`` itself. The plan (fraction, epoch, iterations, checkpoint) goes into
``polycl_finetuning.json`` and every checkpoint. Saving a checkpoint changes nothing in the run.

The trainer validates each earlier budget's checkpoint at the end of ``nnUNetv2_train`` (nnU-Net's validation of the
fold, :mod:`.validation`, which ``polycl_validate`` runs for any checkpoint afterwards), and
``nnUNetv2_predict -chk`` predicts other cases from it: each budget is predicted exactly as the end point is.
"""
from __future__ import annotations

import math
from typing import Iterable

from nnunet_polycl.paths import PolyCLUserError

BUDGETS_VARIABLE = "POLYCL_BUDGETS"
FINAL_CHECKPOINT = "checkpoint_final.pth"  # nnU-Net's (nnUNetTrainer.on_train_end)
ROUNDING = ("budgets are fractions of each run's iterations, rounded to the nearest epoch boundary (at least 1 "
            "epoch); each is evaluated from the checkpoint saved at that epoch of the same run, exactly as the end "
            "point")


def parse_budgets(values: Iterable[str | float], source: str = "--budgets") -> tuple[float, ...]:
    """Sorted distinct fractions in (0, 1], 1 always included; raises PolyCLUserError naming ``source``."""
    fractions = []
    for value in values:
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            fraction = math.nan
        if not 0 < fraction <= 1:
            raise PolyCLUserError(f"{source} {value!r} is invalid: give fractions of the schedule in (0, 1], e.g. "
                                  f"{source} 0.25 0.5 1.")
        fractions.append(fraction)
    return tuple(sorted({*fractions, 1.0}))


def budget_name(fraction: float) -> str:
    """``budget_0.25`` for 0.25: the suffix of the budget's checkpoint, validation and evaluation folders."""
    return f"budget_{fraction:g}"


def budget_epoch(fraction: float, num_epochs: int) -> int:
    """The epoch (1-based count of finished epochs) that completes ``fraction`` of ``num_epochs``: the nearest
    epoch boundary, at least 1."""
    return min(num_epochs, max(1, math.floor(fraction * num_epochs + 0.5)))


def budget_plan(fractions: Iterable[float], num_epochs: int, iterations_per_epoch: int) -> list[dict]:
    """``[{fraction, epoch, iterations, checkpoint}]``: where each budget's weights are saved in the fold folder."""
    plan = []
    for fraction in fractions:
        epoch = budget_epoch(fraction, num_epochs)
        checkpoint = FINAL_CHECKPOINT if epoch == num_epochs else f"checkpoint_{budget_name(fraction)}.pth"
        plan.append({"fraction": fraction, "epoch": epoch, "iterations": epoch * iterations_per_epoch,
                     "checkpoint": checkpoint})
    return plan


def budgets_from_environment(environ: dict[str, str]) -> tuple[float, ...]:
    """The fractions of ``$POLYCL_BUDGETS`` (space or comma separated); empty when it is unset."""
    text = environ.get(BUDGETS_VARIABLE, "").replace(",", " ").split()
    return parse_budgets(text, f"${BUDGETS_VARIABLE}") if text else ()
