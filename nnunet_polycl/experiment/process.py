"""Run one step's command as a subprocess, streaming its output into a log file and its last line to the caller."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from os.path import isfile

from nnunet_polycl.paths import PolyCLUserError

_LINE_BREAK = re.compile(rb"[\r\n]")


class StepFailedError(PolyCLUserError):
    """A step's command exited with an error; the message names the run, the log and the command."""


def log_tail(log_file: str, n_lines: int = 25) -> str:
    """The last ``n_lines`` non-empty lines of a log file (progress-bar redraws count as lines)."""
    if not isfile(log_file):
        return ""
    with open(log_file, "rb") as f:
        f.seek(max(0, os.path.getsize(log_file) - 64 * 1024))
        lines = [x for x in _LINE_BREAK.split(f.read()) if x.strip()]
    return "\n".join(x.decode(errors="replace") for x in lines[-n_lines:])


def _stream(proc: subprocess.Popen, log, on_line: Callable[[str], None]) -> None:
    pending = b""
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        *lines, pending = _LINE_BREAK.split(pending + chunk)
        for line in lines:
            if line.strip():
                on_line(line.decode(errors="replace").strip())


def run_logged(argv: list[str], env: dict[str, str], log_file: str, description: str,
               on_line: Callable[[str], None] = lambda line: None) -> float:
    """Run ``argv``, appending its stdout and stderr to ``log_file`` and passing each line to ``on_line``.

    Returns the wall time in seconds.

    Raises:
        StepFailedError: the command exited non-zero or could not be started (the message shows the log's tail).
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    start = time.time()
    with open(log_file, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as e:
            raise StepFailedError(f"{description}: could not start {argv[0]} ({e}). Is the package installed in "
                                  f"this environment (its console scripts on PATH)?") from None
        try:
            _stream(proc, log, on_line)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if code != 0:
        raise StepFailedError(
            f"{description} failed (exit code {code}).\nCommand: {shlex.join(argv)}\nLog: {log_file}\n"
            f"--- last lines of the log ---\n{log_tail(log_file)}\n---\nFinished runs are kept. Fix the cause and "
            f"run the same polycl_experiment command again: this run continues where it stopped.")
    return time.time() - start
