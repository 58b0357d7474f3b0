"""Where pre-trained weights come from: the fingerprints and case list that ``pretrained_weights.pth`` records.

Fine-tuning compares them with its own dataset, plans and split (see ``nnunet_polycl.finetuning.pretrained``):

- ``dataset_name``: the nnU-Net dataset the encoder was pre-trained on;
- ``plans_fingerprint``: sha256 of the configuration's plans, canonical JSON of the resolved configuration (network,
  patch size, spacing, normalisation, ...) together with the plans-level entries that define its data (the axis
  order ``transpose_forward`` and the CT intensity statistics); editing an unrelated configuration or a comment-like
  key does not change it, re-planning with other settings does;
- ``dataset_fingerprint_sha256``: sha256 of ``dataset_fingerprint.json`` (what nnU-Net measured on the raw data);
- ``pretraining_cases``: every case of the dataset whose slices pre-training used, so that a fine-tuning run can
  refuse weights that have seen its validation cases; ``unlabelled_scans``: the ``--unlabelled`` scans it also used
  (source folder and case; their duplicates of the dataset's cases were left out by image checksum);
- ``versions``: nnunetv2 and nnunet-polycl.
"""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from os.path import isfile, join
from typing import Any, Sequence

from nnunet_polycl.checkpoint import file_sha256
from nnunet_polycl.network import PlansContext

PLANS_LEVEL_KEYS = ("transpose_forward", "transpose_backward", "foreground_intensity_properties_per_channel")


def plans_fingerprint(plans: dict, configuration: str) -> str:
    """sha256 of the resolved ``configuration`` of ``plans`` and the plans-level keys that define its data."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resolved = PlansManager(plans).get_configuration(configuration).configuration
    resolved = {k: v for k, v in resolved.items() if k != "inherits_from"}  # where a value came from does not count
    content = {"configuration": resolved, **{key: plans.get(key) for key in PLANS_LEVEL_KEYS}}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_fingerprint_sha256(preprocessed_folder: str) -> str | None:
    """sha256 of ``dataset_fingerprint.json`` in the dataset's preprocessed folder (None when it is missing)."""
    path = join(preprocessed_folder, "dataset_fingerprint.json")
    return file_sha256(path) if isfile(path) else None


def package_versions() -> dict[str, str]:
    """Installed versions of nnunetv2 and nnunet-polycl."""
    import nnunet_polycl

    try:
        nnunet = version("nnunetv2")
    except PackageNotFoundError:  # pragma: no cover - nnunetv2 is a dependency
        nnunet = "unknown"
    return {"nnunetv2": nnunet, "nnunet_polycl": nnunet_polycl.__version__}


def pretraining_provenance(ctx: PlansContext, cases: Sequence[str],
                           unlabelled_scans: Sequence[str] = ()) -> dict[str, Any]:
    """The provenance entries of a pre-training on ``cases`` of ``ctx``'s dataset (and ``unlabelled_scans``), plans
    and configuration."""
    return {"dataset_name": ctx.dataset_name, "plans_fingerprint": plans_fingerprint(ctx.plans, ctx.configuration),
            "dataset_fingerprint_sha256": dataset_fingerprint_sha256(ctx.preprocessed_folder),
            "pretraining_cases": sorted(str(c) for c in cases),
            "unlabelled_scans": sorted(str(c) for c in unlabelled_scans), "versions": package_versions()}
