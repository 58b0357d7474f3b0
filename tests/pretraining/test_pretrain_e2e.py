"""polycl_pretrain end to end on CPU: outputs, weights that stock nnU-Net loads, --c, and a finished run left alone."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli, smoke_env
from tests.pretraining.conftest import SMALL_ID, SMALL_NAME

pytestmark = pytest.mark.e2e

O_ARGS = ["-d", str(SMALL_ID), "-f", "all", "-s", "O", "-device", "cpu", "--batch-size", "11", "--num-workers", "1"]
RUN_FILES = ("checkpoint_latest.pth", "checkpoint_final.pth", "pretrained_weights.pth", "config.json",
             "training_log.txt", "progress.png")
EPOCH_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: Epoch (\d+)/(\d+): loss ([\d.]+), cos\+ (-?[\d.]+), "
                        r"cos- (-?[\d.]+), triplet accuracy ([\d.]+), ([\d.]+) slices/s", re.M)


def digests(folder: Path) -> dict[str, tuple[str, int]]:
    """SHA-256 and mtime of every file of the folder."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def o_run(small_demo_root, tmp_path_factory):
    """PolyCL-O, 2 epochs, on the small demo copy; returns (env, output folder, completed process)."""
    results = tmp_path_factory.mktemp("o_run_results")
    env = smoke_env(small_demo_root, results)
    proc = run_cli(["polycl_pretrain", *O_ARGS, "--epochs", "2"], env)
    return env, results / SMALL_NAME / "PolyCL_O__nnUNetPlans__2d" / "fold_all", proc


def test_outputs_logs_and_config(o_run, small_demo_root):
    env, folder, proc = o_run
    for name in RUN_FILES:
        assert (folder / name).is_file(), f"{name} missing in {folder}"
    log = (folder / "training_log.txt").read_text()
    epochs = [(int(m[1]), int(m[2])) for m in EPOCH_LINE.finditer(log)]
    assert epochs == [(1, 2), (2, 2)]
    assert [int(m[1]) for m in EPOCH_LINE.finditer(proc.stdout)] == [1, 2]
    assert (folder / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the last line names the next commands: the probe, then fine-tuning with the trainer that loads these weights
    assert proc.stdout.strip().splitlines()[-1].endswith(
        f"Next: polycl_probe {folder} (the encoder on scans it never saw), then fine-tune with "
        f"nnUNetv2_train {SMALL_NAME} 2d all -tr nnUNetTrainerPolyCL_O")

    config = json.loads((folder / "config.json").read_text())
    assert config["settings"]["strategy"] == "O" and config["settings"]["epochs"] == 2
    assert config["settings"]["temperature"] == pytest.approx(1 / 11)
    cases = sorted(p.stem for p in (small_demo_root / "preprocessed" / SMALL_NAME / "nnUNetPlans_2d").glob(
        "*.pkl"))
    assert config["split"]["train"] == cases
    plans = small_demo_root / "preprocessed" / SMALL_NAME / "nnUNetPlans.json"
    assert config["fingerprints"]["nnUNetPlans.json_sha256"] == hashlib.sha256(plans.read_bytes()).hexdigest()
    assert config["versions"]["torch"] == torch.__version__ and config["versions"]["nnunetv2"]
    repro = config["reproducibility"]  # what a seed's bits depend on beyond the settings
    assert repro["torch_threads"] >= 1 and repro["device"] == "cpu" and repro["deterministic_algorithms"] is False

    ckpt = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert ckpt["epoch"] == 2
    assert all(len(values) == 2 and all(math.isfinite(v) for v in values) for values in ckpt["history"].values())
    assert all(0 <= a <= 1 for a in ckpt["history"]["accuracy"])
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "settings"}


def test_weights_load_into_stock_nnunet(o_run, small_demo_root, monkeypatch):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    _, folder, _ = o_run
    preprocessed = small_demo_root / "preprocessed" / SMALL_NAME
    plans = PlansManager(json.loads((preprocessed / "nnUNetPlans.json").read_text()))
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    cm = plans.get_configuration("2d")
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(
        plans, cm, determine_num_input_channels(plans, cm, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, True)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    load_pretrained_weights(net, str(folder / "pretrained_weights.pth"))

    trained = {k[len("encoder."):]: v for k, v in
               torch.load(folder / "checkpoint_final.pth", weights_only=True)["model"].items()
               if k.startswith("encoder.")}
    loaded = net.state_dict()
    assert trained and set(trained) == set(net.encoder.state_dict())
    for key, value in trained.items():
        assert torch.equal(loaded[f"encoder.{key}"], value), key
        assert torch.equal(loaded[f"decoder.encoder.{key}"], value), key
    assert any(not torch.equal(fresh[f"encoder.{k}"], v) for k, v in trained.items()), "pre-training changed nothing"
    saved = torch.load(folder / "pretrained_weights.pth", weights_only=True)
    for key, value in trained.items():  # the file itself holds both aliases with the same tensors
        assert torch.equal(saved["network_weights"][f"decoder.encoder.{key}"], value), key
    expected = {"strategy": "O", "epochs": 2, "dataset_name": SMALL_NAME, "plans_identifier": "nnUNetPlans",
                "configuration": "2d", "fold": "all", "embed_dim": 256}
    assert {key: saved["polycl"][key] for key in expected} == expected


def test_finished_run_is_refused_and_left_untouched(o_run):
    env, folder, _ = o_run
    before = digests(folder)
    proc = run_cli(["polycl_pretrain", *O_ARGS, "--epochs", "2"], env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("polycl_pretrain: error: ") and "Traceback" not in proc.stderr
    assert str(folder) in proc.stderr and "--c" in proc.stderr and "--overwrite" in proc.stderr
    assert digests(folder) == before


def test_continue_adds_epochs_then_reports_finished(o_run, tmp_path, monkeypatch, capsys):
    from nnunet_polycl.pretraining.cli import run_pretraining

    env, folder, _ = o_run
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    before = torch.load(copy / "checkpoint_final.pth", weights_only=True)["history"]
    settings = dict(fold="all", strategy="O", device="cpu", batch_size=11, num_workers=1, output_folder=str(copy),
                    continue_training=True)

    run_pretraining(SMALL_ID, epochs=3, **settings)
    out = capsys.readouterr().out
    assert f"Continuing from {copy / 'checkpoint_latest.pth'} after epoch 2." in out
    assert [int(m[1]) for m in EPOCH_LINE.finditer(out)] == [3]
    after = torch.load(copy / "checkpoint_final.pth", weights_only=True)
    assert after["epoch"] == 3
    for key, values in before.items():
        assert after["history"][key][:2] == values and len(after["history"][key]) == 3
    assert [int(m[1]) for m in EPOCH_LINE.finditer((copy / "training_log.txt").read_text())] == [1, 2, 3]

    unchanged = digests(copy)
    run_pretraining(SMALL_ID, epochs=3, **settings)
    assert "finished run (3 epochs); nothing to do" in capsys.readouterr().out
    assert digests(copy) == unchanged
