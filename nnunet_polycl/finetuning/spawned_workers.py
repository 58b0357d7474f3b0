"""nnU-Net's validation workers, started without running the command's main script again.

``perform_actual_validation`` exports and scores the predictions in worker processes started with the ``spawn``
method, and Python first runs the parent's main script in each of them (as ``__mp_main__``). For ``nnUNetv2_train``
that script imports the whole training stack: about 4.6 s of CPU per worker, where the worker's own function needs
torch and nnU-Net's export or metrics code (about 2 s), which unpickling the function imports anyway. Measured on 2
CPU cores with the demo dataset: ``nnUNetv2_train ... --val`` of 4 small scans 16.1-18.1 s without this, 11.8-12.7 s
with it, the same Dice to the last digit.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import ContextManager

from nnunet_polycl.environment import ABSENT, temporary_items


def workers_without_main_script() -> ContextManager:
    """Within the block, processes started with ``spawn`` do not run the parent's ``__main__`` script (its
    ``__file__`` and ``__spec__`` are hidden from ``multiprocessing``, and restored afterwards)."""
    main = sys.modules.get("__main__")
    if main is None:
        return nullcontext()
    return temporary_items(main.__dict__, {"__file__": ABSENT, "__spec__": None})
