"""Fixtures of the fine-tuning tests: pre-training outputs in the polycl_pretrain file format, in-process trainers.

``write_pretraining`` writes ``pretrained_weights.pth`` as ``polycl_pretrain`` does (full network state from the
dataset's plans with an encoder inside, plus the ``polycl`` metadata, saved data-only by the same helper) from a
randomly initialised encoder: a legitimate
instance of the file format for tests that need many variants of it quickly. The end-to-end test runs the real
``polycl_pretrain``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import DEMO_ID


@pytest.fixture
def demo_name(demo_in_process) -> str:
    from nnunet_polycl.paths import resolve_dataset_name

    return resolve_dataset_name(DEMO_ID)


@pytest.fixture
def write_pretraining(demo_name):
    """Factory: ``write_pretraining(strategy="O", fold=0, path=None, seed=0, provenance=True, **meta) -> Path``.

    With ``provenance`` the file records it as ``polycl_pretrain`` does (pre-trained on the fold's training cases);
    without, it is a file of an older version."""
    from nnunet_polycl.checkpoint import save_data_only
    from nnunet_polycl.network import build_plans_network, full_network_state_with_encoder, load_plans_context
    from nnunet_polycl.paths import PRETRAINED_WEIGHTS_FILE, default_pretraining_folder
    from nnunet_polycl.provenance import pretraining_provenance
    from nnunet_polycl.splits import training_cases

    def write(strategy: str = "O", fold=0, path: Path | None = None, seed: int = 0, provenance: bool = True,
              **meta) -> Path:
        ctx = load_plans_context(demo_name)
        origin = pretraining_provenance(ctx, training_cases(ctx, fold, write_missing=False)[0]) if provenance else {}
        torch.manual_seed(seed)
        encoder = build_plans_network(ctx).encoder
        if path is None:
            path = Path(default_pretraining_folder(demo_name, strategy, "nnUNetPlans", "2d", fold)) / \
                PRETRAINED_WEIGHTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        polycl = {"strategy": strategy, "epochs": 3, "dataset_name": demo_name, "plans_identifier": "nnUNetPlans",
                  "configuration": "2d", "fold": fold, **origin, **meta}
        save_data_only({"network_weights": full_network_state_with_encoder(ctx, encoder.state_dict()),
                        "polycl": polycl}, path)
        return path

    return write


@pytest.fixture
def make_trainer(demo_in_process, monkeypatch):
    """Factory: a trainer built exactly as ``nnUNetv2_train`` builds it (``get_trainer_from_args``), on the CPU.

    ``make_trainer(name, fold=0, configuration="2d", continue_training=False)``; the class is found through
    ``nnUNet_extTrainer`` like on the command line.
    """
    from nnunetv2.run.run_training import get_trainer_from_args

    monkeypatch.setenv("nnUNet_extTrainer", demo_in_process["nnUNet_extTrainer"])

    def make(name: str, fold=0, configuration: str = "2d", continue_training: bool = False):
        return get_trainer_from_args(str(DEMO_ID), configuration, fold, name, "nnUNetPlans", continue_training,
                                     device=torch.device("cpu"))

    return make
