"""The output-folder lock through the real commands: a second ``polycl_pretrain`` or ``polycl_experiment`` on a
folder in use is refused in one line naming the holder, and a killed run's stale lock is taken over."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from nnunet_polycl.folder_lock import LOCK_FILE
from tests.conftest import run_cli
from tests.core.test_folder_lock import hold_lock
from tests.pretraining.conftest import S_ARGS, SMALL_ID

pytestmark = pytest.mark.e2e


def assert_refused(proc, program: str, folder: Path, holder_pid: int, status: int) -> None:
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.startswith(f"{program}: error: {folder} is in use by holder pid {holder_pid} on host ")
    assert f"(lock file {folder / LOCK_FILE})" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_folder_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(small_env, tmp_path):
    folder, experiment = tmp_path / "run", tmp_path / "experiment"
    holders = [hold_lock(folder), hold_lock(experiment)]
    try:
        for flag in ([], ["--overwrite"], ["--c"]):
            proc = run_cli(["polycl_pretrain", *S_ARGS, "--epochs", "1", "-o", str(folder), *flag], small_env,
                           check=False)
            assert_refused(proc, "polycl_pretrain", folder, holders[0].pid, 2)
        proc = run_cli(["polycl_experiment", "-d", str(SMALL_ID), "-f", "all", "-device", "cpu", "-o",
                        str(experiment)], small_env, check=False)
        assert_refused(proc, "polycl_experiment", experiment, holders[1].pid, 1)
    finally:
        for holder in holders:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]  # nothing written; the stale lock is left
    proc = run_cli(["polycl_pretrain", *S_ARGS, "--epochs", "1", "-o", str(folder)], small_env)
    assert f"took over the stale lock {folder / LOCK_FILE} of holder pid {holders[0].pid}" in proc.stdout
    assert (folder / "pretrained_weights.pth").is_file() and not (folder / LOCK_FILE).exists()
