"""Alignment and uniformity on the hypersphere (Wang & Isola 2020): two losses, two diagnostics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._chunked_ce import similarity_logsumexp
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_chunk_size,
    check_embedding_pair,
    check_min_batch,
    check_min_features,
    check_positive,
    check_reduction,
    check_tensor,
)
from sslosses.typing import ChunkSize, Reduction

__all__ = ["AlignmentLoss", "UniformityLoss", "alignment_loss", "uniformity_loss"]


def alignment_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    alpha: float = 2.0,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Alignment: the mean distance between the two views of each sample, to the power alpha.

    .. math::
        \ell_n = \| a_n - b_n \|_2^{\alpha}, \qquad
        \mathcal{L}_{\text{align}} = \frac{1}{N} \sum_{n=1}^{N} \ell_n .

    The original takes L2-normalized features (the paper's encoders end in a normalization).
    With ``normalize=True`` (the default) the rows are normalized here first, which leaves unit
    rows unchanged up to rounding (and, the projection being idempotent, the gradient reaching
    features normalized upstream unchanged too); ``normalize=False`` computes on the inputs as
    they are, as the original functions do. On unit rows the value is in
    :math:`[0, 2^{\alpha}]`; for ``alpha=2`` it is :math:`2 - 2 \cos`, BYOL's loss.

    The gradient at identical rows (:math:`a_n = b_n`) is 0 for every :math:`\alpha` (the
    original's is 0 for :math:`\alpha \ge 1` and NaN below 1). Half-precision inputs (or
    autocast) are computed in float32; float64 stays float64.

    **As a diagnostic.** To log it without building a graph, call it under
    :class:`torch.no_grad` (or on ``.detach()``-ed features): ``with torch.no_grad():
    align = alignment_loss(z_a, z_b).item()``.

    **Distributed.** The loss is a mean of per-sample terms and needs no other rank's rows.
    With ``gather_distributed=True`` and a process group of size :math:`W > 1` only the
    ranks' batch sizes are exchanged (one all-gather of :math:`W` integers), and the
    ``"mean"`` is the local sum scaled by :math:`W / N_g`: the mean over ranks equals the
    single-process loss on the global batch even for unequal batches (a rank may hold none),
    and each rank's gradient divided by :math:`W` is its slice of the single-process gradient.
    ``"sum"`` returns :math:`W` times the local sum, ``"none"`` the local rows. Without it,
    each rank returns its local mean, which DDP's average weights by rank, not by sample.

    Args:
        z_a: features of the first view.
        z_b: features of the second view (row ``n`` pairs with row ``n`` of ``z_a``).
        alpha: :math:`\alpha > 0`, the power of the distance. Default: ``2``.
        normalize: L2-normalize the rows first. Default: ``True``.
        gather_distributed: weight the ranks' means by their batch sizes (see above).
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Shape:
        - z_a: :math:`(N, D)`
        - z_b: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, the shapes or devices differ, the batch is empty
            (with ``gather_distributed`` and :math:`W > 1`: the global batch, raised on every
            rank together, while a rank may hold no rows), ``alpha`` is not a finite
            number > 0, or ``reduction`` is unknown.

    Examples:
        >>> import torch
        >>> from sslosses.functional import alignment_loss
        >>> z = torch.randn(8, 32)
        >>> alignment_loss(z, z).item()  # identical views: aligned
        0.0
        >>> loss = alignment_loss(z, torch.randn(8, 32))
        >>> bool(0 < loss < 4)  # unit rows: 2 - 2 cos is in [0, 4]
        True

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242. Official code:
        SsnL/align_uniform, ``align_uniform/__init__.py`` (``align_loss(x, y, alpha=2)``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    minimum = _collectives.local_minimum(gather_distributed, 1)
    dtype = check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=minimum)
    alpha = check_positive("alpha", alpha)
    check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    with no_autocast(z_a):
        a = upcast(z_a, dtype)  # (N, D)
        b = upcast(z_b, dtype)  # (N, D)
        if normalize:
            a = F.normalize(a, dim=1)
            b = F.normalize(b, dim=1)
        layout = _collectives.global_layout(gather_distributed, a.shape[0], a.device, name="z_a")
        squared = (a - b).square().sum(dim=1)  # (N,): ||a_n - b_n||^2
        nonzero = squared > 0
        # ||d||^alpha = (||d||^2)^(alpha / 2), with a gradient of 0 (not NaN) where d = 0
        safe = torch.where(nonzero, squared, torch.ones_like(squared))
        loss = torch.where(nonzero, safe.pow(alpha / 2), torch.zeros_like(squared))  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


def uniformity_loss(
    z: Tensor,
    *,
    t: float = 2.0,
    normalize: bool = True,
    gather_distributed: bool = False,
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""Uniformity: the log of the mean Gaussian potential over all pairs of the batch.

    .. math::
        \mathcal{L}_{\text{uniform}} = \log \frac{2}{N (N - 1)} \sum_{i < j}
            \exp\bigl(-t \| z_i - z_j \|_2^2\bigr).

    Lower is more uniform; on unit rows the value is in :math:`[-4t, 0]` (0 when all rows
    coincide). The paper trains with
    :math:`\mathcal{L}_{\text{align}} + \lambda
    (\mathcal{L}_{\text{uniform}}(a) + \mathcal{L}_{\text{uniform}}(b)) / 2`.
    As in :func:`alignment_loss`, ``normalize=True`` (the default) L2-normalizes the rows
    first (the original expects normalized features) and ``normalize=False`` computes on the
    inputs as they are.

    The mean over the :math:`N(N-1)/2` unordered pairs equals the mean over the
    :math:`N(N-1)` ordered pairs :math:`i \ne j`, which is what is computed: each row's
    log-sum-exp over the other rows, then a log-sum-exp over the rows, max-subtracted, so no
    exponential under- or overflows. The squared distances come from the inner products,
    :math:`\|z_i - z_j\|^2 = \|z_i\|^2 + \|z_j\|^2 - 2 \langle z_i, z_j \rangle` (as
    ``torch.cdist`` does for large inputs), rounding within a few ulps of
    :math:`\|z_i\|^2 + \|z_j\|^2` of the direct differences of the original's
    ``torch.pdist``. Half-precision inputs (or autocast) are computed in float32;
    float64 stays float64.

    **Large batches.** The original's ``torch.pdist`` and its element-wise chain hold
    several :math:`N(N-1)/2` temporaries. With an integer ``chunk_size`` :math:`B` the
    potentials of :math:`B` rows at a time are reduced to their log-sum-exp and recomputed in
    the backward (the blockwise path of :func:`~sslosses.functional.nt_xent`), so the
    :math:`N \times N` matrix is never stored: :math:`O(B N)` extra memory, the same value
    and gradient as the plain path (``None``, the full matrix). ``"auto"`` (the default)
    uses :func:`~sslosses.functional.resolve_chunk_size` with ``rows = N`` and
    ``cols =`` :math:`N_g` (the rows compared against: :math:`N` in one process).

    **As a diagnostic.** To log it without building a graph, call it under
    :class:`torch.no_grad` (or on ``.detach()``-ed features): ``with torch.no_grad():
    uniform = uniformity_loss(z).item()``. With ``gather_distributed=True`` it communicates,
    so every rank must make the call.

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, the rows of all ranks are gathered with gradient (ranks may hold
    different batch sizes, and a rank may hold none): this rank's :math:`N_r` rows are
    compared against all :math:`N_g`, their :math:`N_r` row log-sum-exps are gathered, and
    every rank returns the uniformity of the whole global batch (the pairs of all ranks,
    across ranks included). The value is the same on every rank, so the mean over ranks is
    the single-process value on the global batch, and each rank's input gradient divided by
    :math:`W` (DDP's averaging) is its slice of the single-process gradient; every rank must
    run the backward. Without a process group it is computed locally.

    Args:
        z: the features, one row per sample.
        t: :math:`t > 0`, the scale of the Gaussian potential. Default: ``2``.
        normalize: L2-normalize the rows first. Default: ``True``.
        gather_distributed: take the pairs of the global batch. Default: ``False``.
        chunk_size: rows per block for the blockwise path, ``None`` for the plain path, or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Shape:
        - z: :math:`(N, D)`
        - output: :math:`()`.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``z`` is not a floating-point tensor, or an option has the wrong type.
        ValueError: if ``z`` is not 2-D, has no feature or fewer than 2 rows (no pair; with
            ``gather_distributed`` and :math:`W > 1` the global :math:`N_g < 2`, raised on
            every rank together, while a rank may hold no rows), ``t`` is not a finite
            number > 0, or ``chunk_size`` is not > 0 or ``"auto"``.

    Examples:
        >>> import math
        >>> import torch
        >>> from sslosses.functional import uniformity_loss
        >>> corners = torch.eye(4)  # every pair at squared distance 2
        >>> math.isclose(uniformity_loss(corners).item(), -2 * 2, rel_tol=1e-6)
        True
        >>> z = torch.randn(64, 16, requires_grad=True)
        >>> loss = uniformity_loss(z, t=2)
        >>> loss.backward()
        >>> bool(torch.isclose(uniformity_loss(z, chunk_size=8), loss))
        True

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242. Official code:
        SsnL/align_uniform, ``align_uniform/__init__.py`` (``uniform_loss(x, t=2)``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    tensor = check_tensor("z", z, ndim=2)
    check_min_batch("z", tensor, _collectives.local_minimum(gather_distributed, 2))
    check_min_features("z", tensor, 1)
    t = check_positive("t", t)
    check_bool("normalize", normalize)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(tensor):
        x = upcast(tensor, compute_dtype(tensor))  # (N, D)
        if normalize:
            x = F.normalize(x, dim=1)
        n = x.shape[0]
        layout = _collectives.global_layout(
            gather_distributed, n, x.device, name="z", minimum=2, why=" (one pair)"
        )
        if layout is not None:
            offset, rows = layout.offset, _collectives.gather_rows(x, layout)  # (N_g, D)
        else:
            offset, rows = 0, x
        n_global = rows.shape[0]
        # -t ||x_i - r_j||^2 = 2t <[x_i, 1], [r_j, -||r_j||^2 / 2]> - t ||x_i||^2
        anchors = torch.cat([x, x.new_ones(n, 1)], dim=1)  # (N, D + 1)
        candidates = torch.cat([rows, -rows.square().sum(dim=1, keepdim=True) / 2], dim=1)
        own = torch.arange(offset, offset + n, device=x.device)  # (N,): each row's own column
        per_row = similarity_logsumexp(
            anchors, candidates, scale=2 * t, exclude=own, chunk_size=chunk_size
        ) - t * x.square().sum(dim=1)  # (N,): log sum_{j != i} exp(-t ||x_i - r_j||^2)
        if layout is not None:
            per_row = _collectives.gather_rows(per_row, layout)  # (N_g,)
        total = torch.logsumexp(per_row, dim=0)  # log of the sum over the N_g (N_g - 1) pairs
        return total - math.log(n_global * (n_global - 1))


class AlignmentLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.alignment_loss`.

    Args:
        alpha: :math:`\alpha > 0`, the power of the distance. Default: ``2``.
        normalize: L2-normalize the rows first. Default: ``True``.
        gather_distributed: weight the ranks' means by their batch sizes. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Examples:
        >>> import torch
        >>> from sslosses import AlignmentLoss
        >>> criterion = AlignmentLoss()
        >>> criterion
        AlignmentLoss(alpha=2.0, normalize=True, gather_distributed=False, reduction='mean')
        >>> criterion(torch.randn(4, 16), torch.randn(4, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return alignment_loss(
            z_a,
            z_b,
            alpha=self.alpha,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}"
        )


class UniformityLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.uniformity_loss`.

    Args:
        t: :math:`t > 0`, the scale of the Gaussian potential. Default: ``2``.
        normalize: L2-normalize the rows first. Default: ``True``.
        gather_distributed: take the pairs of the global batch. Default: ``False``.
        chunk_size: rows per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import UniformityLoss
        >>> criterion = UniformityLoss()
        >>> criterion
        UniformityLoss(t=2.0, normalize=True, gather_distributed=False, chunk_size='auto')
        >>> criterion(torch.randn(4, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        t: float = 2.0,
        normalize: bool = True,
        gather_distributed: bool = False,
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.t = check_positive("t", t)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, z: Tensor) -> Tensor:
        return uniformity_loss(
            z,
            t=self.t,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"t={self.t}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, chunk_size={self.chunk_size!r}"
        )
