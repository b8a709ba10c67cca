"""SimSiam negative cosine similarity: reference (facebookresearch/simsiam), properties, errors."""

from __future__ import annotations

import pytest
import torch
from helpers import gaussian_pair
from hypothesis import given
from strategies import embeddings, positive_scales

from benchmarks.references import simsiam as simsiam_reference
from sslosses.simsiam import negative_cosine_similarity


def test_matches_reference_value_and_gradient() -> None:
    p, z = gaussian_pair(seed=1)
    p1 = p.clone().requires_grad_(True)
    p2 = p.clone().requires_grad_(True)
    ours = negative_cosine_similarity(p1, z, reduction="none")
    ref = simsiam_reference(p2, z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.sum().backward()
    ref.sum().backward()
    assert p1.grad is not None and p2.grad is not None
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-12, atol=1e-12)


def test_symmetric_loss_matches_official_training_step() -> None:
    """main_simsiam.py: loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5."""
    p1, p2 = gaussian_pair(seed=1)
    z1, z2 = gaussian_pair(n=6, d=5, seed=1)[::-1]
    cos = torch.nn.CosineSimilarity(dim=1)
    official = -(cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean()) * 0.5
    ours = 0.5 * (negative_cosine_similarity(p1, z2) + negative_cosine_similarity(p2, z1))
    torch.testing.assert_close(ours, official)


def test_stop_gradient_switch() -> None:
    p, z = gaussian_pair(seed=1)
    p.requires_grad_(True)
    z.requires_grad_(True)
    negative_cosine_similarity(p, z).backward()
    assert z.grad is None
    negative_cosine_similarity(p, z, stop_gradient=False).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@given(embeddings(), positive_scales(), positive_scales())
def test_in_minus_one_one_and_scale_invariant(
    pair: tuple[torch.Tensor, ...], a: float, b: float
) -> None:
    p, z = pair
    loss = negative_cosine_similarity(p, z, reduction="none")
    assert bool(((loss >= -1 - 1e-12) & (loss <= 1 + 1e-12)).all())
    torch.testing.assert_close(negative_cosine_similarity(a * p, b * z, reduction="none"), loss)


@pytest.mark.parametrize(("reduction", "shape"), [("none", (6,)), ("mean", ()), ("sum", ())])
def test_reductions(reduction: str, shape: tuple[int, ...]) -> None:
    p, z = gaussian_pair(seed=1)
    out = negative_cosine_similarity(p, z, reduction=reduction)  # type: ignore[arg-type]
    assert out.shape == shape
    full = negative_cosine_similarity(p, z, reduction="none")
    torch.testing.assert_close(
        out, {"none": full, "mean": full.mean(), "sum": full.sum()}[reduction]
    )


def test_zero_vector_is_finite() -> None:
    p, z = gaussian_pair(seed=1)
    p[0] = 0
    out = negative_cosine_similarity(p, z, reduction="none")
    assert torch.isfinite(out).all()
    assert out[0] == 0


def test_acos_defined_and_anti_parallel_in_range_in_float32() -> None:
    """Issue 10.12 (the range and gradient at 3z: ``test_pair_losses.py``): acos(-loss) is
    defined where -cos(3z, z) rounded past -1, and -cos(-3z, z) stays in [-1, 1]."""
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    loss = negative_cosine_similarity(3 * z, z, reduction="none")
    assert not torch.isnan(torch.acos(-loss)).any()
    anti = negative_cosine_similarity(-3 * z, z, reduction="none")
    assert anti.max().item() <= 1.0 and anti.min().item() >= -1.0
