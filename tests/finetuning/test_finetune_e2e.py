"""End to end, as a user types it: polycl_pretrain -> nnUNetv2_train -tr nnUNetTrainerPolyCL_* -> nnUNetv2_predict.

Tiny settings: one pre-training epoch over 10% of the slices (strategy S: O needs slices with and without the organ,
which so few slices of the demo scans do not have), the ``_smoke`` schedule, no test-time mirroring.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from nnunet_polycl.finetuning.trainer import CHECKPOINT_KEY, RECORD_FILE
from tests.conftest import DEMO_ID, run_cli
from tests.finetuning.finetune_helpers import encoder_tensors, network_state, same_tensors

TRAINER = "nnUNetTrainerPolyCL_S_smoke"


def _geometry(path: Path) -> tuple:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


@pytest.mark.e2e
def test_pretrain_finetune_predict(demo_env, demo_in_process, make_trainer, tmp_path):
    d = str(DEMO_ID)
    run_cli(["polycl_pretrain", "-d", d, "-s", "S", "--epochs", "1", "--slice-fraction", "0.1", "--batch-size", "8",
             "--num-workers", "0", "-device", "cpu"], demo_env)
    weights_file = next(Path(demo_env["nnUNet_results"]).glob("Dataset*/PolyCL_S__nnUNetPlans__2d/fold_0/"
                                                              "pretrained_weights.pth"))
    run_cli(["nnUNetv2_train", d, "2d", "0", "-tr", TRAINER, "-device", "cpu"], demo_env)

    fold_folder = weights_file.parents[2] / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    sha = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    record = json.loads((fold_folder / RECORD_FILE).read_text())
    assert record["pretrained_weights"]["path"] == str(weights_file)
    assert record["pretrained_weights"]["sha256"] == sha and record["pretrained_weights"]["pretraining_epochs"] == 1
    checkpoint = torch.load(fold_folder / "checkpoint_final.pth", weights_only=False)
    assert checkpoint[CHECKPOINT_KEY] == record and checkpoint["trainer_name"] == TRAINER
    assert (fold_folder / "progress.png").is_file() and (fold_folder / "validation" / "summary.json").is_file()

    raw = next(Path(demo_env["nnUNet_raw"]).glob(f"Dataset{DEMO_ID}_*"))
    images = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[:2]
    (tmp_path / "in").mkdir()
    for image in images:
        shutil.copy(image, tmp_path / "in")
    run_cli(["nnUNetv2_predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", d, "-c", "2d",
             "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], demo_env)
    for image in images:
        prediction = tmp_path / "out" / image.name.replace("_0000.nii.gz", ".nii.gz")
        assert prediction.is_file() and _geometry(prediction) == _geometry(image)

    # the real polycl_pretrain file: at the start of fine-tuning the encoder is exactly the pre-trained one
    trainer = make_trainer(TRAINER)
    trainer.initialize()
    pretrained = torch.load(weights_file, weights_only=True)["network_weights"]
    assert same_tensors(encoder_tensors(network_state(trainer)), encoder_tensors(pretrained))

    # the checkpoint carries weights and record: --val works after the pre-training folder is gone
    shutil.rmtree(weights_file.parents[1])
    summary = fold_folder / "validation" / "summary.json"
    summary.unlink()
    run_cli(["nnUNetv2_train", d, "2d", "0", "-tr", TRAINER, "-device", "cpu", "--val"], demo_env)
    assert summary.is_file() and json.loads((fold_folder / RECORD_FILE).read_text()) == record


@pytest.mark.e2e
def test_nnunetv2_train_without_pretraining_stops_with_the_command_to_run(demo_env):
    proc = run_cli(["nnUNetv2_train", str(DEMO_ID), "2d", "0", "-tr", "nnUNetTrainerPolyCL_smoke", "-device", "cpu"],
                   demo_env, check=False)
    assert proc.returncode == 1
    assert f"polycl_pretrain -d Dataset{DEMO_ID}_" in proc.stderr and "-p nnUNetPlans -c 2d -f 0 -s O" in proc.stderr
    # the refusal is one line at the end, without nnU-Net's call stack above it
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nnUNetv2_train: error: No PolyCL pre-trained weights found at ") and "-s O" in last
