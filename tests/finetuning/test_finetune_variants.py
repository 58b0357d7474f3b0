"""Trainer names: grammar, one class per name, nnU-Net's lookup finds them; reduced-label choice."""
from __future__ import annotations

import pickle

import pytest

from nnunet_polycl.environment import trainer_directory
from nnunet_polycl.finetuning import variants
from nnunet_polycl.finetuning.labelled_subset import SUBSET_SEED, choose_labelled_cases
from nnunet_polycl.finetuning.trainer import nnUNetTrainerPolyCL
from nnunet_polycl.paths import DEFAULT_STRATEGY, PolyCLUserError


@pytest.fixture
def ext_trainer(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", trainer_directory())


@pytest.mark.parametrize("name, strategy, epochs, k", [
    ("nnUNetTrainerPolyCL", DEFAULT_STRATEGY, 1000, None),
    ("nnUNetTrainerPolyCL_S", "S", 1000, None),
    ("nnUNetTrainerPolyCL_M_paper", "M", 100, None),
    ("nnUNetTrainerPolyCL_SimCLR_smoke", "simclr", 2, None),
    ("nnUNetTrainerPolyCL_Baseline_paper_k3", None, 100, 3),
    ("nnUNetTrainerPolyCL_demo_k12", DEFAULT_STRATEGY, 12, 12),
    ("nnUNetTrainerPolyCL_O_k1", "O", 1000, 1),
    ("nnUNetTrainerPolyCL_O_demo_decoderfirst_k1_seed4", "O", 12, 1),
    ("nnUNetTrainerPolyCL_Baseline_warmup_seed0", None, 1000, None),
])
def test_nnunet_lookup_finds_each_variant_with_its_settings(ext_trainer, name, strategy, epochs, k):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_trainer_class_by_name(name)
    assert cls is variants.trainer_class(name) is getattr(variants, name)
    assert cls.__name__ == name and issubclass(cls, nnUNetTrainerPolyCL)
    assert cls.polycl_strategy == strategy
    assert cls.polycl_num_labelled_cases == k
    schedule = {1000: nnUNetTrainerPolyCL, 100: variants.nnUNetTrainerPolyCL_paper,
                2: variants.nnUNetTrainerPolyCL_smoke, 12: variants.nnUNetTrainerPolyCL_demo}[epochs]
    assert issubclass(cls, schedule)
    assert name in cls.__doc__ or cls in variants.SCHEDULES.values()


def test_combined_class_inherits_from_the_name_without_its_last_suffix():
    cls = variants.trainer_class("nnUNetTrainerPolyCL_S_paper_k3")
    assert cls.__mro__[1:4] == (variants.nnUNetTrainerPolyCL_S_paper, variants.nnUNetTrainerPolyCL_paper,
                                nnUNetTrainerPolyCL)


def test_generated_docstrings_describe_the_settings():
    doc = variants.trainer_class("nnUNetTrainerPolyCL_Baseline_demo_k4").__doc__
    assert "random initialisation" in doc and "12 instead of 100 epochs" in doc
    assert "4 of the fold's training cases" in doc and str(SUBSET_SEED) in doc and "unseeded" in doc
    doc = variants.trainer_class("nnUNetTrainerPolyCL_S_paper_warmup_k2_seed7").__doc__
    assert "Adaptation: warmup: linear warm-up" in doc and "seed 7" in doc and "seeded with 7" in doc
    assert "polycl_pretrain -s simclr" in variants.nnUNetTrainerPolyCL_SimCLR.__doc__
    assert "100 epochs" in variants.nnUNetTrainerPolyCL_M_paper.__doc__


def test_every_method_schedule_combination_is_exported_by_the_thin_trainer_module(ext_trainer):
    import importlib
    import sys

    sys.path.insert(0, trainer_directory())
    try:
        thin = importlib.import_module("nnUNetTrainerPolyCL")
    finally:
        sys.path.remove(trainer_directory())
        sys.modules.pop("nnUNetTrainerPolyCL", None)
    names = [f"nnUNetTrainerPolyCL{m}{s}" for m in ("", "_S", "_O", "_M", "_SimCLR", "_Baseline")
             for s in ("", "_paper", "_demo", "_smoke")]
    assert set(names) <= set(thin.__all__)
    for name in names + ["nnUNetTrainerPolyCL_M_smoke_k7"]:
        assert getattr(thin, name) is variants.trainer_class(name)


@pytest.mark.parametrize("name", ["nnUNetTrainerPolyCL_k0", "nnUNetTrainerPolyCL_smoke_S", "nnUNetTrainerPolyCL_X",
                                  "nnUNetTrainerPolyCL_paper_demo", "nnUNetTrainerPolyCL_k03", "nnUNetTrainerFoo",
                                  "nnUNetTrainerPolyCL_seed1_k2", "nnUNetTrainerPolyCL_k2_warmup",
                                  "nnUNetTrainerPolyCL_seed01", "nnUNetTrainerPolyCL_slow"])
def test_invalid_names_are_not_trainers(ext_trainer, name):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert not hasattr(variants, name)
    with pytest.raises(ValueError, match="not a PolyCL trainer name"):
        variants.trainer_class(name)
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
        recursive_find_trainer_class_by_name(name)


def test_generated_classes_pickle_by_name():
    cls = variants.trainer_class("nnUNetTrainerPolyCL_Baseline_smoke_k2")
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_labelled_cases_are_seeded_nested_and_sorted():
    cases = [f"case_{i:02d}" for i in range(12)]
    chosen = {k: choose_labelled_cases(cases, k, fold=0) for k in range(1, 13)}
    assert all(len(chosen[k]) == k and chosen[k] == sorted(chosen[k]) for k in chosen)
    assert all(set(chosen[k]) < set(chosen[k + 1]) for k in range(1, 12))
    assert chosen[12] == cases
    assert choose_labelled_cases(list(reversed(cases)), 5, fold=0) == chosen[5]  # independent of input order
    assert choose_labelled_cases(cases, 5, fold=0, seed=SUBSET_SEED + 1) != chosen[5]


def test_more_labelled_cases_than_the_fold_has_is_a_clear_error():
    with pytest.raises(PolyCLUserError, match=r"k=13 .*fold 2 has only 12 training cases.*_k1 \.\.\. _k12"):
        choose_labelled_cases([f"c{i}" for i in range(12)], 13, fold=2)
    with pytest.raises(ValueError, match="at least 1"):
        choose_labelled_cases(["a"], 0, fold=0)


def test_the_runner_offers_every_schedule_the_trainers_have():
    """``polycl_experiment --schedule`` lists the trainer schedules by name (without importing the trainers)."""
    from nnunet_polycl.experiment.presets import SCHEDULES as RUNNER_SCHEDULES

    assert set(RUNNER_SCHEDULES) == {"default", *(suffix[1:] for suffix in variants.SCHEDULES if suffix)}
