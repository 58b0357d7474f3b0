"""Projection head and encoder + head on the encoders nnU-Net's plans build (PlainConvUNet and ResEnc presets)."""
from __future__ import annotations

import shutil

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

from nnunet_polycl.heads import ContrastiveEncoder, ProjectionHead
from nnunet_polycl.losses import PolyCLTripletLoss
from nnunet_polycl.network import build_plans_network, encoder_of, load_plans_context
from tests.conftest import DEMO_ID, run_cli


def _embed_and_backpropagate(ctx, network_class) -> None:
    net = build_plans_network(ctx)
    assert isinstance(net, network_class)
    model = ContrastiveEncoder(encoder_of(net))
    assert model.encoder is net.encoder  # the very encoder fine-tuning will load
    assert model.head.linear.in_features == net.encoder.output_channels[-1]
    torch.manual_seed(0)
    x = torch.randn(6, 1, *ctx.patch_size)
    z = model(x)
    assert z.shape == (6, 256) and torch.isfinite(z).all()
    PolyCLTripletLoss()(z[:2], z[2:4], z[4:]).backward()
    first_conv = next(m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_plain_conv_unet_encoder_embeds_and_gets_gradients(preprocessed_demo, demo_in_process):
    _embed_and_backpropagate(load_plans_context(preprocessed_demo.name), PlainConvUNet)


def test_residual_encoder_preset_embeds_and_gets_gradients(preprocessed_demo, demo_env, tmp_path, monkeypatch):
    # Plan the ResEnc M preset into a private copy of the preprocessed folder (the session's stays untouched).
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(preprocessed_demo, preprocessed / preprocessed_demo.name,
                    ignore=shutil.ignore_patterns("nnUNetPlans_*"))
    env = dict(demo_env, nnUNet_preprocessed=str(preprocessed), nnUNet_n_proc_DA="1")  # planner: set_num_threads
    run_cli(["nnUNetv2_plan_experiment", "-d", str(DEMO_ID), "-pl", "nnUNetPlannerResEncM"], env)
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    ctx = load_plans_context(preprocessed_demo.name, "nnUNetResEncUNetMPlans", require_data=False)
    _embed_and_backpropagate(ctx, ResidualEncoderUNet)


def test_projection_head_is_global_average_pool_plus_linear():
    head = ProjectionHead(4, embed_dim=3)
    x = torch.randn(2, 4, 5, 7)
    expected = x.mean(dim=(2, 3)) @ head.linear.weight.T + head.linear.bias
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert head(torch.randn(2, 4, 3, 3, 3)).shape == (2, 3)  # any number of spatial axes


def test_head_and_encoder_validation():
    with pytest.raises(ValueError, match=r"expects \[B, 4, \*spatial\]; got \[2, 5, 3, 3\]"):
        ProjectionHead(4)(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="in_channels and embed_dim must be >= 1"):
        ProjectionHead(0)
    with pytest.raises(ValueError, match="Conv2d has no 'output_channels'.*encoder_of"):
        ContrastiveEncoder(torch.nn.Conv2d(1, 2, 3))
