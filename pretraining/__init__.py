"""The pre-training stage: ``polycl_pretrain`` (see :func:`run_pretraining` for the Python entry point)."""

from nnunet_polycl.pretraining.cli import pretrain_entry, run_pretraining

__all__ = ["pretrain_entry", "run_pretraining"]
