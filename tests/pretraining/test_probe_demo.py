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
def test_pretrained_encoder_beats_every_random_encoder_on_unseen_scans(demo_in_process, strategy, epochs):
    demo_env = demo_in_process  # in this process too: the test reads the slice index
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
    _check_embedding_map(folder, result, proc.stdout)


def _check_embedding_map(folder: Path, result: dict, stdout: str) -> None:
    """embeddings.png beside probe.json; its data: the pre-trained and the first random encoder, every validation
    slice once, with the organ status of its label map."""
    from nnunet_polycl.pretraining.probe import load_pretrained_model
    from nnunet_polycl.slice_index import build_slice_index

    picture = folder / "embeddings.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["embeddings_figure"] == str(picture)
    assert stdout.strip().splitlines()[-1].endswith(str(picture))  # the command's last line names the picture
    data = json.loads((folder / "embeddings.json").read_text())
    _, ctx, settings = load_pretrained_model(str(folder))
    index = build_slice_index(ctx, result["cases"], settings.label_values)
    statuses = ["organ" if organ else "no organ" for organ in index.organ]
    assert data["slices"] == result["pretrained"]["slices"] == len(index) and not data["subsampled"]
    assert [p["accuracy"] for p in data["panels"]] == [result["pretrained"]["accuracy"], result["random"][0]]
    for panel in data["panels"]:
        assert len(panel["x"]) == len(panel["y"]) == len(index)
        assert panel["status"] == statuses and "organ" in statuses and "no organ" in statuses
        assert sorted(set(panel["scan"])) == result["cases"]
