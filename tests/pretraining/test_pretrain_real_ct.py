"""A few pre-training steps of PolyCL-O and PolyCL-S on the real CT (two nnU-Net-preprocessed cases)."""
from __future__ import annotations

import math
from itertools import islice

import pytest
import torch

pytestmark = [pytest.mark.real_ct, pytest.mark.e2e]


@pytest.mark.parametrize("strategy", ["O", "S"])
def test_a_few_steps_on_real_ct_give_finite_losses(preprocessed_real_ct, tmp_path, monkeypatch, strategy):
    from nnunet_polycl.heads import ContrastiveEncoder
    from nnunet_polycl.network import build_plans_network, encoder_of
    from nnunet_polycl.pretraining.loop import new_state, train_step
    from nnunet_polycl.pretraining.session import prepare
    from nnunet_polycl.pretraining.settings import PretrainRequest
    from nnunet_polycl.pretraining.slice_data import make_loader

    root = preprocessed_real_ct.parents[1]
    for key in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{key}", str(root / key))
    run = prepare(PretrainRequest(preprocessed_real_ct.name, fold="all", strategy=strategy, epochs=1, batch_size=2,
                                  device="cpu", num_workers=1, output_folder=str(tmp_path / "out")))
    assert len(run.index.case_ids) == 2
    assert 0 < int(run.index.organ.sum()) < len(run.index), "both organ classes must be present"

    torch.manual_seed(0)
    model = ContrastiveEncoder(encoder_of(build_plans_network(run.ctx)), 256)
    state = new_state(model, 1e-4, len(run.task.sampler), run.device)
    run.task.sampler.set_epoch(0)
    loader = make_loader(run.task.dataset, run.task.sampler, 1, run.device)
    losses = []
    for batch in islice(loader, 3):
        assert batch.shape == (6, 1, *run.ctx.patch_size) and torch.isfinite(batch).all()
        loss, sums = train_step(state, run.task, batch, run.device)
        losses.append(loss.item())
        assert torch.isfinite(sums).all() and 0 <= sums[2] <= 2  # cos+ and cos- sums, triplets with cos+ > cos-
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)
    assert not (tmp_path / "out").exists()
