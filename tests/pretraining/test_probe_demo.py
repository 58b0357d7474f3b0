"""The probe on the demo dataset: PolyCL-S and PolyCL-O encoders pre-trained on fold 0's training scans tell their
triplets apart on the validation scans better than every one of 10 randomly initialised encoders.

The random encoders' accuracy is measured, not assumed (S: a random network already separates scans by their
intensity statistics, so its random level is far above 0.5). Fixed seeds: the demo data, the pre-training, the random
initialisations and the triplets are all seeded, so the numbers are the same on every run of the same software.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO_ID, run_cli

N_RANDOM = 10


@pytest.mark.e2e
@pytest.mark.parametrize("strategy, epochs", [("S", 2), ("O", 3)])
def test_pretrained_encoder_beats_every_random_encoder_on_unseen_scans(demo_env, strategy, epochs):
    run_cli(["polycl_pretrain", "-d", str(DEMO_ID), "-s", strategy, "--epochs", str(epochs), "--lr", "1e-3",
             "--batch-size", "16", "--num-workers", "0", "--seed", "0", "-device", "cpu"], demo_env)
    folder = next(Path(demo_env["nnUNet_results"]).glob(f"Dataset*/PolyCL_{strategy}__nnUNetPlans__2d/fold_0"))
    proc = run_cli(["polycl_probe", str(folder), "--random", str(N_RANDOM)], demo_env)
    result = json.loads((folder / "probe.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert result["cases"] == sorted(config["split"]["val"]) and not set(result["cases"]) & set(config["split"]["train"])
    assert len(result["random"]) == N_RANDOM
    accuracy = result["pretrained"]["accuracy"]
    print(f"{strategy}: pre-trained {accuracy:.3f}, random {min(result['random']):.3f}-{result['best_random']:.3f}, "
          f"margin {result['margin']:+.3f}")
    assert accuracy > result["best_random"], proc.stdout  # a margin that no random encoder reaches
    assert result["margin"] == pytest.approx(accuracy - max(result["random"]))
    assert "better than every random encoder tried" in proc.stdout
