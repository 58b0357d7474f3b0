"""nnU-Net's validation workers start without running the command's main script again (the script of
``nnUNetv2_train`` imports the whole training stack in each of them)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_polycl.finetuning.spawned_workers import workers_without_main_script

SCRIPT = """
import multiprocessing, os, sys
from nnunet_polycl.finetuning.spawned_workers import workers_without_main_script

if __name__ == "__mp_main__":  # this script, run again in a spawned worker (which gets the parent's sys.argv)
    with open(sys.argv[1], "a") as f:
        f.write("main script ran in a worker\\n")

if __name__ == "__main__":
    light = sys.argv[2] == "light"
    file_before = __file__
    if light:
        with workers_without_main_script():
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                worker = pool.apply(os.getpid)
        assert __file__ == file_before and __spec__ is None  # restored
    else:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            worker = pool.apply(os.getpid)
    print(worker != os.getpid())
"""


def _run(tmp_path: Path, mode: str) -> str:
    script, marker = tmp_path / "command.py", tmp_path / f"marker_{mode}.txt"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(marker), mode], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"  # the function ran in another process
    return marker.read_text() if marker.exists() else ""


def test_spawned_workers_run_their_function_without_the_main_script(tmp_path):
    assert _run(tmp_path, "plain") == "main script ran in a worker\n"  # Python's default: the script runs again
    assert _run(tmp_path, "light") == ""


def test_the_main_module_is_restored_when_the_validation_fails():
    main = sys.modules["__main__"]
    before = {name: main.__dict__.get(name, "absent") for name in ("__file__", "__spec__")}
    with pytest.raises(RuntimeError, match="validation failed"):
        with workers_without_main_script():
            assert "__file__" not in main.__dict__ and main.__spec__ is None
            raise RuntimeError("validation failed")
    assert {name: main.__dict__.get(name, "absent") for name in ("__file__", "__spec__")} == before
