"""Shared fixtures: nnU-Net folders in a temporary directory, the demo dataset and its preprocessing.

End-to-end tests run real nnU-Net commands as subprocesses with CPU smoke settings (see README).
"""
from __future__ import annotations

import os
import subprocess
import sys
from os.path import dirname, isdir, join
from pathlib import Path

import pytest

# The real-CT session fixture (preprocessed_real_ct), shared by the core and the pre-training tests.
pytest_plugins = ["tests.real_ct"]

DEMO_ID = 990
BIN = dirname(sys.executable)
SHARED_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-abdomen-example"


def smoke_env(root: Path, results: Path | None = None) -> dict[str, str]:
    """Environment for a subprocess: nnU-Net folders under ``root``, CPU smoke settings, trainers discoverable."""
    from nnunet_polycl.environment import trainer_directory

    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(results or root / "results"),
        nnUNet_extTrainer=trainer_directory(),
        nnUNet_n_proc_DA="0",
        nnUNet_def_n_proc="1",
        nnUNet_compile="false",
        OMP_NUM_THREADS="2",
        MPLBACKEND="Agg",
        PATH=BIN + os.pathsep + env.get("PATH", ""),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], check: bool = True, timeout: float = 900,
            **kwargs) -> subprocess.CompletedProcess:
    """Run a console script of this virtual environment the way a user types it; show its output on failure."""
    proc = subprocess.run([join(BIN, args[0]), *args[1:]], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
                             f"\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def nnunet_root(tmp_path_factory) -> Path:
    """A session-wide nnU-Net work folder (raw / preprocessed / results)."""
    root = tmp_path_factory.mktemp("nnunet")
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir()
    return root


@pytest.fixture(scope="session")
def preprocessed_demo(nnunet_root) -> Path:
    """The demo dataset, generated and preprocessed for ``2d`` by the real nnU-Net commands (once per session)."""
    env = smoke_env(nnunet_root)
    run_cli(["polycl_demo", "make-dataset", "-d", str(DEMO_ID)], env)
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for the smoke setting 0
    run_cli(["nnUNetv2_plan_and_preprocess", "-d", str(DEMO_ID), "-c", "2d", "-np", "1", "-npfp", "1",
             "--verify_dataset_integrity"], {**env, "nnUNet_n_proc_DA": "1"})
    folder = next((nnunet_root / "preprocessed").glob(f"Dataset{DEMO_ID}_*"))
    assert isdir(folder / "nnUNetPlans_2d")
    return folder


@pytest.fixture
def demo_env(nnunet_root, preprocessed_demo, tmp_path) -> dict[str, str]:
    """Subprocess environment on the preprocessed demo dataset with a fresh, per-test nnUNet_results."""
    results = tmp_path / "results"
    results.mkdir()
    return smoke_env(nnunet_root, results)


@pytest.fixture
def demo_in_process(demo_env, monkeypatch) -> dict[str, str]:
    """Same folders as ``demo_env``, set in this process's environment (for in-process API tests)."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_def_n_proc",
                "nnUNet_compile"):
        monkeypatch.setenv(key, demo_env[key])
    return demo_env


@pytest.fixture(scope="session")
def shared_ct() -> Path:
    """Folder of the real CT example (../shared/data/ct-abdomen-example); skips the test when absent."""
    if not (SHARED_CT / "ct.nii.gz").is_file() or not (SHARED_CT / "liver.nii.gz").is_file():
        pytest.skip(f"real CT example not found at {SHARED_CT}")
    return SHARED_CT

