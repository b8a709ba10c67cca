"""W-MSE: the mean squared error between views after whitening sub-batches (Cholesky)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_crops,
    check_generator,
    check_positive_int,
    check_probability,
)

__all__ = ["WMSELoss", "wmse_loss"]


def wmse_loss(
    views: Sequence[Tensor],
    *,
    w_size: int = 128,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""W-MSE: whiten each view in random sub-batches, then the MSE between every pair of views.

    For each of ``w_iter`` iterations, the :math:`N` rows are split by one random permutation
    into :math:`N / w` sub-batches of :math:`w` = ``w_size`` rows, the same for every view.
    Each view's sub-batch :math:`X` (:math:`w \times D`) is whitened by the inverse of the
    Cholesky factor of its (shrunk) covariance:

    .. math::
        \Sigma = \frac{(X - \bar X)^\top (X - \bar X)}{w - 1}, \qquad
        L L^\top = (1 - \varepsilon) \Sigma + \varepsilon I, \qquad
        Z = (X - \bar X) L^{-\top},

    so every whitened sub-batch has (for :math:`\varepsilon = 0`) the identity covariance.
    The loss is the mean over iterations and the :math:`V (V - 1) / 2` pairs of views of the
    normalized MSE :math:`2 - 2 \frac{1}{N} \sum_i \cos(z^{(u)}_i, z^{(v)}_i)` (``normalize``)
    or the elementwise MSE (``normalize=False``, the original's ``--no_norm``). The whitening
    is differentiated (through the mean, the covariance and the Cholesky factor), as the
    original.

    The sub-batch covariance has rank at most :math:`\min(w - 1, D)`: with
    :math:`\varepsilon = 0` it is positive definite only if :math:`w > D` and the rows span
    :math:`D` dimensions. The original fails inside ``torch.linalg.cholesky`` (or returns NaN
    on some devices) when it is not; this function raises a ``ValueError`` that names the
    sub-batch and the remedy (a larger ``w_size``, or ``eps > 0``). The paper recommends
    :math:`w \ge 2 D`. Under ``torch.compile`` that check is skipped (it reads a value back
    from the factorization) and a rank-deficient sub-batch gives NaN instead.

    Half-precision inputs (or autocast) are whitened and compared in float32, float64 stays
    float64. The permutation is drawn with ``torch.randperm`` on the views' device from
    ``generator`` (the global generator of that device when ``None``, as the original), so a
    seeded generator makes the loss reproducible.

    **Distributed.** The original is single process and lightly's ``WMSELoss`` has no
    ``gather_distributed``: under DDP each rank whitens its own batch, and so does this
    function (a sub-batch never spans ranks). Use a per-rank batch that is a multiple of
    ``w_size``.

    The running statistics of the original's ``Whitening2d`` (used only to whiten at
    inference, never by the loss) are not part of this function.

    Args:
        views: the :math:`V \ge 2` views of the batch, each :math:`(N, D)`, row :math:`i`
            of every view the same sample.
        w_size: the rows :math:`w` of a whitening sub-batch; :math:`N` must be a multiple of
            it and :math:`w \ge 2`. Default: ``128`` (the original's ``--w_size``).
        w_iter: the iterations (random splits) averaged. Default: ``1``.
        eps: the shrinkage :math:`\varepsilon \in [0, 1]` of the covariance toward the
            identity. Default: ``0.0`` (the original's ``--w_eps``).
        normalize: the normalized MSE (cosine) between views; ``False`` for the elementwise
            MSE. Default: ``True``.
        generator: the random generator of the permutations. Default: ``None``.

    Shape:
        - views: a sequence of :math:`(N, D)` tensors
        - output: :math:`()`

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``views`` is not a list or tuple of floating-point tensors, or an option
            has the wrong type.
        ValueError: if there are fewer than 2 views, a view is not 2-D, the views differ in
            shape or device, :math:`N` is not a positive multiple of ``w_size``,
            ``w_size < 2``, ``w_iter < 1``, ``eps`` is outside :math:`[0, 1]`, or the
            covariance of a whitening sub-batch is not positive definite (rank-deficient).

    Examples:
        >>> import torch
        >>> from sslosses.functional import wmse_loss
        >>> views = [torch.randn(64, 8, requires_grad=True) for _ in range(2)]
        >>> loss = wmse_loss(views, w_size=32, generator=torch.Generator().manual_seed(0))
        >>> loss.backward()
        >>> same = torch.randn(64, 8)
        >>> bool(wmse_loss([same, 2 * same + 1], w_size=32) < 1e-6)  # whitened: the same rows
        True

    References:
        Ermolov et al., "Whitening for Self-Supervised Representation Learning", ICML 2021,
        arXiv:2007.06346. Official code: htdt/self-supervised, ``methods/w_mse.py``
        (``WMSE.forward``), ``methods/whitening.py`` (``Whitening2d``) and
        ``methods/norm_mse.py``.
    """
    crops = check_crops("views", views, minimum=2, rows=1, column="feature (column)")
    w_size = _check_w_size(w_size)
    w_iter = check_positive_int("w_iter", w_iter)
    eps = check_probability("eps", eps)
    normalize = check_bool("normalize", normalize)
    gen = check_generator(generator)
    n, d = crops[0].shape
    if n % w_size != 0:
        raise ValueError(
            f"views must have a batch size that is a multiple of w_size={w_size} (the "
            f"whitening sub-batches), got {n}"
        )
    groups = n // w_size
    with no_autocast(crops[0]):
        dtype = compute_dtype(*crops)
        x = torch.stack([upcast(c, dtype) for c in crops])  # (V, N, D)
        v = x.shape[0]
        pairs = torch.triu_indices(v, v, offset=1, device=x.device)  # (2, V (V - 1) / 2)
        total = x.new_zeros(())
        for _ in range(w_iter):
            perm = torch.randperm(n, generator=gen, device=x.device)
            # Every view's rows in the same sub-batches, each sub-batch's rows in their batch
            # order (the same sub-batches as the original; the order within one changes only
            # rounding, and a single sub-batch then gives the same bits whatever the draw).
            # The loss is a mean over rows: the whitened rows need not be put back in place.
            index = perm.view(groups, w_size).sort(dim=1).values.flatten()
            z = _whiten(x[:, index].reshape(v, groups, w_size, d), eps).reshape(v, n, d)
            total = total + _pair_error(z[pairs[0]], z[pairs[1]], normalize).mean()
        loss = total / w_iter
    return loss


