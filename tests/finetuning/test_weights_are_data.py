"""Weights files are data: loading one never runs code, a genuine file is read with ``weights_only=True`` by the
trainer and by stock nnU-Net's ``-pretrained_weights``, and an older file needs an explicit, recorded opt-in."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_polycl.checkpoint import UNSAFE_LOAD_VARIABLE
from nnunet_polycl.finetuning.pretrained import ALLOW_FOREIGN_VARIABLE, OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.trainer import CHECKPOINT_KEY, RECORD_FILE
from tests.finetuning.finetune_helpers import encoder_tensors, network_state, same_tensors
from tests.finetuning.test_finetune_errors import TRAINER, edit_meta, refused, refused_after_moving_to_validation


class Payload:
    """Unpickling this runs a shell command that creates ``marker``: what a malicious weights file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_crafted(path: Path, marker: Path, form: str) -> None:
    """A weights file whose metadata unpickles into the payload: torch.save's zip format, or a bare pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"network_weights": {}, "polycl": {"strategy": "O", "note": Payload(marker)}}
    if form == "torch.save":
        torch.save(content, path)
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
@pytest.mark.parametrize("where", ["default location", OVERRIDE_VARIABLE])
def test_a_crafted_weights_file_is_refused_without_running(write_pretraining, make_trainer, demo_in_process,
                                                           monkeypatch, tmp_path, form, where):
    marker = tmp_path / "payload_ran"
    path = write_pretraining()  # the default location
    if where == OVERRIDE_VARIABLE:
        path = tmp_path / "elsewhere" / "pretrained_weights.pth"
        monkeypatch.setenv(OVERRIDE_VARIABLE, str(path))
    write_crafted(path, marker, form)
    message = refused(make_trainer, demo_in_process)
    assert not marker.exists()
    assert str(path) in message
    if form == "torch.save":
        assert "holds Python objects besides tensors and plain values (posix.system)" in message
        assert f"{UNSAFE_LOAD_VARIABLE}=1" in message
    else:
        assert "cannot be read" in message and "not a file written by torch.save" in message


def test_a_genuine_file_loads_as_data_in_the_trainer_and_in_stock_nnunet(demo_name, make_trainer, demo_in_process,
                                                                         tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunet_polycl.network import build_plans_network, load_plans_context
    from nnunet_polycl.paths import default_pretraining_folder
    from nnunet_polycl.pretraining.outputs import write_pretrained_weights
    from nnunet_polycl.pretraining.settings import PretrainSettings
    from nnunet_polycl.splits import training_cases

    ctx = load_plans_context(demo_name)
    folder = Path(default_pretraining_folder(demo_name, "O"))
    folder.mkdir(parents=True)
    cases = [np.str_(c) for c in training_cases(ctx, 0, write_missing=False)[0]]  # numpy values, as they come
    settings = PretrainSettings(np.str_(demo_name), "nnUNetPlans", "2d", 0, "O", ("liver",), (np.int64(1),), 3, 20,
                                1e-4, 0.05, 256, 1.0, 0, 0, "cpu")
    torch.manual_seed(1)
    encoder_state = build_plans_network(ctx).encoder.state_dict()
    path = Path(write_pretrained_weights(str(folder), ctx, encoder_state, settings, 3, cases))
    pretrained = torch.load(path, weights_only=True)["network_weights"]  # raises if anything but data is inside

    trainer = make_trainer(TRAINER)
    trainer.initialize()
    assert same_tensors(encoder_tensors(network_state(trainer)), encoder_tensors(pretrained))
    record = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())
    assert record["pretrained_weights"]["unsafe_load_opt_in"] is None
    assert record["pretrained_weights"]["checks"]["validation_cases_checked"] is True
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))  # nnU-Net's checkpoint with our record added
    torch.save(torch.load(tmp_path / "checkpoint.pth", weights_only=False)[CHECKPOINT_KEY], tmp_path / "record.pth")
    assert torch.load(tmp_path / "record.pth", weights_only=True) == record  # the record is plain data

    stock = make_trainer("nnUNetTrainer")
    stock.initialize()
    load_pretrained_weights(stock.network, str(path))  # what nnUNetv2_train -pretrained_weights FILE calls
    assert same_tensors(encoder_tensors(network_state(stock)), encoder_tensors(pretrained))


def test_an_older_file_needs_the_opt_in_which_is_recorded(write_pretraining, make_trainer, demo_in_process,
                                                          monkeypatch):
    path = write_pretraining()
    content = torch.load(path, weights_only=True)
    content["polycl"]["dataset_name"] = np.str_(content["polycl"]["dataset_name"])  # what older versions wrote
    torch.save(content, path)
    message = refused(make_trainer, demo_in_process)
    assert "numpy" in message and f"set {UNSAFE_LOAD_VARIABLE}=1" in message

    monkeypatch.setenv(UNSAFE_LOAD_VARIABLE, "1")
    trainer = make_trainer(TRAINER)
    trainer.initialize()
    record = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())["pretrained_weights"]
    assert record["unsafe_load_opt_in"] == f"{UNSAFE_LOAD_VARIABLE}=1"
    assert f"WARNING: {UNSAFE_LOAD_VARIABLE}=1: {path} was read with full unpickling" in \
        Path(trainer.log_file).read_text()


def test_a_leak_is_refused_under_the_foreign_opt_in(write_pretraining, make_trainer, demo_in_process,
                                                    preprocessed_demo, monkeypatch):
    """Same dataset, re-planned (another plans fingerprint), and a pre-training case is a validation case now."""
    path = write_pretraining()  # pre-trained on fold 0's training cases
    edit_meta(path, plans_fingerprint="0" * 64)
    monkeypatch.setenv(ALLOW_FOREIGN_VARIABLE, "1")
    message, moved = refused_after_moving_to_validation(make_trainer, demo_in_process, preprocessed_demo, 1)
    assert f"pre-trained on 1 case(s) that are validation cases of fold 0 now ({moved[0]})" in message
    assert f"no opt-in allows this, {ALLOW_FOREIGN_VARIABLE} included" in message and str(path) in message
