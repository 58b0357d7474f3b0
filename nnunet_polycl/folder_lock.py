"""An exclusive lock on an output folder, held for a whole run (``polycl_pretrain``, ``polycl_experiment``).

- The lock is ``FOLDER/.polycl.lock``: a kernel lock (``fcntl.flock``) on that file, held while the process lives,
  and the holder's pid, host, program and start time written in it for the error message.
- A second process is refused with a one-line :class:`~nnunet_polycl.paths.PolyCLUserError` naming the holder and
  the lock file, or, with ``wait=True`` (a shared cache that two runs may fill at once), waits for the holder to
  release it, saying once whom it waits for. The kernel drops the lock when its holder dies (even by ``kill -9``):
  a lock file that nobody holds is stale and is taken over, which :meth:`FolderLock.acquire` reports.
- Forked children (data-loading workers) close their copy of the lock's descriptor: a worker that outlives its
  killed parent for a moment must not keep the lock held (the next run's ``--c`` would be refused).
- Released, the file is removed, and so are the folders the lock created if they are still empty (a run refused
  for bad input leaves nothing behind).
- Folders on network file systems: ``flock`` is honoured by NFS v4 clients on Linux; on file systems without any
  locking the lock is advisory only.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from os.path import dirname, isdir, join

from nnunet_polycl.paths import PolyCLUserError

LOCK_FILE = ".polycl.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    """After a fork: the child closes its copies of the held locks' descriptors (the parent's lock stays held)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """``with FolderLock(folder, "polycl_pretrain") as lock:`` holds ``folder``'s lock for the block.

    ``lock.took_over`` holds the previous holder's description when a stale lock was taken over (else None).
    """

    def __init__(self, folder: str, program: str, wait: bool = False):
        self.folder = os.path.abspath(folder)
        self.path = join(self.folder, LOCK_FILE)
        self.program = program
        self.wait = wait
        self.took_over: str | None = None
        self._fd: int | None = None
        self._created: list[str] = []

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder if needed); returns self.

        Raises:
            PolyCLUserError: another live process holds it (its pid and host are named); with ``wait`` it waits.
        """
        said_waiting = False
        while True:
            # (again after a wait: the holder removes on release the empty folders it created)
            self._created = sorted(set(self._created) | set(_missing_folders(self.folder)), key=len, reverse=True)
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd) or "another process"
                if not self.wait:
                    os.close(fd)
                    self._remove_created_folders()
                    raise PolyCLUserError(
                        f"{self.folder} is in use by {holder} (lock file {self.path}). Wait for that run to end, or "
                        f"choose another output folder.") from None
                if not said_waiting:
                    print(f"{self.program}: waiting for {holder} to finish with {self.folder} (lock file "
                          f"{self.path}).", flush=True)
                    said_waiting = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, self.path):  # not a file that its releasing holder unlinked meanwhile
                break
            os.close(fd)
        self.took_over = _read(fd) or None
        if self.took_over:
            print(f"{self.program}: took over the stale lock {self.path} of {self.took_over}: that process no longer "
                  f"holds it (it was killed or crashed).", flush=True)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (f"{self.program} pid {os.getpid()} on host {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        """Remove the lock file and give the lock up (no-op when not held)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        _HELD.discard(self._fd)
        os.close(self._fd)
        self._fd = None
        self._remove_created_folders()

    def _remove_created_folders(self) -> None:
        for folder in self._created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                return

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _missing_folders(folder: str) -> list[str]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while folder and not isdir(folder) and dirname(folder) != folder:
        missing.append(folder)
        folder = dirname(folder)
    return missing


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
