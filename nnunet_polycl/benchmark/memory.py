"""Peak memory of a block of training steps, on CUDA and on the CPU.

- CUDA: ``torch.cuda.max_memory_allocated`` (tensors) and ``max_memory_reserved`` (what the caching allocator holds)
  over the block, after ``empty_cache`` and ``reset_peak_memory_stats``; both include everything already allocated on
  the device (model, optimiser state). The CUDA context itself (a few hundred MiB) is in neither.
- CPU (Linux): the growth of the process's peak resident set size during the block. The kernel's high-water mark
  (``VmHWM`` in ``/proc/self/status``) is reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs``, so
  the figure is ``VmHWM after - VmRSS before``, plus the bytes of the model's parameters and buffers (resident before
  the block). Memory that the allocator keeps from earlier work would hide growth: glibc's ``malloc_trim`` returns
  it to the system first. Measure the first steps of a fresh model (they allocate gradients and optimiser state).
  Where ``clear_refs`` cannot be written (not Linux, restricted), ``ru_maxrss`` growth is used: a lower bound (0 when
  an earlier peak was higher), marked as such.
"""
from __future__ import annotations

import ctypes
import gc
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

STATUS_FILE = "/proc/self/status"
CLEAR_REFS_FILE = "/proc/self/clear_refs"


def _status_kib(field: str) -> int | None:
    try:
        with open(STATUS_FILE) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Give memory that glibc's allocator keeps after ``free`` back to the system (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    _release_free_heap()
    try:
        with open(CLEAR_REFS_FILE, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@contextmanager
def peak_memory(device: torch.device, model: nn.Module) -> Iterator[dict]:
    """Yield a dict that holds, after the block, ``peak_bytes`` and ``method`` (plus ``reserved_bytes`` on CUDA)."""
    record: dict = {}
    if device.type == "cuda":
        gc.collect()  # tensors of earlier workloads that only reference cycles keep alive
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # so that the reserved peak holds only what the block needs
        torch.cuda.reset_peak_memory_stats(device)
        yield record
        torch.cuda.synchronize(device)
        record.update(peak_bytes=int(torch.cuda.max_memory_allocated(device)),
                      reserved_bytes=int(torch.cuda.max_memory_reserved(device)),
                      method="torch.cuda.max_memory_allocated (model, optimiser state, activations)")
        return
    exact = _reset_rss_peak() and _status_kib("VmRSS") is not None
    before = _status_kib("VmRSS") * 1024 if exact else _ru_maxrss_bytes()
    yield record
    after = _status_kib("VmHWM") * 1024 if exact else _ru_maxrss_bytes()
    method = ("peak RSS growth (/proc/self/clear_refs + VmHWM) + model parameters" if exact
              else "ru_maxrss growth + model parameters (lower bound)")
    record.update(peak_bytes=max(0, after - before) + model_bytes(model), method=method)
