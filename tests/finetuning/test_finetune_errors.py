"""Bad input to the fine-tuning trainers: a clear PolyCLUserError naming the problem and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnunet_polycl.finetuning import OVERRIDE_VARIABLE, SUBSET_FILE
from nnunet_polycl.paths import PolyCLUserError


def test_missing_pretraining_names_the_polycl_pretrain_command(make_trainer, demo_name):
    trainer = make_trainer("nnUNetTrainerPolyCL_SimCLR_smoke")
    with pytest.raises(PolyCLUserError, match="never starts from random") as error:
        trainer.initialize()
    assert f"polycl_pretrain -d {demo_name} -p nnUNetPlans -c 2d -f 0 -s simclr" in str(error.value)
    assert "polycl_pretrain" in Path(trainer.log_file).read_text()  # the log says why the run stopped


def test_pretraining_with_other_settings_names_both_values(write_pretraining, make_trainer):
    write_pretraining(strategy="O", fold=0, plans_identifier="nnUNetResEncUNetMPlans", configuration="2d_big")
    with pytest.raises(PolyCLUserError) as error:
        make_trainer("nnUNetTrainerPolyCL_smoke").initialize()
    message = str(error.value)
    assert "plans_identifier: pre-training 'nnUNetResEncUNetMPlans', this fine-tuning 'nnUNetPlans'" in message
    assert "configuration: pre-training '2d_big', this fine-tuning '2d'" in message
    assert "fold:" not in message


@pytest.mark.parametrize("meta, expected", [
    ({"fold": 3}, "fold: pre-training 3, this fine-tuning 0"),
    ({"strategy": "S"}, "strategy: pre-training 'S', this fine-tuning 'O'"),
])
def test_pretraining_of_another_fold_or_strategy_is_refused(write_pretraining, make_trainer, meta, expected):
    path = write_pretraining(strategy="O", fold=0)
    content = torch.load(path, weights_only=False)
    content["polycl"].update(meta)
    torch.save(content, path)
    with pytest.raises(PolyCLUserError, match=expected):
        make_trainer("nnUNetTrainerPolyCL_smoke").initialize()


def test_weights_that_do_not_fit_the_network_list_the_mismatches(write_pretraining, make_trainer):
    path = write_pretraining()
    content = torch.load(path, weights_only=False)
    weights = content["network_weights"]
    first, second = [k for k in weights if k.startswith("encoder.stages.")][:2]
    weights[first] = torch.zeros(3, 3)
    del weights[second]
    torch.save(content, path)
    with pytest.raises(PolyCLUserError, match="does not fit this network") as error:
        make_trainer("nnUNetTrainerPolyCL_smoke").initialize()
    assert f"{first}: shape (3, 3) instead of" in str(error.value)
    assert f"{second}: missing" in str(error.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_meta"])
def test_corrupted_weights_file_is_named(write_pretraining, make_trainer, damage):
    path = write_pretraining()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save({"network_weights": {}}, path)
    expected = "not a PolyCL pre-training output" if damage == "no_meta" else "cannot be read"
    with pytest.raises(PolyCLUserError, match=expected) as error:
        make_trainer("nnUNetTrainerPolyCL_smoke").initialize()
    assert str(path) in str(error.value)


def test_override_naming_no_file(make_trainer, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "pretrained_weights.pth"
    monkeypatch.setenv(OVERRIDE_VARIABLE, str(missing))
    with pytest.raises(PolyCLUserError, match=f"{OVERRIDE_VARIABLE}={missing} does not name an existing file"):
        make_trainer("nnUNetTrainerPolyCL_smoke").initialize()


def test_more_labelled_cases_than_the_fold_has(write_pretraining, make_trainer):
    write_pretraining()
    n = len(make_trainer("nnUNetTrainer").do_split()[0])
    trainer = make_trainer(f"nnUNetTrainerPolyCL_smoke_k{n + 1}")
    trainer.initialize()
    with pytest.raises(PolyCLUserError, match=f"k={n + 1} .*fold 0 has only {n} training cases"):
        trainer.get_tr_and_val_datasets()
    assert not (Path(trainer.output_folder) / SUBSET_FILE).exists()


def test_3d_configuration_is_refused_before_anything_is_written(make_trainer, demo_in_process):
    with pytest.raises(PolyCLUserError, match="3D .*Use the 2d configuration"):
        make_trainer("nnUNetTrainerPolyCL_smoke", configuration="3d_fullres")
    assert not list(Path(demo_in_process["nnUNet_results"]).rglob("*3d_fullres*"))
