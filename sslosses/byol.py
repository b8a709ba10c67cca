"""BYOL: normalized mean squared error between a prediction and a stop-gradient target."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslosses._numerics import clamp_value, no_autocast, reduce, upcast
from sslosses._validation import (
    check_embedding_pair,
    check_reduction,
)
from sslosses.typing import Reduction

__all__ = ["BYOLLoss", "byol_loss"]

_EPS = 1e-12  # the epsilon of the official l2_normalize (on the squared norm)


def byol_loss(prediction: Tensor, target: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""BYOL regression loss: ``2 - 2 cos(p, sg(z))``, the MSE of L2-normalized vectors.

    .. math::
        \ell_n = \left\| \hat p_n - \hat z_n \right\|_2^2
               = 2 - 2\,\frac{\langle p_n, z_n \rangle}{\|p_n\|_2 \, \|z_n\|_2},
        \qquad \hat x = \frac{x}{\sqrt{\max(\|x\|_2^2, \epsilon)}},\ \epsilon = 10^{-12}

    computed as the squared distance of the normalized vectors, exactly as the official
    ``regression_loss`` (with its ``l2_normalize``), so no per-sample loss rounds below 0;
    for opposite vectors float32 rounding can pass 4 by a few ulps, so the value is clamped
    to :math:`[0, 4]` while the gradient stays that of the formula above. The target is
    detached (stop-gradient), as BYOL's target network carries no gradient. Symmetrize by
    calling it twice with the views swapped, as the paper does. Inputs in half precision (or
    under autocast) are computed in float32; float64 stays float64.

    Args:
        prediction: the online network's prediction :math:`p`.
        target: the target network's projection :math:`z` (gradient is not propagated).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Shape:
        - prediction: :math:`(N, D)`
        - target: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: if an input is not 2-D, has no rows or no features, the shapes or devices
            differ, or ``reduction`` is unknown.

    Examples:
        >>> import torch
        >>> from sslosses.functional import byol_loss
        >>> p, z = torch.randn(8, 32, requires_grad=True), torch.randn(8, 32)
        >>> loss = byol_loss(p, z)
        >>> loss.shape, bool(0 <= loss <= 4)
        (torch.Size([]), True)
        >>> loss.backward()

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733.
        Official code: google-deepmind/deepmind-research, ``byol/byol_experiment.py``
        (``regression_loss``).
    """
    dtype = check_embedding_pair("prediction", prediction, "target", target)
    reduction = check_reduction(reduction)
    with no_autocast(prediction):
        p = _l2_normalize(upcast(prediction, dtype))  # (N, D)
        z = _l2_normalize(upcast(target.detach(), dtype))  # (N, D)
        loss = (p - z).square().sum(dim=1)  # (N,)
        loss = clamp_value(loss, 0.0, 4.0)  # rounding can pass 4 by a few ulps
    return reduce(loss, reduction)


def _l2_normalize(x: Tensor) -> Tensor:
    """BYOL's ``l2_normalize``: ``x * rsqrt(max(sum(x^2), 1e-12))`` along the last dim."""
    return x * torch.rsqrt(x.square().sum(dim=-1, keepdim=True).clamp_min(_EPS))


class BYOLLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.byol_loss`.

    Args:
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Examples:
        >>> import torch
        >>> from sslosses import BYOLLoss
        >>> criterion = BYOLLoss()
        >>> criterion
        BYOLLoss(reduction='mean')
        >>> criterion(torch.randn(4, 16), torch.randn(4, 16)).shape
        torch.Size([])
    """

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return byol_loss(prediction, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
