"""Bad input to polycl_pretrain: a clear message naming the problem and the fix, exit 2, and nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnunet_polycl.paths import PolyCLUserError
from nnunet_polycl.pretraining.cli import run_pretraining
from tests.conftest import run_cli
from tests.pretraining.conftest import NO_ORGAN_ID, SMALL_ID, SMALL_NAME

TINY = dict(fold="all", device="cpu", epochs=1, batch_size=4, num_workers=0)


@pytest.fixture
def small_in_process(small_env, monkeypatch) -> Path:
    """The small datasets' folders in this process's environment; returns nnUNet_results."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, small_env[key])
    return Path(small_env["nnUNet_results"])


def assert_cli_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("polycl_pretrain: error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.mark.e2e
def test_cli_errors_are_one_clean_line(small_env):
    results = Path(small_env["nnUNet_results"])
    assert_cli_error(run_cli(["polycl_pretrain", "-d", "987", "-device", "cpu"], small_env, check=False),
                     "Unknown dataset '987'", "nnUNetv2_plan_and_preprocess")
    assert_cli_error(run_cli(["polycl_pretrain", "-d", str(NO_ORGAN_ID), "-f", "all", "-s", "O", "-device", "cpu"],
                             small_env, check=False), "Strategy O", "no slice contains", "strategy S")
    if not torch.cuda.is_available():
        assert_cli_error(run_cli(["polycl_pretrain", "-d", str(SMALL_ID), "-f", "all", "-device", "cuda"], small_env,
                                 check=False), "CUDA is not available", "-device cpu")
    assert list(results.iterdir()) == []


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(strategy="O", labels=["spleen"]), ["Unknown target label 'spleen'", "liver=1"]),
    (dict(strategy="O", labels=["2"]), ["Unknown target label '2'"]),
    (dict(strategy="S", labels=["liver"]), ["--label chooses the organ for strategies O and M"]),
    (dict(strategy="O", slice_fraction=0.1), ["every slice contains the target", "strategy S"]),
    (dict(strategy="O", configuration="3d_fullres"), ["3D network", "-c 2d"]),
    (dict(strategy="O", plans_identifier="nnUNetResEncUNetMPlans"), ["No plans file", "-p"]),
    (dict(strategy="O", fold=0), ["needs at least 5", "-f all"]),
    (dict(strategy="S", epochs=0, lr=-1.0), ["--epochs must be >= 1", "--lr must be a positive number"]),
    (dict(strategy="S", continue_training=True, overwrite=True), ["exclude each other"]),
])
def test_invalid_settings_are_refused_before_writing(small_in_process, kwargs, fragments):
    with pytest.raises(PolyCLUserError) as error:
        run_pretraining(SMALL_ID, **{**TINY, **kwargs})
    for fragment in fragments:
        assert fragment in str(error.value)
    assert list(small_in_process.iterdir()) == []


def test_corrupted_checkpoint_on_continue_names_the_file(small_in_process):
    folder = small_in_process / SMALL_NAME / "PolyCL_S__nnUNetPlans__2d" / "fold_all"
    folder.mkdir(parents=True)
    checkpoint = folder / "checkpoint_latest.pth"
    checkpoint.write_bytes(b"PK\x03\x04 truncated by a full disk")
    with pytest.raises(PolyCLUserError, match="cannot be read") as error:
        run_pretraining(SMALL_ID, strategy="S", continue_training=True, **TINY)
    assert str(checkpoint) in str(error.value) and "--overwrite" in str(error.value)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_latest.pth"]


def test_continue_with_other_settings_is_refused(small_in_process):
    folder = Path(run_pretraining(SMALL_ID, strategy="S", slice_fraction=0.1, **{**TINY, "batch_size": 8}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(PolyCLUserError, match="different settings") as error:
        run_pretraining(SMALL_ID, strategy="S", slice_fraction=0.1, continue_training=True, seed=3,
                        **{**TINY, "epochs": 2, "batch_size": 8})
    assert "seed: checkpoint 0, now 3" in str(error.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
