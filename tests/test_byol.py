"""BYOL loss: reference (deepmind-research byol regression_loss), properties, numerics, errors."""

from __future__ import annotations

import pytest
import torch
from helpers import gaussian_pair
from hypothesis import given
from strategies import embeddings, positive_scales

from benchmarks.references import byol as byol_reference
from sslosses.byol import BYOLLoss, byol_loss


def test_matches_reference_value_and_gradient() -> None:
    p, z = gaussian_pair()
    p.requires_grad_(True)
    z.requires_grad_(True)
    ours = byol_loss(p, z, reduction="none")
    ref = byol_reference(p.detach().requires_grad_(True), z.detach())
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.sum(), p)
    p_ref = p.detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(byol_reference(p_ref, z.detach()).sum(), p_ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def test_target_gets_no_gradient() -> None:
    p, z = gaussian_pair()
    p.requires_grad_(True)
    z.requires_grad_(True)
    byol_loss(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_equals_mse_of_normalized_vectors() -> None:
    p, z = gaussian_pair()
    pn = p / p.norm(dim=1, keepdim=True)
    zn = z / z.norm(dim=1, keepdim=True)
    torch.testing.assert_close(byol_loss(p, z, reduction="none"), ((pn - zn) ** 2).sum(1))


@given(embeddings(), positive_scales(), positive_scales())
def test_per_sample_loss_in_0_4_and_scale_invariant(
    pair: tuple[torch.Tensor, ...], a: float, b: float
) -> None:
    p, z = pair
    loss = byol_loss(p, z, reduction="none")
    assert bool(((loss >= -1e-12) & (loss <= 4 + 1e-12)).all())
    torch.testing.assert_close(byol_loss(a * p, b * z, reduction="none"), loss)


def test_extremes() -> None:
    p, _ = gaussian_pair()
    torch.testing.assert_close(byol_loss(p, 3 * p), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(byol_loss(p, -p), torch.full((), 4.0, dtype=torch.float64))


@pytest.mark.parametrize(("reduction", "shape"), [("none", (6,)), ("mean", ()), ("sum", ())])
def test_reductions(reduction: str, shape: tuple[int, ...]) -> None:
    p, z = gaussian_pair()
    out = byol_loss(p, z, reduction=reduction)  # type: ignore[arg-type]
    assert out.shape == shape
    full = byol_loss(p, z, reduction="none")
    expected = {"none": full, "mean": full.mean(), "sum": full.sum()}[reduction]
    torch.testing.assert_close(out, expected)


def test_module_validates_reduction() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        BYOLLoss(reduction="max")  # type: ignore[arg-type]


def test_matches_official_l2_normalize_for_tiny_and_zero_vectors() -> None:
    """The official l2_normalize clamps the squared norm at 1e-12: a zero prediction gives 1."""
    p = torch.zeros(2, 3, dtype=torch.float64)
    p[1, 0] = 1e-8
    z = torch.ones(2, 3, dtype=torch.float64)
    torch.testing.assert_close(byol_loss(p, z, reduction="none"), byol_reference(p, z))
    assert byol_loss(p, z, reduction="none")[0].item() == pytest.approx(1.0)


def test_never_below_zero_in_float32() -> None:
    p = torch.randn(1000, 64, generator=torch.Generator().manual_seed(5))
    assert bool((byol_loss(p, p.clone(), reduction="none") >= 0).all())


def test_mean_never_above_four_in_float32() -> None:
    """Issue 10.12 (the per-sample range: ``test_pair_losses.py``): the mean stays in [0, 4]."""
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    assert byol_loss(-2 * z, z).item() <= 4.0
