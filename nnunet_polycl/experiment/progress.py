"""Progress display: an overall bar over the runs, and a status line with the running step's latest output line."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

_STATUS_EVERY_S = 0.5


class ExperimentProgress:
    """Overall tqdm bar (one tick per run) plus a status line that follows the current subprocess's output.

    Important events (a step starts, a run is skipped or finished) are printed as lines above the bars, so that they
    stay in the terminal's scroll-back and in a redirected log. The bars are shown only on a terminal.
    """

    def __init__(self, total_runs: int, enabled: bool = True):
        enabled = enabled and sys.stderr.isatty()
        self._total, self._done = total_runs, 0
        self._bar = tqdm(total=total_runs, desc="runs", unit="run", position=0, disable=not enabled, file=sys.stderr,
                         dynamic_ncols=True)
        self._status = tqdm(total=0, bar_format="{desc}", position=1, disable=not enabled, file=sys.stderr,
                            dynamic_ncols=True)
        self._prefix = ""
        self._last = 0.0

    def message(self, text: str) -> None:
        """Print a line above the bars."""
        self._bar.write(text, file=sys.stderr)

    def step(self, run_name: str, step: str, path: str, what: str = "log") -> None:
        """A step of a run starts; its output goes to ``path`` (its log file, or ``what`` it writes)."""
        self._prefix = f"[{run_name}] {step}"
        self.message(f"{self._prefix}  ({what}: {path})")
        self._status.set_description_str(self._prefix, refresh=True)

    def line(self, text: str) -> None:
        """The current step printed ``text``; shown in the status line (at most twice a second)."""
        now = time.time()
        if now - self._last >= _STATUS_EVERY_S:
            self._last = now
            self._status.set_description_str(f"{self._prefix}: {text[:160]}", refresh=True)

    def run_done(self, run_name: str, detail: str) -> None:
        """One run is finished (or was already finished: ``detail`` says which)."""
        self._done += 1
        self.message(f"[{run_name}] {detail} ({self._done}/{self._total} runs)")
        self._bar.update(1)

    def close(self) -> None:
        self._status.close()
        self._bar.close()
