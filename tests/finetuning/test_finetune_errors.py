"""Bad input to the fine-tuning trainers: a one-line PolyCLUserError naming the file, the mismatch and the fix, raised
when the trainer is created, before nnU-Net writes anything into the fold folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE
from nnunet_polycl.finetuning.pretrained import ALLOW_FOREIGN_VARIABLE, OVERRIDE_VARIABLE
from nnunet_polycl.finetuning.trainer import RECORD_FILE
from nnunet_polycl.paths import PolyCLUserError

TRAINER = "nnUNetTrainerPolyCL_smoke"


def refused(make_trainer, demo_in_process, name: str = TRAINER) -> str:
    """The message of the error ``name`` raises when created; asserts it is one line and nothing was written."""
    results = Path(demo_in_process["nnUNet_results"])
    before = sorted(p for p in results.rglob("*") if "PolyCL_" not in str(p))
    with pytest.raises(PolyCLUserError) as error:
        make_trainer(name)
    message = str(error.value)
    assert "\n" not in message, message
    assert sorted(p for p in results.rglob("*") if "PolyCL_" not in str(p)) == before  # no fold folder, no log
    return message


def edit_meta(path: Path, **changes) -> None:
    content = torch.load(path, weights_only=True)
    content["polycl"].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del content["polycl"][key]
    torch.save(content, path)


def test_missing_pretraining_names_the_polycl_pretrain_command(make_trainer, demo_name, demo_in_process):
    message = refused(make_trainer, demo_in_process, "nnUNetTrainerPolyCL_SimCLR_smoke")
    assert "never starts from random" in message
    assert f"polycl_pretrain -d {demo_name} -p nnUNetPlans -c 2d -f 0 -s simclr" in message


def test_pretraining_with_other_settings_names_both_values(write_pretraining, make_trainer, demo_in_process):
    write_pretraining(strategy="O", fold=0, plans_identifier="nnUNetResEncUNetMPlans", configuration="2d_big")
    message = refused(make_trainer, demo_in_process)
    assert "plans_identifier: pre-training 'nnUNetResEncUNetMPlans', this fine-tuning 'nnUNetPlans'" in message
    assert "configuration: pre-training '2d_big', this fine-tuning '2d'" in message
    assert "fold:" not in message


@pytest.mark.parametrize("meta, expected", [
    ({"fold": 3}, "fold: pre-training 3, this fine-tuning 0"),
    ({"strategy": "S"}, "strategy: pre-training 'S', this fine-tuning 'O'"),
])
def test_pretraining_of_another_fold_or_strategy_is_refused(write_pretraining, make_trainer, demo_in_process, meta,
                                                            expected):
    edit_meta(write_pretraining(strategy="O", fold=0), **meta)
    assert expected in refused(make_trainer, demo_in_process)


@pytest.mark.parametrize("meta, expected", [
    ({"dataset_name": "Dataset017_Other"}, "pre-trained on dataset Dataset017_Other, this run fine-tunes Dataset990"),
    ({"plans_fingerprint": "0" * 64}, "plans fingerprint 000000000000… differs"),
])
def test_weights_of_another_dataset_or_plans_are_refused(write_pretraining, make_trainer, demo_in_process, meta,
                                                         expected):
    path = write_pretraining()
    edit_meta(path, **meta)
    message = refused(make_trainer, demo_in_process)
    assert expected in message and str(path) in message and f"{ALLOW_FOREIGN_VARIABLE}=1" in message


def test_opting_in_loads_foreign_weights_and_records_it(write_pretraining, make_trainer, monkeypatch):
    edit_meta(write_pretraining(), dataset_name="Dataset017_Other")
    monkeypatch.setenv(ALLOW_FOREIGN_VARIABLE, "1")
    trainer = make_trainer(TRAINER)
    trainer.initialize()
    checks = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())["pretrained_weights"]["checks"]
    assert checks["dataset_name"] == "Dataset017_Other"
    assert "pre-trained on dataset Dataset017_Other" in checks["foreign_opt_in"][0]
    assert f"WARNING: {ALLOW_FOREIGN_VARIABLE}=1" in Path(trainer.log_file).read_text()


def refused_after_moving_to_validation(make_trainer, demo_in_process, preprocessed_demo,
                                       count: int) -> tuple[str, list[str]]:
    """The refusal message when fold 0's split is changed so that ``count`` training cases (of the pre-training)
    become its validation cases, and those cases; the split file is restored afterwards."""
    splits_file = preprocessed_demo / "splits_final.json"
    original = splits_file.read_text() if splits_file.exists() else None
    train, val = make_trainer("nnUNetTrainer").do_split()  # writes nnU-Net's split when missing
    splits = json.loads(splits_file.read_text())
    moved = sorted(train)[:count]
    splits[0] = {"train": sorted(set(train) - set(moved)) + sorted(val), "val": moved}
    try:
        splits_file.write_text(json.dumps(splits))
        return refused(make_trainer, demo_in_process), moved
    finally:
        if original is None:
            splits_file.unlink()
        else:
            splits_file.write_text(original)


def test_a_changed_split_that_makes_pretraining_cases_validation_cases_is_refused(
        write_pretraining, make_trainer, demo_in_process, preprocessed_demo):
    path = write_pretraining()  # pre-trained on fold 0's training cases
    message, moved = refused_after_moving_to_validation(make_trainer, demo_in_process, preprocessed_demo, 2)
    assert f"pre-trained on 2 case(s) that are validation cases of fold 0 now ({', '.join(moved)})" in message
    assert str(path) in message and "splits_final.json changed after pre-training" in message


def test_an_older_file_without_provenance_loads_with_a_warning(write_pretraining, make_trainer):
    path = write_pretraining(provenance=False)
    trainer = make_trainer(TRAINER)
    trainer.initialize()
    log = Path(trainer.log_file).read_text()
    assert f"WARNING: {path} does not record plans_fingerprint, pretraining_cases" in log
    assert "whether its pre-training saw this fold's validation cases cannot be checked" in log


def test_weights_that_do_not_fit_the_network_list_the_mismatches(write_pretraining, make_trainer, demo_in_process):
    path = write_pretraining()
    content = torch.load(path, weights_only=True)
    weights = content["network_weights"]
    first, second = [k for k in weights if k.startswith("encoder.stages.")][:2]
    weights[first] = torch.zeros(3, 3)
    del weights[second]
    torch.save(content, path)
    message = refused(make_trainer, demo_in_process)
    assert "does not fit this network" in message
    assert f"{first}: shape (3, 3) instead of" in message and f"{second}: missing" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_meta"])
def test_corrupted_weights_file_is_named(write_pretraining, make_trainer, demo_in_process, damage):
    path = write_pretraining()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save({"network_weights": {}}, path)
    expected = "not a PolyCL pre-training output" if damage == "no_meta" else "cannot be read"
    message = refused(make_trainer, demo_in_process)
    assert expected in message and str(path) in message


def test_override_naming_no_file(make_trainer, demo_in_process, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "pretrained_weights.pth"
    monkeypatch.setenv(OVERRIDE_VARIABLE, str(missing))
    assert f"{OVERRIDE_VARIABLE}={missing} does not name an existing file" in refused(make_trainer, demo_in_process)


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


def test_fold_all_has_no_held_out_cases_to_leak_into(write_pretraining, make_trainer):
    write_pretraining(fold="all")  # pre-trained on every case, as fold "all" fine-tunes and validates on every case
    trainer = make_trainer("nnUNetTrainerPolyCL_smoke", fold="all")
    trainer.initialize()
    checks = json.loads((Path(trainer.output_folder) / RECORD_FILE).read_text())["pretrained_weights"]["checks"]
    assert checks["validation_cases_checked"] is False and checks["foreign_opt_in"] is None
