"""PolyCL-S on a demo fold (fold-aware: nnU-Net's split, validation cases unseen) and the SimCLR baseline, 1 epoch."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import DEMO_ID, run_cli
from tests.pretraining.conftest import SMALL_ID, SMALL_NAME

pytestmark = pytest.mark.e2e


def finished_history(folder: Path) -> dict:
    ckpt = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and (folder / "pretrained_weights.pth").is_file()
    assert all(len(v) == 1 and math.isfinite(v[0]) for v in ckpt["history"].values()), ckpt["history"]
    return ckpt["history"]


def test_scan_strategy_on_fold_0_uses_nnunets_split(demo_env, preprocessed_demo):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    proc = run_cli(["polycl_pretrain", "-d", str(DEMO_ID), "-s", "S", "--epochs", "1", "-device", "cpu",
                    "--batch-size", "7", "--slice-fraction", "0.05", "--num-workers", "1"], demo_env)
    folder = Path(demo_env["nnUNet_results"]) / preprocessed_demo.name / "PolyCL_S__nnUNetPlans__2d" / "fold_0"
    assert "Epoch 1/1" in proc.stdout
    finished_history(folder)

    config = json.loads((folder / "config.json").read_text())
    cases = sorted(p.stem for p in (preprocessed_demo / "nnUNetPlans_2d").glob("*.pkl"))
    expected = generate_crossval_split(cases, seed=12345, n_splits=5)[0]
    assert config["split"]["train"] == sorted(expected["train"]) and config["split"]["val"] == sorted(expected["val"])
    assert not set(config["split"]["train"]) & set(config["split"]["val"])
    splits = json.loads((preprocessed_demo / "splits_final.json").read_text())
    assert sorted(splits[0]["train"]) == config["split"]["train"]


def test_simclr_baseline_runs_with_nnunet_augmentation(small_env):
    run_cli(["polycl_pretrain", "-d", str(SMALL_ID), "-f", "all", "-s", "simclr", "--epochs", "1", "-device", "cpu",
             "--batch-size", "4", "--slice-fraction", "0.2", "--num-workers", "1"], small_env)
    folder = Path(small_env["nnUNet_results"]) / SMALL_NAME / "PolyCL_simclr__nnUNetPlans__2d" / "fold_all"
    history = finished_history(folder)
    assert 0 <= history["accuracy"][0] <= 1 and history["loss"][0] > 0
