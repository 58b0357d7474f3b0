"""Run one step's command as a subprocess, streaming its output into a log file and its last line to the caller.

Each step runs in its own process group (with the data-loading workers it starts), so that stopping
``polycl_experiment`` (SIGINT, SIGTERM or SIGHUP, see :func:`stop_steps_on_signals`) ends every running step and its
workers instead of leaving them orphaned, and starts no new one.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from os.path import isfile

from nnunet_polycl.paths import PolyCLUserError

_LINE_BREAK = re.compile(rb"[\r\n]")
_OWN_GROUP = os.name == "posix"  # POSIX process groups; elsewhere the step's process alone is ended
GRACE_S = 10.0  # seconds a step has to exit after SIGTERM before it is killed
_running: set[subprocess.Popen] = set()
_running_lock = threading.RLock()  # re-entrant: the signal handler runs in the main thread, which may hold it
_stopping = threading.Event()


class StoppedBySignal(Exception):
    """``polycl_experiment`` was stopped by a signal; ``ended`` names the steps' commands that were running."""

    def __init__(self, signum: int, ended: list[str]):
        self.signum, self.ended = signum, ended
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _signal_step(proc: subprocess.Popen, sig: int) -> None:
    try:
        if _OWN_GROUP:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def end_running_steps(grace_s: float = GRACE_S) -> list[str]:
    """Stop starting steps, and end every running step's process group: SIGTERM, then SIGKILL after ``grace_s``.

    Returns the commands (program names) that were running."""
    _stopping.set()
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _signal_step(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_step(proc, signal.SIGKILL)  # the leader may be gone while its workers still run
        proc.wait()
    return [os.path.basename(str(proc.args[0])) for proc in procs]


def stop_steps_on_signals() -> None:
    """Make SIGINT, SIGTERM and (unless ignored, as under ``nohup``) SIGHUP end the running steps
    (:func:`end_running_steps`) and then raise :class:`StoppedBySignal` in the main thread (call it from there).

    The steps run in their own process groups, so a terminal's Ctrl-C or hang-up reaches them only through this. A
    process forked from this one (nnU-Net's fork-context pools, whose workers get SIGTERM when the pool closes) dies of
    the signal as it would without these handlers: it neither prints a traceback nor ends this process's steps."""
    owner = os.getpid()
    hangup = getattr(signal, "SIGHUP", None)
    signals = [signal.SIGINT, signal.SIGTERM]
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        signals.append(hangup)

    def stop(signum: int, frame) -> None:
        if os.getpid() != owner:  # a forked child inherited the handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        raise StoppedBySignal(signum, end_running_steps())

    for sig in signals:
        signal.signal(sig, stop)


class StepFailedError(PolyCLUserError):
    """A step's command exited with an error; the message names the run, the log and the command."""


def refuse_if_stopping(description: str) -> None:
    """Raise :class:`StepFailedError` for ``description`` (a run or a step, not started) once a signal is ending the
    steps: nothing new starts, prints a step line or writes a file after it."""
    if _stopping.is_set():
        raise StepFailedError(f"{description}: not started, polycl_experiment is stopping.")


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
        with _running_lock:
            refuse_if_stopping(description)
            try:
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=_OWN_GROUP)
            except OSError as e:
                raise StepFailedError(f"{description}: could not start {argv[0]} ({e}). Is the package installed "
                                      f"in this environment (its console scripts on PATH)?") from None
            _running.add(proc)
        try:
            _stream(proc, log, on_line)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                _signal_step(proc, signal.SIGTERM)
                proc.wait()
            with _running_lock:
                _running.discard(proc)
    if code != 0:
        raise StepFailedError(
            f"{description} failed (exit code {code}).\nCommand: {shlex.join(argv)}\nLog: {log_file}\n"
            f"--- last lines of the log ---\n{log_tail(log_file)}\n---\nFinished runs are kept. Fix the cause and "
            f"run the same polycl_experiment command again: this run continues where it stopped.")
    return time.time() - start