def _check_w_size(w_size: object) -> int:
    """A whitening sub-batch size: an integer >= 2 (a covariance needs 2 rows)."""
    size = check_positive_int("w_size", w_size)
    if size < 2:
        raise ValueError(f"w_size must be at least 2 (a covariance needs 2 rows), got {size}")
    return size


def _whiten(x: Tensor, eps: float) -> Tensor:
    """Whiten each sub-batch ``(..., w, D)``: centred, times the inverse Cholesky factor."""
    centred = x - x.mean(dim=-2, keepdim=True)
    w, d = x.shape[-2:]
    covariance = centred.transpose(-1, -2) @ centred / (w - 1)  # (..., D, D)
    if eps != 0.0:
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        covariance = (1 - eps) * covariance + eps * eye
    factor, info = torch.linalg.cholesky_ex(covariance)  # (..., D, D) lower
    if not torch.compiler.is_compiling() and bool((info != 0).any()):
        raise ValueError(
            f"the covariance of a whitening sub-batch of w_size={w} rows and D={d} features "
            "is not positive definite (rank-deficient: it needs w_size > D and rows that span "
            "the D dimensions; the paper uses w_size >= 2 D); raise w_size or set eps > 0"
        )
    # Z^T = L^{-1} (X - mean)^T, by a triangular solve instead of forming L^{-1}
    solved: Tensor = torch.linalg.solve_triangular(factor, centred.transpose(-1, -2), upper=False)
    return solved.transpose(-1, -2)


def _pair_error(a: Tensor, b: Tensor, normalize: bool) -> Tensor:
    """The per-pair error ``(P,)`` between the whitened views ``a``, ``b`` ``(P, N, D)``."""
    if not normalize:
        return (a - b).pow(2).mean(dim=(-1, -2))
    cosine = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(dim=-1)  # (P, N)
    return 2 - 2 * cosine.mean(dim=-1)


class WMSELoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.wmse_loss`.

    Randomness comes from the ``generator`` passed to :meth:`forward` (the global one when
    ``None``); the module holds no state.

    Args:
        w_size: the rows of a whitening sub-batch. Default: ``128``.
        w_iter: the iterations (random splits) averaged. Default: ``1``.
        eps: the shrinkage of the covariance toward the identity. Default: ``0.0``.
        normalize: the normalized MSE between views. Default: ``True``.

    Examples:
        >>> import torch
        >>> from sslosses import WMSELoss
        >>> criterion = WMSELoss(w_size=32)
        >>> criterion
        WMSELoss(w_size=32, w_iter=1, eps=0.0, normalize=True)
        >>> criterion([torch.randn(64, 8), torch.randn(64, 8)]).shape
        torch.Size([])
    """

    def __init__(
        self, *, w_size: int = 128, w_iter: int = 1, eps: float = 0.0, normalize: bool = True
    ) -> None:
        super().__init__()
        self.w_size = _check_w_size(w_size)
        self.w_iter = check_positive_int("w_iter", w_iter)
        self.eps = check_probability("eps", eps)
        self.normalize = check_bool("normalize", normalize)

    def forward(self, views: Sequence[Tensor], generator: torch.Generator | None = None) -> Tensor:
        return wmse_loss(
            views,
            w_size=self.w_size,
            w_iter=self.w_iter,
            eps=self.eps,
            normalize=self.normalize,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return (
            f"w_size={self.w_size}, w_iter={self.w_iter}, eps={self.eps}, "
            f"normalize={self.normalize}"
        )
