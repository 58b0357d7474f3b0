"""Interruptions: SIGKILL during an epoch then --c, and a diverging loss that keeps the last good checkpoint."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import BIN, run_cli
from tests.pretraining.conftest import (
    RESULT_METRICS,
    S_ARGS,
    S_EPOCHS,
    SMALL_ID,
    SMALL_NAME,
    copy_preprocessed,
    s_folder,
)

NAN_ID, NAN_NAME = 987, "Dataset987_PolyCLNaN"

pytestmark = pytest.mark.e2e


def completed_epochs(checkpoint: Path) -> int:
    """Epochs recorded in a checkpoint, 0 while it does not exist yet (it only ever appears complete)."""
    return torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.is_file() else 0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigkill_during_an_epoch_then_continue_equals_an_uninterrupted_run(small_env, tmp_path, s_reference):
    folder = s_folder(Path(small_env["nnUNet_results"]))
    latest = folder / "checkpoint_latest.pth"
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen([os.path.join(BIN, "polycl_pretrain"), *S_ARGS, "--epochs", str(S_EPOCHS)],
                                env=small_env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while completed_epochs(latest) < 1:
                assert proc.poll() is None, (tmp_path / "out.txt").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = torch.load(latest, weights_only=True)
    assert 1 <= at_kill["epoch"] < 3 and not (folder / "checkpoint_final.pth").exists()
    # a kill during a write may leave atomic_write's hidden temporary file, never a half-written output
    assert all(p.name.startswith(".") for p in folder.iterdir() if p.name.endswith(".tmp"))

    proc = run_cli(["polycl_pretrain", *S_ARGS, "--epochs", str(S_EPOCHS), "--c"], small_env)
    assert f"after epoch {at_kill['epoch']}." in proc.stdout
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []  # the continued run cleaned up
    final = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert final["epoch"] == S_EPOCHS
    for key, values in at_kill["history"].items():
        assert final["history"][key][:at_kill["epoch"]] == values and len(final["history"][key]) == S_EPOCHS
    # on the CPU, continuing is bit-identical: the same losses and the same final weights as never stopping
    reference = torch.load(s_reference / "checkpoint_final.pth", weights_only=True)
    assert {k: final["history"][k] for k in RESULT_METRICS} == {k: reference["history"][k] for k in RESULT_METRICS}
    assert final["model"].keys() == reference["model"].keys()
    assert all(torch.equal(final["model"][k], reference["model"][k]) for k in reference["model"])


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(small_env, monkeypatch):
    from nnunet_polycl.paths import PolyCLUserError
    from nnunet_polycl.pretraining.cli import run_pretraining

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, small_env[key])
    settings = dict(fold="all", strategy="S", device="cpu", batch_size=4, slice_fraction=0.2, num_workers=0)
    folder = Path(run_pretraining(SMALL_ID, epochs=1, **settings))
    kept = {name: sha(folder / name) for name in ("checkpoint_latest.pth", "checkpoint_final.pth",
                                                  "pretrained_weights.pth")}
    # Adam moves every weight by about lr per step: lr 1e30 overflows float32 activations for real.
    with pytest.raises(PolyCLUserError, match="Training diverged in epoch 2") as error:
        run_pretraining(SMALL_ID, epochs=2, continue_training=True, lr=1e30, **settings)
    assert "checkpoint_latest.pth from epoch 1 was kept" in str(error.value) and "lower --lr" in str(error.value)
    assert "while every input batch was finite" in str(error.value)
    assert {name: sha(folder / name) for name in kept} == kept
    assert "Training diverged in epoch 2" in (folder / "training_log.txt").read_text()


def test_non_finite_input_data_is_named_as_the_cause_not_the_learning_rate(small_demo_root, tmp_path, monkeypatch):
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_polycl.paths import PolyCLUserError
    from nnunet_polycl.pretraining.cli import run_pretraining

    source = small_demo_root / "preprocessed" / SMALL_NAME
    cases = sorted(p.name[:-len(".pkl")] for p in (source / "nnUNetPlans_2d").glob("*.pkl"))
    copy_preprocessed(source, tmp_path, NAN_NAME, cases, empty_segmentations=False)
    folder = tmp_path / "preprocessed" / NAN_NAME / "nnUNetPlans_2d"
    data, seg, _, properties = nnUNetDatasetBlosc2(str(folder), cases[:1]).load_case(cases[0])
    image, seg = np.array(data[:]), np.array(seg[:])
    image[:, image.shape[1] // 2] = np.nan  # the middle slice of one scan, as a broken conversion leaves it
    for suffix in (".b2nd", "_seg.b2nd"):
        (folder / f"{cases[0]}{suffix}").unlink()
    nnUNetDatasetBlosc2.save_case(image, seg, properties, str(folder / cases[0]))
    for key in ("raw", "results"):
        (tmp_path / key).mkdir()
        monkeypatch.setenv(f"nnUNet_{key}", str(tmp_path / key))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    with pytest.raises(PolyCLUserError) as error:
        run_pretraining(NAN_ID, epochs=1, fold="all", strategy="S", device="cpu", batch_size=4, slice_fraction=0.2,
                        num_workers=0)
    message = str(error.value)
    assert "\n" not in message and message.startswith("Training stopped in epoch 1 (iteration ")
    assert "held non-finite values (NaN or Inf): the data is the cause, not the learning rate" in message
    assert "lower --lr" not in message
