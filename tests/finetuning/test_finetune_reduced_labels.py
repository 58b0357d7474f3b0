"""``_k<k>`` variants train on exactly k of the fold's training cases, recorded in the results folder."""
from __future__ import annotations

import json
from pathlib import Path

from nnunet_polycl.finetuning import SUBSET_FILE, SUBSET_SEED


def test_k_variant_trains_on_exactly_the_recorded_k_cases(write_pretraining, make_trainer):
    write_pretraining()
    full_train, full_val = make_trainer("nnUNetTrainerPolyCL_smoke").do_split()
    trainer = make_trainer("nnUNetTrainerPolyCL_smoke_k2")
    trainer.on_train_start()  # initialize + nnU-Net's data loaders, as run_training does

    record = json.loads((Path(trainer.output_folder) / SUBSET_FILE).read_text())
    assert record["k"] == 2 and record["seed"] == SUBSET_SEED and record["fold"] == 0
    assert record["training_cases_in_fold"] == sorted(full_train)
    chosen = record["cases"]
    assert len(chosen) == 2 and set(chosen) < set(full_train)

    loader = trainer.dataloader_train.data_loader
    assert sorted(loader.indices) == chosen
    drawn = {key for _ in range(3) for key in next(trainer.dataloader_train)["keys"]}
    assert drawn <= set(chosen)
    assert sorted(trainer.dataloader_val.data_loader.indices) == sorted(full_val)  # validation unchanged
    assert f"fine-tuning on 2 of the {len(full_train)} training cases" in Path(trainer.log_file).read_text()


def test_choice_is_reproducible_and_k_gets_its_own_results_folder(make_trainer):
    first = make_trainer("nnUNetTrainerPolyCL_smoke_k3")
    again = make_trainer("nnUNetTrainerPolyCL_smoke_k3")
    other = make_trainer("nnUNetTrainerPolyCL_smoke_k4")
    assert first.do_split() == again.do_split()
    assert set(first.do_split()[0]) < set(other.do_split()[0])
    assert first.output_folder == again.output_folder != other.output_folder
    assert Path(first.output_folder).parent.name == "nnUNetTrainerPolyCL_smoke_k3__nnUNetPlans__2d"
