"""Pre-training uses exactly nnU-Net's training cases of a fold, so fine-tuning never validates on pre-training data."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_polycl.network import load_plans_context
from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.slice_index import build_slice_index
from nnunet_polycl.splits import SPLITS_FILE, training_cases

FOLDS = [0, 1, 2, 3, 4, 7, "all"]  # 7: beyond the 5 splits -> nnU-Net's seeded 80:20 split

# nnU-Net's own nnUNetTrainer.do_split, run in a fresh interpreter (nnunetv2.paths reads the folders at import).
DO_SPLIT = """
import json, sys, torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
folder, out, folds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
result = {}
for fold in folds:
    plans = load_json(join(folder, 'nnUNetPlans.json'))
    plans['continue_training'] = False
    trainer = nnUNetTrainer(plans, '2d', fold, load_json(join(folder, 'dataset.json')), torch.device('cpu'))
    train, val = trainer.do_split()
    result[str(fold)] = [[str(i) for i in train], [str(i) for i in val]]
json.dump(result, open(out, 'w'))
"""


def _copy_preprocessed(preprocessed_demo: Path, root: Path, keep_cases: int | None = None) -> Path:
    """A private copy of the preprocessed demo dataset without splits_final.json (optionally only a few cases)."""
    target = root / "preprocessed" / preprocessed_demo.name
    shutil.copytree(preprocessed_demo, target, ignore=shutil.ignore_patterns(SPLITS_FILE))
    if keep_cases is not None:
        data = target / "nnUNetPlans_2d"
        cases = sorted(p.name[:-len(".pkl")] for p in data.glob("*.pkl"))
        for case in cases[keep_cases:]:
            for f in data.glob(f"{case}[._]*"):
                f.unlink()
    return target


def test_splits_equal_nnunet_do_split_and_the_written_file_is_nnunets(preprocessed_demo, demo_env, tmp_path,
                                                                       monkeypatch):
    ours_folder = _copy_preprocessed(preprocessed_demo, tmp_path / "ours")
    theirs_folder = _copy_preprocessed(preprocessed_demo, tmp_path / "theirs")
    env = dict(demo_env, nnUNet_preprocessed=str(theirs_folder.parent))
    out = tmp_path / "do_split.json"
    subprocess.run([sys.executable, "-c", DO_SPLIT, str(theirs_folder), str(out), json.dumps(FOLDS)], env=env, check=True,
                   capture_output=True, timeout=300)
    theirs = json.loads(out.read_text())

    monkeypatch.setenv("nnUNet_preprocessed", str(ours_folder.parent))
    ctx = load_plans_context(ours_folder.name)
    for fold in FOLDS:
        train, val = training_cases(ctx, str(fold))
        expected_train, expected_val = theirs[str(fold)]
        if fold == "all":  # nnU-Net keeps os.listdir order there; we sort
            expected_train, expected_val = sorted(expected_train), sorted(expected_val)
        assert (train, val) == (expected_train, expected_val), f"fold {fold}"
    assert (ours_folder / SPLITS_FILE).read_bytes() == (theirs_folder / SPLITS_FILE).read_bytes()
    assert not list(ours_folder.glob(f"{SPLITS_FILE}.tmp*"))


def test_existing_split_file_is_used_and_checked(preprocessed_demo, demo_in_process, tmp_path, monkeypatch):
    folder = _copy_preprocessed(preprocessed_demo, tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(folder.parent))
    ctx = load_plans_context(folder.name)
    ids = sorted(p.name[:-len(".pkl")] for p in (folder / "nnUNetPlans_2d").glob("*.pkl"))
    custom = [{"train": ids[:3], "val": ids[3:]}, {"train": ids[2:], "val": ids[:2]}]
    (folder / SPLITS_FILE).write_text(json.dumps(custom))
    assert training_cases(ctx, 1) == (ids[2:], ids[:2])
    assert json.loads((folder / SPLITS_FILE).read_text()) == custom  # never rewritten

    (folder / SPLITS_FILE).write_text(json.dumps([{"train": ["no_such_case", *ids[:2]], "val": ids[2:]}]))
    with pytest.raises(PolyCLUserError, match="not in .*no_such_case"):
        training_cases(ctx, 0)


def test_no_validation_case_in_the_slice_index_of_a_fold(preprocessed_demo, demo_in_process):
    ctx = load_plans_context(preprocessed_demo.name)
    train, val = training_cases(ctx, 0)
    index = build_slice_index(ctx, train)
    assert set(index.case_ids) == set(train) and not set(index.case_ids) & set(val)
    all_train, all_val = training_cases(ctx, "all")
    assert all_train == all_val and set(all_train) == set(train) | set(val)


def test_bad_folds_and_too_few_cases_get_clear_errors(preprocessed_demo, demo_in_process, tmp_path, monkeypatch):
    folder = _copy_preprocessed(preprocessed_demo, tmp_path, keep_cases=3)
    monkeypatch.setenv("nnUNet_preprocessed", str(folder.parent))
    ctx = load_plans_context(folder.name)
    with pytest.raises(PolyCLUserError, match="has 3 preprocessed cases.*-f all"):
        training_cases(ctx, 0)
    assert not (folder / SPLITS_FILE).exists()
    assert len(training_cases(ctx, "all")[0]) == 3
    for bad in ("x", -1, "1.5"):
        with pytest.raises(PolyCLUserError, match="Invalid fold"):
            training_cases(ctx, bad)
