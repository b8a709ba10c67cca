"""The two per-sample losses on normalized pairs, BYOL's ``2 - 2 cos(p, z)`` and SimSiam's
``-cos(p, z)``: the checks they share (empty inputs, the documented range in float32).

What only one of them has stays in its own file (``test_byol.py``, ``test_simsiam.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from sslosses.byol import byol_loss
from sslosses.simsiam import negative_cosine_similarity


def _byol_plain(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``|p / |p| - z / |z||^2`` with the official ``l2_normalize`` (no clamp to [0, 4])."""

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True).clamp_min(1e-12))

    return (normalize(p) - normalize(z)).square().sum(dim=1)


def _simsiam_plain(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``-cos(p, z)`` as ``F.cosine_similarity`` computes it (no clamp to [-1, 1])."""
    return -F.cosine_similarity(p, z, dim=1, eps=1e-8)


@dataclass(frozen=True)
class PairLoss:
    """A row: the loss, a prediction ``scale * z`` whose float32 rounding leaves the range, the
    plain formula, the documented range ``[low, high]`` and the end of it that rounding passes."""

    fn: Callable[..., torch.Tensor]
    scale: float
    plain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    low: float
    high: float
    bound: float


LOSSES = {
    "byol": PairLoss(byol_loss, -2.0, _byol_plain, low=0.0, high=4.0, bound=4.0),
    "simsiam": PairLoss(
        negative_cosine_similarity, 3.0, _simsiam_plain, low=-1.0, high=1.0, bound=-1.0
    ),
}
ROWS = pytest.mark.parametrize("loss", list(LOSSES.values()), ids=list(LOSSES))


@ROWS
@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((0, 3), r"prediction must have a batch size of at least 1, got 0"),
        ((4, 0), r"prediction must have at least 1 feature\(s\) \(dim 1\), got shape \(4, 0\)"),
    ],
)
def test_empty_inputs_rejected(loss: PairLoss, shape: tuple[int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        loss.fn(torch.randn(shape), torch.randn(shape))


@ROWS
def test_range_holds_in_float32_with_the_formulas_gradient(loss: PairLoss) -> None:
    """Issue 10.12: in float32 byol_loss(-2z, z) rounded to 4.0000014 (documented: [0, 4]) and
    -cos(3z, z) to -1.0000002 (documented: [-1, 1]; acos(-loss) was NaN)."""
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    p = (loss.scale * z).requires_grad_(True)
    out = loss.fn(p, z, reduction="none")
    assert out.min().item() >= loss.low and out.max().item() <= loss.high
    # The plain formula (no clamp) leaves the range here; the value equals it wherever it does
    # not, and the gradient is the plain formula's on every row (the clamp does not zero the
    # out-of-range rows' gradient).
    p_plain = (loss.scale * z).requires_grad_(True)
    plain = loss.plain(p_plain, z)
    outside = (plain < loss.low) | (plain > loss.high)
    assert outside.any()  # the rounding this test is about does occur
    assert torch.equal(out[~outside], plain[~outside].detach())
    assert torch.equal(out[outside], torch.full_like(out[outside], loss.bound))
    weights = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    (g,) = torch.autograd.grad((out * weights).sum(), p)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), p_plain)
    assert torch.equal(g, g_plain)


# each loss's bad inputs, one table (the empty ones above)
@pytest.mark.parametrize(
    ("function", "args", "kwargs", "error", "match"),
    [
        (
            byol_loss,
            (torch.randn(4), torch.randn(4)),
            {},
            ValueError,
            r"prediction must be a 2-D tensor, got 1-D",
        ),
        (
            byol_loss,
            (torch.randn(4, 3), torch.randn(4, 2)),
            {},
            ValueError,
            r"must have the same shape, got \(4, 3\) and \(4, 2\)",
        ),
        (
            byol_loss,
            (torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3)),
            {},
            TypeError,
            r"prediction must have a floating-point dtype, got torch.int64",
        ),
        (
            byol_loss,
            ([[1.0]], torch.randn(1, 1)),
            {},
            TypeError,
            r"prediction must be a torch.Tensor, got list",
        ),
        (
            byol_loss,
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"reduction": "avg"},
            ValueError,
            r"reduction must be one of 'none', 'mean', 'sum', got 'avg'",
        ),
        (
            negative_cosine_similarity,
            (torch.randn(2, 3, 4), torch.randn(2, 3, 4)),
            {},
            ValueError,
            r"prediction must be a 2-D tensor, got 3-D",
        ),
        (
            negative_cosine_similarity,
            (torch.randn(4, 3), torch.randn(5, 3)),
            {},
            ValueError,
            r"prediction and target must have the same shape",
        ),
        (
            negative_cosine_similarity,
            (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32)),
            {},
            TypeError,
            r"target must have a floating-point dtype, got torch.int32",
        ),
        (
            negative_cosine_similarity,
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"stop_gradient": 1},
            TypeError,
            r"stop_gradient must be a bool, got int",
        ),
        (
            negative_cosine_similarity,
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"reduction": None},
            ValueError,
            r"reduction must be one of .* got None",
        ),
    ],
)
def test_bad_input(
    function: Callable[..., torch.Tensor],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        function(*args, **kwargs)
