"""PolyCL's triplet loss (Eq. 1) and SimCLR's NT-Xent against independent references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from nnunet_polycl.losses import NTXentLoss, PolyCLTripletLoss, triplet_cosines


def _triplets(m: int, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(m, d, generator=g, dtype=torch.float64) for _ in range(3))


def _slow_eq1(z, z_pos, z_neg, tau: float) -> float:
    """Eq. 1 literally, one triplet at a time, in float64 Python arithmetic."""
    total = 0.0
    for a, p, n in zip(z.tolist(), z_pos.tolist(), z_neg.tolist(), strict=True):
        def cos(u, v):
            return sum(x * y for x, y in zip(u, v, strict=True)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
        e_pos, e_neg = math.exp(cos(a, p) / tau), math.exp(cos(a, n) / tau)
        total += -math.log(e_pos / (e_pos + e_neg))
    return total / len(z)


def _pml_triplet(z, z_pos, z_neg, tau: float) -> torch.Tensor:
    """pytorch-metric-learning's NTXentLoss with exactly one positive and one negative pair per anchor."""
    m = z.shape[0]
    rows = torch.arange(m)
    pairs = (rows, rows + m, rows, rows + 2 * m)  # (anchor, positive, anchor, negative) into cat([z, z+, z-])
    return pml_losses.NTXentLoss(temperature=tau)(torch.cat([z, z_pos, z_neg]), indices_tuple=pairs)


@pytest.mark.parametrize("m", [1, 2, 20])
def test_triplet_loss_equals_slow_per_triplet_reference(m):
    z, z_pos, z_neg = _triplets(m)
    ours = PolyCLTripletLoss()(z, z_pos, z_neg)
    assert ours.dtype == torch.float32 and ours.shape == ()
    assert ours.item() == pytest.approx(_slow_eq1(z, z_pos, z_neg, 1.0 / m), rel=1e-5)


@pytest.mark.parametrize("m", [2, 20, 64])  # PML returns 0 for a single pair (its own shortcut), hence no M = 1
def test_triplet_loss_equals_pytorch_metric_learning_ntxent_with_one_negative(m):
    z, z_pos, z_neg = _triplets(m, seed=m)
    ours = PolyCLTripletLoss()(z, z_pos, z_neg)
    assert ours.item() == pytest.approx(_pml_triplet(z, z_pos, z_neg, 1.0 / m).item(), rel=1e-5)


def test_explicit_temperature_is_used_instead_of_one_over_batch_size():
    z, z_pos, z_neg = _triplets(8)
    assert PolyCLTripletLoss(0.3)(z, z_pos, z_neg).item() == pytest.approx(_slow_eq1(z, z_pos, z_neg, 0.3), rel=1e-5)
    assert PolyCLTripletLoss(0.3)(z, z_pos, z_neg).item() != pytest.approx(PolyCLTripletLoss()(z, z_pos, z_neg).item())


def test_closed_form_orthogonal_and_opposite_examples():
    # cos(z, z+) = 1, cos(z, z-) = 0 with tau = 1/2 (M = 2): loss = -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    z_pos = 2 * z
    z_neg = torch.tensor([[0.0, 5.0], [7.0, 0.0]])
    assert PolyCLTripletLoss()(z, z_pos, z_neg).item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    cos_pos, cos_neg = triplet_cosines(z, z_pos, -z)
    assert cos_pos.tolist() == pytest.approx([1.0, 1.0]) and cos_neg.tolist() == pytest.approx([-1.0, -1.0])


def test_finite_and_correct_at_batch_512_where_exp_overflows_float32():
    z, z_pos, z_neg = (t.float() for t in _triplets(512, seed=3))
    z_neg[:4] = -z[:4]  # cos- = -1 -> logit -512; cos+ small: the naive exp(512) is inf in float32
    assert torch.isinf(torch.exp(torch.tensor(512.0)))
    loss = PolyCLTripletLoss()(z, z_pos, z_neg)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(_slow_eq1(z.double(), z_pos.double(), z_neg.double(), 1 / 512), rel=1e-4)


def test_float32_under_autocast_and_gradients_flow():
    z, z_pos, z_neg = (t.float().requires_grad_() for t in _triplets(6))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = PolyCLTripletLoss()(z.bfloat16(), z_pos.bfloat16(), z_neg.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (z, z_pos, z_neg))


def test_ntxent_equals_pytorch_metric_learning_and_a_direct_formula():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(10, 8, generator=g), torch.randn(10, 8, generator=g)
    ours = NTXentLoss(temperature=0.5)(z1, z2)
    labels = torch.arange(10).repeat(2)
    assert ours.item() == pytest.approx(pml_losses.NTXentLoss(0.5)(torch.cat([z1, z2]), labels).item(), rel=1e-5)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = torch.exp(z @ z.T / 0.5)
    per_row = [-torch.log(sim[i, (i + 10) % 20] / (sim[i].sum() - sim[i, i])) for i in range(20)]
    assert ours.item() == pytest.approx(torch.stack(per_row).mean().item(), rel=1e-5)


def test_ntxent_closed_form_two_pairs():
    # identical views, the two images orthogonal: each row has sim 1 to its positive, 0 to both negatives
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2.0))
    assert NTXentLoss(0.5)(z1, z1.clone()).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        PolyCLTripletLoss(bad)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        NTXentLoss(bad)


def test_shape_errors_say_what_was_expected():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"z_neg must have the shape of z \[4, 8\]; got \[3, 8\]"):
        PolyCLTripletLoss()(z, z, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"z must have shape \[M, D\] with M >= 1; got \[8\]"):
        PolyCLTripletLoss()(z[0], z[0], z[0])
    with pytest.raises(ValueError, match=r"z2 must have the shape of z1"):
        NTXentLoss()(z, torch.randn(4, 7))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        NTXentLoss()(z[:1], z[:1])
