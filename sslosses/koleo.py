"""KoLeo: the Kozachenko-Leonenko nearest-neighbour entropy regularizer (DINOv2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._chunked_ce import _resolve
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_chunk_size,
    check_min_batch,
    check_min_features,
    check_positive,
    check_reduction,
    check_tensor,
)
from sslosses.typing import ChunkSize, Reduction

__all__ = ["KoLeoLoss", "koleo_loss"]


def koleo_loss(
    x: Tensor,
    *,
    eps: float = 1e-8,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""DINOv2's KoLeo regularizer: minus the mean log distance of each row to its neighbour.

    The rows are L2-normalized, :math:`\hat x_i = x_i / \max(\|x_i\|_2, \varepsilon)`; each
    row's nearest neighbour :math:`n(i)` is the other row of largest inner product (the
    smallest distance on the unit sphere), and the loss is the Kozachenko-Leonenko entropy
    estimate up to constants:

    .. math::
        n(i) = \operatorname*{arg\,max}_{j \ne i} \langle \hat x_i, \hat x_j \rangle, \qquad
        d_i = \bigl\| \hat x_i - \hat x_{n(i)} + \varepsilon \mathbf{1} \bigr\|_2, \qquad
        \ell_i = -\log(d_i + \varepsilon), \qquad
        \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} \ell_i .

    As in the original, :math:`\varepsilon` is added to the difference before the norm
    (``torch.nn.PairwiseDistance``'s semantics) and again inside the log; the neighbour
    index is not differentiated (it is piecewise constant), the distance is, so the gradient
    reaches both a row and its neighbour. Minimizing :math:`\mathcal{L}` pushes close rows
    apart and spreads the batch over the sphere.

    **Ties and duplicates.** Among equal largest inner products the lowest index is taken
    (the first maximum, as ``torch.max`` returns it), on every path. A duplicate row
    (distance 0) gives :math:`d_i = \varepsilon \sqrt{D}`: every :math:`\ell_i` is finite,
    at most :math:`-\log \varepsilon` (about 18.4 at the default) and, the rows being unit
    vectors, at least :math:`-\log(2 + \varepsilon(\sqrt{D} + 1))`. The original excludes a row from
    its own search by setting its inner product with itself to :math:`-1`, this function to
    :math:`-\infty`. The two can differ only when every other row has an inner product of
    :math:`-1` or less with it (antipodal rows, e.g. :math:`N = 2` with :math:`x_1 = -x_0`):
    there the original can pair the row with itself (:math:`d_i = \varepsilon \sqrt{D}`),
    this function always pairs it with another row (:math:`d_i \approx 2`).

    Half-precision inputs (or autocast) are computed in float32, float64 stays float64 (the
    original computes in the input dtype, with CUDA autocast off).

    **Large batches.** The plain path builds the :math:`N \times N` inner products at once, as
    the original. With an integer ``chunk_size`` :math:`B`, the neighbours are searched for
    :math:`B` rows at a time, from their :math:`B \times N` inner products, and the distances
    are then computed from the gathered neighbour rows: the extra memory is
    :math:`O(B N + N D)` instead of :math:`O(N^2)`. The search runs without autograd on both
    paths and the distance is the same expression, so value and gradient are those of the
    plain path (bit for bit wherever both pick the same neighbours). ``None`` always builds
    the full matrix. ``"auto"`` (the default) decides by shape and device with the rule of
    :func:`~sslosses.functional.resolve_chunk_size`, called with ``rows = N`` and
    ``cols =`` :math:`N_g` (the rows searched: :math:`N` in one process).

    **Distributed.** The original searches each rank's batch alone. With
    ``gather_distributed=True`` and a process group of size :math:`W > 1`, the normalized
    rows of all ranks are gathered with gradient (ranks may hold different batch sizes, and a
    rank may hold none): this rank's :math:`N_r` rows search their neighbours among the
    :math:`N_g` rows of the global batch (their own excluded). The returned ``"mean"`` is the
    local sum scaled by :math:`W / N_g`, so the mean over ranks equals the single-process
    loss on the concatenated global batch, and each rank's input gradient divided by
    :math:`W` (DDP's averaging) is its slice of the single-process gradient. ``"sum"``
    returns :math:`W` times the local sum; ``"none"`` this rank's rows of the global
    per-row loss. Without a process group the loss is computed locally.

    Args:
        x: the embeddings, one row per sample (e.g. the student's class tokens).
        eps: :math:`\varepsilon > 0`, used in the normalization, the distance and the log
            (the original's three constants, all ``1e-8`` there). Default: ``1e-8``.
        gather_distributed: search the neighbours in the batch of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: rows per block of the neighbour search, ``None`` for the plain path, or
            ``"auto"`` to decide by shape and device
            (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Shape:
        - x: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``x`` is not a floating-point tensor, or an option has the wrong type.
        ValueError: if ``x`` is not 2-D, has no feature (:math:`D < 1`) or too few rows
            (:math:`N < 2`; with ``gather_distributed`` and :math:`W > 1` the global
            :math:`N_g < 2`, raised on every rank together, while a rank may hold no rows),
            ``eps`` is not a finite number > 0, ``chunk_size`` is not > 0 or ``"auto"``, or
            ``reduction`` is unknown.

    Examples:
        >>> import math
        >>> import torch
        >>> from sslosses.functional import koleo_loss
        >>> x = torch.randn(16, 32, requires_grad=True)
        >>> loss = koleo_loss(x)
        >>> loss.shape, bool(torch.isfinite(loss))
        (torch.Size([]), True)
        >>> loss.backward()
        >>> chunked = koleo_loss(x, chunk_size=5)  # neighbours searched 5 rows at a time
        >>> bool(torch.equal(chunked, loss))
        True
        >>> corners = torch.eye(4)  # 4 orthonormal rows: every neighbour at distance sqrt(2)
        >>> math.isclose(koleo_loss(corners).item(), -math.log(math.sqrt(2)), rel_tol=1e-6)
        True

    References:
        Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019,
        arXiv:1806.03198 (the KoLeo regularizer). Oquab et al., "DINOv2: Learning Robust
        Visual Features without Supervision", arXiv:2304.07193. Official code:
        facebookresearch/dinov2, ``dinov2/loss/koleo_loss.py`` (``KoLeoLoss``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    tensor = check_tensor("x", x, ndim=2)
    check_min_batch("x", tensor, _collectives.local_minimum(gather_distributed, 2))
    check_min_features("x", tensor, 1)
    eps = check_positive("eps", eps)
    reduction = check_reduction(reduction)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(tensor):
        z = _normalize(upcast(tensor, compute_dtype(tensor)), eps)  # (N, D)
        n = z.shape[0]
        layout = _collectives.global_layout(gather_distributed, n, z.device, name="x", minimum=2)
        if layout is not None:
            offset, rows = (
                layout.offset,
                _collectives.gather_rows(z, layout),
            )  # (N_g, D); N may be 0
        else:
            offset, rows = 0, z
        block = _resolve(chunk_size, n, rows.shape[0], z.device)
        index = _nearest_neighbours(z, rows, offset, block)  # (N,) into the N_g rows
        # z - rows[index] + eps, written in place on the gathered rows (one (N, D) buffer)
        difference = rows[index].neg_().add_(z).add_(eps)  # (N, D)
        distance = torch.linalg.vector_norm(difference, dim=1)  # (N,)
        loss = -torch.log(distance + eps)  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


def _normalize(x: Tensor, eps: float) -> Tensor:
    """``F.normalize(x, dim=1, eps=eps)`` as ``x`` times a ``(N, 1)`` inverse norm.

    The same function, but its backward keeps fewer ``(N, D)`` temporaries than the division
    by an expanded ``(N, D)`` norm (the peak of the whole loss's backward otherwise).
    """
    inverse: Tensor = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(eps).reciprocal()
    return x * inverse  # (N, D)


def _nearest_neighbours(z: Tensor, rows: Tensor, offset: int, block: int | None) -> Tensor:
    """The index in ``rows`` of each row of ``z``'s largest inner product, its own excluded.

    ``z`` is ``rows[offset : offset + N]``; row ``i`` of ``z`` is row ``offset + i`` of
    ``rows``, whose inner product is set to ``-inf`` before the maximum (the lowest index
    wins a tie; copies of one row can tie in one block size and not in another, as matmuls of
    other shapes may round their products apart in the last bit). ``block`` rows at a time (all
    at once for ``None``), without autograd: only the ``(block, N_g)`` inner products of one
    block are alive at a time.
    """
    n = z.shape[0]
    step = max(n if block is None else block, 1)
    index = torch.empty(n, dtype=torch.long, device=z.device)  # (N,)
    with torch.no_grad():
        for start in range(0, n, step):
            stop = min(start + step, n)
            dots = z[start:stop] @ rows.T  # (B, N_g)
            dots.diagonal(offset + start).fill_(float("-inf"))  # (i, offset + start + i)
            index[start:stop] = dots.max(dim=1).indices  # the first maximum (faster than argmax)
    return index


class KoLeoLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.koleo_loss`.

    Args:
        eps: :math:`\varepsilon > 0` of the normalization, the distance and the log.
            Default: ``1e-8``.
        gather_distributed: search the neighbours in the batch of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: rows per block of the neighbour search, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import KoLeoLoss
        >>> criterion = KoLeoLoss()
        >>> criterion
        KoLeoLoss(eps=1e-08, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> criterion(torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float = 1e-8,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, x: Tensor) -> Tensor:
        return koleo_loss(
            x,
            eps=self.eps,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, gather_distributed={self.gather_distributed}, "
            f"reduction={self.reduction!r}, chunk_size={self.chunk_size!r}"
        )
