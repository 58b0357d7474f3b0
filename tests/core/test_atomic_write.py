"""atomic_write and the clean-up of what a killed writer leaves behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nnunet_polycl.checkpoint import atomic_write, remove_stale_temporary_files

KILLED_WRITER = """
import os, signal, sys
from nnunet_polycl.checkpoint import atomic_write

def write(tmp):
    with open(tmp, "w") as f:
        f.write("half")
    os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the write, as by a user or the OOM killer

atomic_write(sys.argv[1], write)
"""


def test_a_killed_write_leaves_the_target_untouched_and_the_next_run_removes_its_temporary_file(tmp_path: Path):
    target = tmp_path / "progress.png"
    atomic_write(str(target), lambda tmp: Path(tmp).write_text("complete"))
    (tmp_path / ".hidden_user_file").write_text("keep")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)])
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "complete"
    stale = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".progress.png.")

    assert remove_stale_temporary_files(str(tmp_path)) == stale
    assert sorted(os.listdir(tmp_path)) == [".hidden_user_file", "progress.png"]
