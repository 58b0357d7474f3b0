"""The unlabelled-data benchmark runs and reports every figure; it never asserts speeds (timings flake on shared
machines) and leaves the user's folders alone."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nnunet_polycl.benchmark.unlabelled import main, synthetic_statuses
from tests.unlabelled.conftest import FEW_ID, FEW_NAME


def test_index_figures_cover_every_strategy(tmp_path, capsys):
    labelled, unlabelled = synthetic_statuses(3000)
    assert len(labelled) == len(unlabelled) == 15
    assert sum(not known.any() for _, known in unlabelled) == 5  # a third of the unlabelled scans have no status
    result = main(["-o", str(tmp_path / "index.json"), "index", "--sizes", "3000"])
    [row] = result["index"]
    assert row["slices"] == 3000 and row["index_bytes"] == 3000 * 10
    for key in ("build_s", "S_epoch_s", "O_epoch_s", "M_epoch_s", "S_ns_per_nlogn", "M_peak_bytes"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert json.loads((tmp_path / "index.json").read_text())["index"] == [row]
    assert "epoch of M" in capsys.readouterr().out


@pytest.mark.e2e
def test_preprocess_figures_compare_with_nnunets_preprocessor_in_scratch_folders(few_env):
    before = sorted(p.relative_to(few_env["nnUNet_preprocessed"]) for p in Path(few_env["nnUNet_preprocessed"]).rglob("*"))
    result = main(["preprocess", "-d", str(FEW_ID), "-np", "1", "--repeats", "1"])["preprocess"]
    assert result["dataset"] == FEW_NAME and result["cases"] == 5 and result["speed_ratio"] > 0
    assert len(result["nnunet_preprocess_s"]) == len(result["unlabelled_s"]) == 1
    after = sorted(p.relative_to(few_env["nnUNet_preprocessed"]) for p in Path(few_env["nnUNet_preprocessed"]).rglob("*"))
    assert after == before
