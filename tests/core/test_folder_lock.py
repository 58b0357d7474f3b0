"""The output-folder lock: a second process is refused naming the holder (or, with ``wait``, waits for it), a dead
holder's lock is taken over, and the empty folders a released lock created are removed again."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_polycl.folder_lock import LOCK_FILE, FolderLock
from nnunet_polycl.paths import PolyCLUserError

HOLD = ("import sys, time\nfrom nnunet_polycl.folder_lock import FolderLock\n"
        "FolderLock(sys.argv[1], 'holder').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes ``folder``'s lock and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        with pytest.raises(PolyCLUserError) as error:
            FolderLock(str(folder), "polycl_pretrain").acquire()
        message = str(error.value)
        assert f"holder pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(folder / LOCK_FILE) in message and "\n" not in message
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_FILE).is_file()  # a kill -9 leaves the file behind: a stale lock
    with FolderLock(str(folder), "polycl_pretrain") as lock:
        assert f"holder pid {holder.pid}" in lock.took_over
        assert f"pid {os.getpid()}" in (folder / LOCK_FILE).read_text()
        with pytest.raises(PolyCLUserError, match=f"in use by polycl_pretrain pid {os.getpid()}"):
            FolderLock(str(folder), "polycl_experiment").acquire()
    assert "took over the stale lock" in capsys.readouterr().out
    assert list(folder.iterdir()) == []  # released: the lock file is gone (the folder is the killed holder's)


# Holds the lock for 2 s, then touches sys.argv[2] just before letting go.
HOLD_BRIEFLY = ("import sys, time\nfrom nnunet_polycl.folder_lock import FolderLock\n"
                "with FolderLock(sys.argv[1], 'holder'):\n    print('held', flush=True)\n    time.sleep(2)\n"
                "    open(sys.argv[2], 'w').close()\n")


def test_a_waiting_lock_says_whom_it_waits_for_and_is_taken_when_the_holder_releases_it(tmp_path, capsys):
    folder, letting_go = tmp_path / "cache", tmp_path / "letting_go"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_BRIEFLY, str(folder), str(letting_go)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with FolderLock(str(folder), "preprocessing", wait=True):
        assert letting_go.exists()  # taken only once the holder was done
        assert f"pid {os.getpid()}" in (folder / LOCK_FILE).read_text()
    holder.wait()
    assert f"preprocessing: waiting for holder pid {holder.pid}" in capsys.readouterr().out


def test_release_removes_only_the_empty_folders_the_lock_created(tmp_path):
    folder = tmp_path / "a" / "b"
    with FolderLock(str(folder), "polycl_pretrain"):
        (folder / "config.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    with FolderLock(str(tmp_path / "x" / "y"), "polycl_pretrain"):  # e.g. a run refused for bad input
        assert (tmp_path / "x" / "y" / LOCK_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# The child touches sys.argv[2] once it runs Python code, so after its fork handlers have run (on a loaded machine the
# parent can be killed before the child was ever scheduled); the parent prints the child's pid.
HOLD_AND_FORK = ("import os, sys, time\nfrom nnunet_polycl.folder_lock import FolderLock\n"
                 "FolderLock(sys.argv[1], 'holder').acquire()\nchild = os.fork()\n"
                 "if child == 0:\n    open(sys.argv[2], 'w').close()\n    time.sleep(120)\n    os._exit(0)\n"
                 "print(child, flush=True)\ntime.sleep(120)\n")


def test_a_forked_worker_that_outlives_its_killed_holder_does_not_keep_the_lock(tmp_path):
    """A data-loading worker forked by the holder may live on for a moment after the holder is killed: the lock is
    still taken over (``polycl_pretrain --c`` right after a kill -9)."""
    folder = tmp_path / "run"
    running = tmp_path / "child_running"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(folder), str(running)],
                              stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    for _ in range(600):
        if running.exists():
            break
        time.sleep(0.05)
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the forked worker is still alive
        with FolderLock(str(folder), "polycl_pretrain") as lock:
            assert lock.took_over and f"holder pid {holder.pid}" in lock.took_over
    finally:
        os.kill(child, signal.SIGKILL)
