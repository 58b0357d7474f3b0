"""Unlabelled scans for pre-training: ``polycl_pretrain --unlabelled FOLDER ...``.

- ``discovery``: find and validate the images (nnU-Net's imagesTs naming, the dataset's channels and file ending).
- ``checksums``: image checksums (cache invalidation, duplicate detection).
- ``duplicates``: an unlabelled image identical to a dataset case is that case (never a validation case's copy).
- ``cache`` / ``preprocess``: preprocess once with the dataset's plans through nnU-Net's preprocessor, cached under
  ``nnUNet_preprocessed/DatasetXXX/polycl_unlabelled__<source>__<plans>_<configuration>/``.
- ``weak_labels``: ``--organ-slices FILE``, organ slice ranges per scan.
- ``pseudo_labels``: ``--organ-status-from RESULTS_FOLDER``, organ status predicted by a trained nnU-Net model.
- ``scans``: the two phases of a run (check without writing, then materialise the caches and the slice index).
"""

from nnunet_polycl.unlabelled.discovery import UnlabelledCase, discover_unlabelled
from nnunet_polycl.unlabelled.scans import (
    DEFAULT_MIN_ORGAN_AREA,
    UnlabelledData,
    UnlabelledOptions,
    UnlabelledPlan,
    check_options,
    check_unlabelled,
)

__all__ = ["DEFAULT_MIN_ORGAN_AREA", "UnlabelledCase", "UnlabelledData", "UnlabelledOptions", "UnlabelledPlan",
           "check_options", "check_unlabelled", "discover_unlabelled"]
