"""The training / validation cases of a fold, exactly as ``nnUNetTrainer.do_split`` chooses them.

Pre-training for fold ``f`` must only see the cases that fine-tuning of fold ``f`` trains on; otherwise the encoder
has seen the validation cases before nnU-Net evaluates on them. nnU-Net writes ``splits_final.json`` only when it first
trains a fold. When the file is missing we create the split nnU-Net would create (its own
``generate_crossval_split(sorted ids, seed=12345, n_splits=5)``) and write it exactly as nnU-Net would (same content,
same ``save_json`` formatting), but atomically. Writing it pins the split: if cases are added to the dataset before
fine-tuning, nnU-Net still uses the split that pre-training used instead of silently computing a different one.
"""
from __future__ import annotations

from os.path import isfile, join

import numpy as np

from nnunet_polycl.checkpoint import atomic_write
from nnunet_polycl.network import PlansContext
from nnunet_polycl.paths import Fold, PolyCLUserError

SPLITS_FILE = "splits_final.json"
NNUNET_SPLIT_SEED = 12345
NNUNET_N_SPLITS = 5


def parse_fold(fold: Fold) -> int | str:
    """``"all"`` stays ``"all"``; ``3`` / ``"3"`` become ``3``, as in ``nnUNetv2_train``. Raises PolyCLUserError."""
    if fold == "all":
        return "all"
    try:
        value = int(fold)
    except (TypeError, ValueError):
        raise PolyCLUserError(f"Invalid fold {fold!r}: use an integer >= 0 or 'all' (-f all).") from None
    if value < 0:
        raise PolyCLUserError(f"Invalid fold {fold!r}: use an integer >= 0 or 'all' (-f all).")
    return value


def case_identifiers(ctx: PlansContext) -> list[str]:
    """Sorted identifiers of the preprocessed cases, read by nnU-Net's dataset class."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    return sorted(infer_dataset_class(ctx.data_folder).get_identifiers(ctx.data_folder))


def training_cases(ctx: PlansContext, fold: Fold, write_missing: bool = True) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)`` of ``fold``, identical to ``nnUNetTrainer.do_split``.

    fold ``"all"``: all cases for both. Otherwise the fold of ``<preprocessed>/splits_final.json``; when the file is
    missing, nnU-Net's seeded 5-fold split (written atomically when ``write_missing``); a fold beyond the splits gets
    nnU-Net's seeded random 80:20 split. Lists are sorted except in the 80:20 case (nnU-Net's order).

    Raises:
        PolyCLUserError: invalid fold, fewer than 5 cases without a split file, split file naming unknown cases,
            or a split without training cases.
    """
    fold = parse_fold(fold)
    ids = case_identifiers(ctx)
    if not ids:
        raise PolyCLUserError(f"No preprocessed cases in {ctx.data_folder}. Run nnUNetv2_plan_and_preprocess first.")
    if fold == "all":
        return list(ids), list(ids)
    splits = _load_or_create_splits(ctx, ids, write_missing)
    if fold < len(splits):
        train, val = [str(i) for i in splits[fold]["train"]], [str(i) for i in splits[fold]["val"]]
    else:
        train, val = _random_80_20_split(ids, fold)
    _check_split(ctx, fold, ids, train)
    return train, val


def _load_or_create_splits(ctx: PlansContext, ids: list[str], write_missing: bool) -> list[dict]:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    splits_file = join(ctx.preprocessed_folder, SPLITS_FILE)
    if isfile(splits_file):
        return load_json(splits_file)
    if len(ids) < NNUNET_N_SPLITS:
        raise PolyCLUserError(
            f"Dataset {ctx.dataset_name} has {len(ids)} preprocessed cases; nnU-Net's {NNUNET_N_SPLITS}-fold "
            f"cross-validation needs at least {NNUNET_N_SPLITS}. Use all cases with -f all (as nnUNetv2_train does), "
            f"or write your own {splits_file}."
        )
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = generate_crossval_split(ids, seed=NNUNET_SPLIT_SEED, n_splits=NNUNET_N_SPLITS)
    if write_missing:
        _save_json_atomically(splits, splits_file)
    return splits


def _random_80_20_split(ids: list[str], fold: int) -> tuple[list[str], list[str]]:
    """nnU-Net's fallback for a fold beyond the split file (``nnUNetTrainer.do_split``, same seed and order)."""
    rnd = np.random.RandomState(seed=NNUNET_SPLIT_SEED + fold)
    keys = np.sort(ids)
    idx_tr = rnd.choice(len(keys), int(len(keys) * 0.8), replace=False)
    idx_val = [i for i in range(len(keys)) if i not in idx_tr]
    return [str(keys[i]) for i in idx_tr], [str(keys[i]) for i in idx_val]


def _check_split(ctx: PlansContext, fold: int, ids: list[str], train: list[str]) -> None:
    if not train:
        raise PolyCLUserError(
            f"Fold {fold} of dataset {ctx.dataset_name} has no training cases ({len(ids)} cases in total). "
            f"Use -f all, or define the fold in {join(ctx.preprocessed_folder, SPLITS_FILE)}."
        )
    unknown = sorted(set(train) - set(ids))
    if unknown:
        raise PolyCLUserError(
            f"{join(ctx.preprocessed_folder, SPLITS_FILE)} lists training cases of fold {fold} that are not in "
            f"{ctx.data_folder}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}. Fix or delete the split file "
            f"(nnU-Net recreates its default split), or re-run the preprocessing."
        )


def _save_json_atomically(obj, path: str) -> None:
    """Write ``obj`` exactly as nnU-Net's ``save_json`` would, atomically."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    atomic_write(path, lambda tmp: save_json(obj, tmp))
