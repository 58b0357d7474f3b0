"""``_k<k>`` variants train on exactly k of the fold's training cases, recorded in the results folder."""
from __future__ import annotations

import json
from pathlib import Path

from nnunet_polycl.finetuning.labelled_subset import SUBSET_FILE, SUBSET_SEED


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


def test_choice_is_reproducible_and_k_gets_its_own_results_folder(write_pretraining, make_trainer):
    write_pretraining()
    first = make_trainer("nnUNetTrainerPolyCL_smoke_k3")
    again = make_trainer("nnUNetTrainerPolyCL_smoke_k3")
    other = make_trainer("nnUNetTrainerPolyCL_smoke_k4")
    assert first.do_split() == again.do_split()
    assert set(first.do_split()[0]) < set(other.do_split()[0])
    assert first.output_folder == again.output_folder != other.output_folder
    assert Path(first.output_folder).parent.name == "nnUNetTrainerPolyCL_smoke_k3__nnUNetPlans__2d"


def test_each_seed_draws_its_own_subsets_nested_across_k(make_trainer):
    chosen = {(seed, k): set(make_trainer(f"nnUNetTrainerPolyCL_Baseline_smoke_k{k}_seed{seed}").do_split()[0])
              for seed in range(4) for k in (1, 2, 4)}
    for seed in range(4):
        assert chosen[(seed, 1)] < chosen[(seed, 2)] < chosen[(seed, 4)]
    assert len({frozenset(chosen[(seed, 2)]) for seed in range(4)}) > 1  # the seeds sample which scans are labelled
    assert len({frozenset(chosen[(seed, 4)]) for seed in range(4)}) > 1
    again = make_trainer("nnUNetTrainerPolyCL_Baseline_smoke_k2_seed3")
    assert set(again.do_split()[0]) == chosen[(3, 2)]
    record = json.loads((Path(again.output_folder) / SUBSET_FILE).read_text())
    assert record["seed"] == 3 and set(record["cases"]) == chosen[(3, 2)]


def test_five_seeds_at_k1_on_a_fold_of_16_label_five_different_scans_nested_across_k():
    from nnunet_polycl.finetuning.labelled_subset import choose_labelled_cases

    cases = [f"case_{i:02d}" for i in range(16)]
    chosen = {(s, k): set(choose_labelled_cases(cases, k, fold=0, seed=s)) for s in range(5) for k in (1, 2, 4, 8)}
    assert len({frozenset(chosen[(s, 1)]) for s in range(5)}) == 5  # 5 distinct scans at k = 1
    for k in (2, 4, 8):
        assert len({frozenset(chosen[(s, k)]) for s in range(5)}) == 5
    for s in range(5):
        assert chosen[(s, 1)] < chosen[(s, 2)] < chosen[(s, 4)] < chosen[(s, 8)]
    assert choose_labelled_cases(list(reversed(cases)), 4, fold=0, seed=3) == sorted(chosen[(3, 4)])  # deterministic


def test_a_fold_with_too_few_cases_cannot_give_every_seed_its_own_subset():
    from nnunet_polycl.finetuning.labelled_subset import choose_labelled_cases

    cases = ["a", "b", "c"]
    at_k1 = {frozenset(choose_labelled_cases(cases, 1, fold=0, seed=s)) for s in range(5)}
    at_k2 = {frozenset(choose_labelled_cases(cases, 2, fold=0, seed=s)) for s in range(5)}
    assert len(at_k1) == 3 and len(at_k2) == 3  # every subset there is, then repeats
