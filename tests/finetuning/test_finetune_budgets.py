"""Training budgets: the checkpoint of a budget holds the weights of the same run at that epoch (issue 16).

Seeded ``_smoke`` runs (2 epochs x 3 iterations) trained in-process as ``nnUNetv2_train`` trains them: with
``$POLYCL_BUDGETS=0.5 1``, without, and stopped after its first epoch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import torch

from nnunet_polycl.finetuning.budgets import BUDGETS_VARIABLE
from nnunet_polycl.finetuning.trainer import RECORD_FILE
from tests.finetuning.finetune_helpers import same_tensors

NAME = "nnUNetTrainerPolyCL_Baseline_smoke_seed3"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in torch.load(path, weights_only=False)["network_weights"].items()}


def test_budget_checkpoint_is_that_epoch_of_the_same_run_and_changes_nothing(make_trainer, monkeypatch):
    monkeypatch.setenv(BUDGETS_VARIABLE, "0.5 1")
    run = make_trainer(NAME)
    run.run_training()
    folder = Path(run.output_folder)
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["budgets"] == [
        {"fraction": 0.5, "epoch": 1, "iterations": 3, "checkpoint": "checkpoint_budget_0.5.pth"},
        {"fraction": 1.0, "epoch": 2, "iterations": 6, "checkpoint": "checkpoint_final.pth"}]
    assert record["schedule"]["description"] == (
        "Adam lr 0.001, one cosine cycle from the start of the decay to the end of the run (no restart), 2 epochs x 3 "
        "iterations (6 in all)")
    assert record["schedule"]["iterations"] == 6
    budget = torch.load(folder / "checkpoint_budget_0.5.pth", weights_only=False)
    assert budget["current_epoch"] == 1 and budget["polycl_finetuning"]["budgets"] == record["budgets"]
    at_half, at_end = _weights(folder / "checkpoint_budget_0.5.pth"), _weights(folder / "checkpoint_final.pth")
    assert not same_tensors(at_half, at_end)

    monkeypatch.delenv(BUDGETS_VARIABLE)
    plain = make_trainer(NAME)  # the same seeded run without budgets: the same end point
    plain.run_training()
    assert same_tensors(_weights(folder / "checkpoint_final.pth"), at_end)

    stopped = make_trainer(NAME)  # the same seeded run stopped after its first epoch
    stopped.num_epochs = 1
    stopped.run_training()
    assert same_tensors(_weights(folder / "checkpoint_final.pth"), at_half)


def test_polycl_validate_module_leaves_the_trainer_stack_out_of_its_worker_processes():
    """nnU-Net's validation spawns an export and a metrics worker per checkpoint, and each imports the command's
    module anew: polycl_validate's module must not pull in the trainer stack (about 8 s per worker on 2 cores, against
    3 s for torch and nnU-Net's export code)."""
    (entry,) = entry_points(group="console_scripts", name="polycl_validate")
    code = (f"import sys, {entry.module}; heavy = ('nnunetv2.training.nnUNetTrainer.nnUNetTrainer', "
            "'nnunet_polycl.finetuning.trainer'); print([m for m in heavy if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_trainer_validates_its_earlier_budgets_after_the_end_point(make_trainer, monkeypatch):
    """As at the end of nnUNetv2_train: training, then perform_actual_validation; a budget checkpoint removed in the
    meantime is reported in the log and skipped, not a crash after a finished training."""
    monkeypatch.setenv(BUDGETS_VARIABLE, "0.5 1")
    run = make_trainer(NAME)
    run.run_training()
    run.perform_actual_validation(False)
    folder = Path(run.output_folder)
    end, half = (json.loads((folder / f / "summary.json").read_text()) for f in ("validation", "validation_budget_0.5"))
    assert sorted(c["prediction_file"].rsplit("/", 1)[1] for c in half["metric_per_case"]) == sorted(
        c["prediction_file"].rsplit("/", 1)[1] for c in end["metric_per_case"])
    assert not list(folder.glob(".validation_budget_0.5.partial"))

    again = make_trainer(NAME)
    again.run_training()
    (folder / "checkpoint_budget_0.5.pth").unlink()
    again.perform_actual_validation(False)
    log = Path(again.log_file).read_text()
    assert "checkpoint_budget_0.5.pth is gone, so that budget is not validated." in log
