"""SimSiam: negative cosine similarity with an optional stop-gradient on the target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sslosses._numerics import clamp_value, no_autocast, reduce, upcast
from sslosses._validation import (
    check_bool,
    check_embedding_pair,
    check_reduction,
)
from sslosses.typing import Reduction

__all__ = ["NegativeCosineSimilarity", "negative_cosine_similarity"]

_EPS = 1e-8  # the eps of torch.nn.functional.cosine_similarity, which the official code uses


def negative_cosine_similarity(
    prediction: Tensor,
    target: Tensor,
    *,
    stop_gradient: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""SimSiam loss: the negative cosine similarity ``-cos(p, sg(z))``.

    .. math::
        \ell_n = -\frac{\langle p_n, z_n \rangle}
                       {\max(\|p_n\|_2, \epsilon)\,\max(\|z_n\|_2, \epsilon)},
        \qquad \epsilon = 10^{-8}

    With ``stop_gradient=True`` (SimSiam's key ingredient) no gradient flows into ``target``.
    Each per-sample loss lies in :math:`[-1, 1]`: in float32 the cosine of (anti)parallel
    vectors can round one ulp past :math:`\pm 1`, so the value is clamped to the range while
    the gradient stays that of the formula above (``acos(-loss)`` is always defined).
    Symmetrize by calling it twice with the views swapped and averaging, as the paper does.
    Half-precision inputs (or autocast) are computed in float32; float64 stays float64.

    Args:
        prediction: the predictor output :math:`p`.
        target: the projection of the other view :math:`z`.
        stop_gradient: detach ``target``. Default: ``True``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Shape:
        - prediction: :math:`(N, D)`
        - target: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor or ``stop_gradient`` not a bool.
        ValueError: if an input is not 2-D, the shapes or devices differ, or ``reduction`` is
            unknown.

    Examples:
        >>> import math
        >>> import torch
        >>> from sslosses.functional import negative_cosine_similarity
        >>> p = torch.randn(8, 32, requires_grad=True)
        >>> math.isclose(negative_cosine_similarity(p, p.detach()).item(), -1.0, rel_tol=1e-6)
        True

    References:
        Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
        arXiv:2011.10566. Official code: facebookresearch/simsiam, ``main_simsiam.py``
        (``nn.CosineSimilarity(dim=1)``) and ``simsiam/builder.py`` (``z.detach()``).
    """
    dtype = check_embedding_pair("prediction", prediction, "target", target)
    check_bool("stop_gradient", stop_gradient)
    reduction = check_reduction(reduction)
    if stop_gradient:
        target = target.detach()
    with no_autocast(prediction):
        loss = -F.cosine_similarity(
            upcast(prediction, dtype), upcast(target, dtype), dim=1, eps=_EPS
        )  # (N,)
        loss = clamp_value(loss, -1.0, 1.0)  # rounding can leave [-1, 1] by an ulp
    return reduce(loss, reduction)


class NegativeCosineSimilarity(nn.Module):
    r"""Module form of :func:`sslosses.functional.negative_cosine_similarity`.

    Args:
        stop_gradient: detach the target. Default: ``True``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Examples:
        >>> import torch
        >>> from sslosses import NegativeCosineSimilarity
        >>> NegativeCosineSimilarity()
        NegativeCosineSimilarity(stop_gradient=True, reduction='mean')
    """

    def __init__(self, *, stop_gradient: bool = True, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.stop_gradient = check_bool("stop_gradient", stop_gradient)
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return negative_cosine_similarity(
            prediction, target, stop_gradient=self.stop_gradient, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}, reduction={self.reduction!r}"
