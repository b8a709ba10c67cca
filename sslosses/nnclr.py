"""NNCLR: contrastive learning with nearest neighbours from a support set as positives."""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._chunked_ce import _resolve, similarity_logsumexp
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_chunk_size,
    check_embedding_pair,
    check_min_features,
    check_positive,
    check_reduction,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from sslosses.typing import ChunkSize, Reduction

__all__ = ["NNCLRLoss", "nearest_neighbours", "nnclr_loss"]


def _check_support(support: object, queries: Tensor, name: str) -> Tensor:
    """A floating ``(K, D)`` support set with ``K >= 1``, ``name``'s ``D`` and device."""
    support = check_tensor("support", support, ndim=2)
    if support.shape[1] != queries.shape[1]:
        raise ValueError(
            f"support must have shape (K, {queries.shape[1]}) to match the embedding dim D of "
            f"{name}, got {tuple(support.shape)}"
        )
    if support.shape[0] == 0:
        raise ValueError(
            "support must hold at least 1 row, got shape "
            f"{tuple(support.shape)} (an empty MoCoQueue: push a batch before the first search)"
        )
    check_same_device(name, queries, "support", support)
    return support


def _search(queries: Tensor, support: Tensor, block: int | None) -> Tensor:
    """The index in ``support`` of each row of ``queries``' largest cosine similarity.

    ``queries`` are L2-normalized; the support rows are normalized ``block`` at a time (all at
    once for ``None``), so only one ``(N, block)`` block of similarities and one ``(block, D)``
    block of normalized rows are alive. Without autograd. The first maximum wins a tie: within
    a block ``torch.max`` returns the first, and a later block replaces a row's neighbour only
    when its similarity is strictly larger.
    """
    k = support.shape[0]
    step = max(k if block is None else block, 1)
    best: Tensor | None = None
    index = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)  # (N,)
    with torch.no_grad():
        for start in range(0, k, step):
            rows = F.normalize(support[start : start + step], dim=1)  # (B, D)
            values, found = (queries @ rows.T).max(dim=1)  # (N, B) -> (N,), (N,)
            if best is None:
                best, index = values, found
            else:
                better = values > best  # strictly: the earlier block keeps a tie
                best = torch.where(better, values, best)
                index = torch.where(better, found + start, index)
    return index


def _neighbour_index(queries: Tensor, support: Tensor, chunk_size: ChunkSize) -> Tensor:
    """:func:`_search` on checked inputs, in the compute dtype, ``"auto"`` resolved."""
    dtype = compute_dtype(queries, support)
    with no_autocast(queries), torch.no_grad():
        q = F.normalize(upcast(queries.detach(), dtype), dim=1)  # (N, D)
        s = upcast(support.detach(), dtype)  # (K, D)
        block = _resolve(chunk_size, s.shape[0], q.shape[0], q.device)
        return _search(q, s, block)  # (N,)


@overload
def nearest_neighbours(
    queries: Tensor,
    support: Tensor,
    *,
    chunk_size: ChunkSize = ...,
    return_indices: Literal[False] = ...,
) -> Tensor: ...


@overload
def nearest_neighbours(
    queries: Tensor,
    support: Tensor,
    *,
    chunk_size: ChunkSize = ...,
    return_indices: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def nearest_neighbours(
    queries: Tensor,
    support: Tensor,
    *,
    chunk_size: ChunkSize = ...,
    return_indices: bool,
) -> Tensor | tuple[Tensor, Tensor]: ...


def nearest_neighbours(
    queries: Tensor,
    support: Tensor,
    *,
    chunk_size: ChunkSize = "auto",
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""NNCLR's :math:`\mathrm{NN}(z, Q)`: each query's support row of largest cosine similarity.

    For each query :math:`z_n` the top-1 neighbour among the support rows
    :math:`q_1, \dots, q_K` (e.g. :meth:`sslosses.MoCoQueue.features`):

    .. math::
        \mathrm{NN}(z_n, Q) = q_{j(n)}, \qquad
        j(n) = \operatorname*{arg\,max}_{j} \frac{\langle z_n, q_j \rangle}
        {\|z_n\|_2 \, \|q_j\|_2},

    the same row as the paper's :math:`\arg\min_j \| \hat z_n - \hat q_j \|_2` over
    L2-normalized rows. The search runs without autograd and the returned rows are a detached
    copy of the support's rows as stored (not normalized, in the support's dtype): the
    neighbour is a constant of the loss, as in the paper (NNCLR's support set holds embeddings
    of earlier batches). The similarities are computed in float32 (float64 if an input is
    float64), with autocast off. Nothing is pushed to or read from a queue here: pass
    ``queue.features()``, and push after the loss.

    **Ties.** Among equal largest similarities the lowest support index is taken (the first
    maximum), on every path. Copies of one row (or rows of one direction) tie exactly, but
    matmuls of different block shapes may round their similarities apart in the last bit, so
    the chunked and plain paths can pick different copies of the same direction. A zero query
    has similarity 0 with every row and gets row 0; a zero support row has similarity 0 with
    every query.

    **Large support sets.** With an integer ``chunk_size`` :math:`B` the support rows are
    normalized and compared :math:`B` at a time, keeping a running maximum per query, so only
    an :math:`N \times B` block of similarities is alive instead of the :math:`N \times K`
    matrix (2 GiB in float32 for :math:`N = 8192, K = 65536`). ``None`` always builds the
    full matrix. ``"auto"`` (the default) uses the rule of
    :func:`~sslosses.functional.resolve_chunk_size` with ``rows = K`` (support rows per
    block) and ``cols = N``.

    Args:
        queries: the rows to find neighbours for, e.g. the projections :math:`z` of a view.
        support: the support set :math:`Q`, e.g. ``queue.features()``.
        chunk_size: support rows per block, ``None`` for the plain path, or ``"auto"``
            (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.
        return_indices: also return the neighbours' indices into ``support``.
            Default: ``False``.

    Shape:
        - queries: :math:`(N, D)`, any :math:`N \ge 0`
        - support: :math:`(K, D)`, :math:`K \ge 1`
        - output: :math:`(N, D)` rows of ``support``; with ``return_indices=True`` also the
          :math:`(N,)` ``int64`` indices.

    Returns:
        The neighbour rows, or ``(rows, indices)`` with ``return_indices=True``.

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, the embedding dims or devices differ, ``queries``
            has no feature, ``support`` has no row (an empty queue), or ``chunk_size`` is not
            > 0 or ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses.functional import nearest_neighbours
        >>> support = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
        >>> nearest_neighbours(torch.tensor([[0.1, 5.0], [3.0, 1.0]]), support)
        tensor([[0., 2.],
                [1., 0.]])
        >>> z = torch.randn(6, 8)
        >>> queue = torch.cat([torch.randn(20, 8), z])  # z's rows are in the support set
        >>> rows, index = nearest_neighbours(z, queue, chunk_size=7, return_indices=True)
        >>> index.tolist(), bool(torch.equal(rows, z))  # each row is its own neighbour
        ([20, 21, 22, 23, 24, 25], True)

    References:
        Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive
        Learning of Visual Representations", ICCV 2021, arXiv:2104.14548 (Eq. 2 and
        Algorithm 1, :math:`\mathrm{NN}(z, Q)`). lightly ``NNMemoryBankModule`` and solo-learn
        ``solo/methods/nnclr.py`` (``find_nn``) compute the same neighbours from the full
        similarity matrix.
    """
    queries = check_tensor("queries", queries, ndim=2)
    check_min_features("queries", queries, 1)
    support = _check_support(support, queries, "queries")
    chunk_size = check_chunk_size(chunk_size)
    check_bool("return_indices", return_indices)
    index = _neighbour_index(queries, support, chunk_size)  # (N,)
    rows = support.detach()[index]  # (N, D), a copy
    return (rows, index) if return_indices else rows


def nnclr_loss(
    z_a: Tensor,
    z_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    support: Tensor,
    *,
    temperature: float = 0.1,
    symmetric: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""NNCLR's loss: each view's nearest neighbour in the support set is the other view's positive.

    For the two views of a batch, :math:`z_a, z_b` are the projections and :math:`p_a, p_b`
    the predictions (the prediction head on :math:`z`). The neighbours
    :math:`n_a = \mathrm{NN}(z_a, Q)` and :math:`n_b = \mathrm{NN}(z_b, Q)` are searched in the
    support set :math:`Q` (:func:`nearest_neighbours`, no gradient), and with all rows
    L2-normalized and :math:`s_{ij} = \langle n_i, p_j \rangle / \tau`, the loss of one
    direction is the paper's Eq. 2, a cross-entropy over the in-batch predictions of the other
    view, and its symmetric term a cross-entropy over the in-batch neighbours:

    .. math::
        \ell^{\to}_i(n, p) = -\log \frac{\exp(s_{ii})}{\sum_{k=1}^{N} \exp(s_{ik})}, \qquad
        \ell^{\leftarrow}_i(n, p) = -\log \frac{\exp(s_{ii})}{\sum_{k=1}^{N} \exp(s_{ki})} .

    Algorithm 1 of the paper averages the two directions, :math:`(n_a, p_b)` and
    :math:`(n_b, p_a)`:

    .. math::
        \ell_i = \tfrac12 \bigl[\ell^{\to}_i(n_a, p_b) + \ell^{\to}_i(n_b, p_a)\bigr]
        \quad (\texttt{symmetric=False}),

    .. math::
        \ell_i = \tfrac14 \bigl[\ell^{\to}_i(n_a, p_b) + \ell^{\leftarrow}_i(n_a, p_b)
        + \ell^{\to}_i(n_b, p_a) + \ell^{\leftarrow}_i(n_b, p_a)\bigr]
        \quad (\texttt{symmetric=True}),

    and :math:`\mathcal{L} = \frac1N \sum_i \ell_i`. The paper symmetrizes Eq. 2 by adding
    the term :math:`\ell^{\leftarrow}` (its implementation details, Sec. 3.3); here the two are
    averaged, so that both settings keep the scale of Eq. 2 (:math:`\log N` for uninformative
    embeddings): twice the ``symmetric=True`` value is the paper's sum. ``symmetric=False`` is
    exactly Algorithm 1's ``L(NN1, p2) / 2 + L(NN2, p1) / 2`` (solo-learn's
    ``nnclr_loss_func``). The negatives are the other embeddings of the same matrix only (not
    the :math:`2N - 2` of SimCLR's NT-Xent, which lightly's NNCLR example uses: see
    :doc:`/guides/migration`). ``reduction="none"`` returns the :math:`\ell_i`.

    No gradient reaches ``z_a``, ``z_b`` or ``support`` through this loss: the neighbours are
    constants, and the projections are trained through the predictions. The loss has no side
    effect: it never pushes to a queue. A training step is

    .. code-block:: python

        z_a, z_b = projector(backbone(x_a)), projector(backbone(x_b))
        p_a, p_b = predictor(z_a), predictor(z_b)
        support = queue.features() if len(queue) else z_a.detach()  # the queue starts empty
        loss = nnclr_loss(z_a, z_b, p_a, p_b, support)  # neighbours, then the loss
        loss.backward()
        optimizer.step()
        queue.push(z_a.detach())  # the paper enqueues the first view's projections

    with ``queue = MoCoQueue(98304, D)``. The support set needs a row: the paper starts from a
    random queue, :class:`~sslosses.MoCoQueue` from an empty one, so the first step searches
    the batch's own projections. The log-sum-exps are max-subtracted, so small temperatures
    stay finite; half-precision inputs (or autocast) are computed in float32, float64 stays
    float64.

    **Large batches and support sets.** With an integer ``chunk_size`` :math:`B` the neighbour
    search holds one :math:`N \times B` block of similarities (:func:`nearest_neighbours`) and
    each cross-entropy one :math:`B \times N` block of logits (the blockwise path of
    :func:`~sslosses.functional.nt_xent`), instead of the :math:`N \times K` and
    :math:`N \times N` matrices; value and gradient equal the plain path up to rounding.
    ``None`` builds the full matrices; ``"auto"`` (the default) applies the rule of
    :func:`~sslosses.functional.resolve_chunk_size` to each (``rows = K, cols = 2N`` for the
    search of both views' :math:`2N` queries, ``rows = N, cols =`` :math:`N_g` for the logits).

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, each rank searches its own rows' neighbours (pass the same support set on
    every rank, e.g. a :class:`~sslosses.MoCoQueue` with ``gather_distributed=True``), then the
    predictions of all ranks are gathered with gradient, and with ``symmetric=True`` the
    neighbours without: this rank's :math:`N_r` rows are contrasted against the
    :math:`N_g` rows of the global batch (ranks may hold different batch sizes, and a rank may
    hold none). The returned ``"mean"`` is the local sum scaled by :math:`W / N_g`, so the mean
    over ranks equals the single-process loss on the concatenated global batch, and each
    rank's input gradient divided by :math:`W` (DDP's averaging) is its slice of the
    single-process gradient. ``"sum"`` returns :math:`W` times the local sum; ``"none"`` this
    rank's rows of the global per-sample loss. Without a process group the loss is computed
    locally.

    Args:
        z_a: projections of the first view, used only to search neighbours.
        z_b: projections of the second view (row ``n`` pairs with row ``n`` of ``z_a``).
        p_a: predictions of the first view (the prediction head on ``z_a``).
        p_b: predictions of the second view.
        support: the support set :math:`Q`, e.g. ``queue.features()``.
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        symmetric: add the cross-entropy over the neighbours :math:`\ell^{\leftarrow}`
            (averaged with Eq. 2's). Default: ``True``.
        gather_distributed: contrast against the rows of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: rows per block of the neighbour search and of the logits, ``None`` for the
            plain path, or ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`).
            Default: ``"auto"``.

    Shape:
        - z_a, z_b, p_a, p_b: :math:`(N, D)`
        - support: :math:`(K, D)`, :math:`K \ge 1`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 if any input is float64).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, the shapes or devices differ, ``support`` has no
            row or another embedding dim, the batch is too small (:math:`N < 2`: every row
            needs a negative; with ``gather_distributed`` and :math:`W > 1` the global
            :math:`N_g < 2`, raised on every rank together, while a rank may hold no rows),
            ``temperature`` is not a finite number > 0, ``chunk_size`` is not > 0 or
            ``"auto"``, or ``reduction`` is unknown.

    Examples:
        >>> import math
        >>> import torch
        >>> from sslosses.functional import nnclr_loss
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> p_a = torch.randn(8, 16, requires_grad=True)
        >>> p_b = torch.randn(8, 16, requires_grad=True)
        >>> support = torch.randn(64, 16)  # e.g. queue.features()
        >>> loss = nnclr_loss(z_a, z_b, p_a, p_b, support)
        >>> loss.backward()
        >>> bool(torch.isclose(nnclr_loss(z_a, z_b, p_a, p_b, support, chunk_size=3), loss))
        True
        >>> flat, one = torch.ones(8, 16), torch.randn(1, 16)  # every similarity equal:
        >>> value = nnclr_loss(z_a, z_b, flat, flat, one)  # the loss is log N
        >>> math.isclose(value.item(), math.log(8), rel_tol=1e-6)
        True

    References:
        Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive
        Learning of Visual Representations", ICCV 2021, arXiv:2104.14548 (Eq. 2, the
        symmetric term of Sec. 3.3 and Algorithm 1). No official code was released;
        solo-learn's ``solo/losses/nnclr.py`` (``nnclr_loss_func``) is Algorithm 1's ``L``.
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    minimum = _collectives.local_minimum(gather_distributed, 2)
    check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=minimum)
    check_embedding_pair("p_a", p_a, "p_b", p_b, min_batch=minimum)
    check_same_shape("z_a", z_a, "p_a", p_a)
    check_same_device("z_a", z_a, "p_a", p_a)
    support = _check_support(support, z_a, "z_a")
    scale = 1.0 / check_positive("temperature", temperature)
    check_bool("symmetric", symmetric)
    reduction = check_reduction(reduction)
    chunk_size = check_chunk_size(chunk_size)
    dtype = compute_dtype(z_a, z_b, p_a, p_b, support)
    n, d = z_a.shape
    why = " (every row needs a negative)"
    layout = _collectives.global_layout(
        gather_distributed, n, z_a.device, name="z_a", why=why, minimum=2
    )
    with no_autocast(z_a):
        s = upcast(support.detach(), dtype)  # (K, D)
        with torch.no_grad():
            z = F.normalize(upcast(torch.cat([z_a, z_b]).detach(), dtype), dim=1)  # (2N, D)
            index = _search(z, s, _resolve(chunk_size, s.shape[0], 2 * n, z.device))  # (2N,)
            neighbours = F.normalize(s[index], dim=1)  # (2N, D): [n_a; n_b], constants
        n_a, n_b = neighbours[:n], neighbours[n:]  # (N, D) each
        q_a = F.normalize(upcast(p_a, dtype), dim=1)  # (N, D)
        q_b = F.normalize(upcast(p_b, dtype), dim=1)  # (N, D)
        if layout is not None:
            predictions = _collectives.gather_rows(torch.cat([q_a, q_b], dim=1), layout)
            q_a_all, q_b_all = predictions[:, :d], predictions[:, d:]  # (N_g, D) each
        else:
            q_a_all, q_b_all = q_a, q_b
        positive_ab = ((n_a * scale) * q_b).sum(dim=1)  # (N,): s_ii of (n_a, p_b)
        positive_ba = ((n_b * scale) * q_a).sum(dim=1)  # (N,): s_ii of (n_b, p_a)
        lse_ab = similarity_logsumexp(n_a, q_b_all, scale=scale, chunk_size=chunk_size)  # (N,)
        lse_ba = similarity_logsumexp(n_b, q_a_all, scale=scale, chunk_size=chunk_size)  # (N,)
        loss = (lse_ab + lse_ba) / 2 - (positive_ab + positive_ba) / 2  # (N,)
        if symmetric:
            if layout is not None:
                with torch.no_grad():
                    gathered = _collectives.gather_rows(torch.cat([n_a, n_b], dim=1), layout)
                n_a_all, n_b_all = gathered[:, :d], gathered[:, d:]  # (N_g, D) each
            else:
                n_a_all, n_b_all = n_a, n_b
            # the same logits read by column: each prediction against the in-batch neighbours
            col_ab = similarity_logsumexp(q_b, n_a_all, scale=scale, chunk_size=chunk_size)
            col_ba = similarity_logsumexp(q_a, n_b_all, scale=scale, chunk_size=chunk_size)
            loss = (loss + (col_ab + col_ba) / 2 - (positive_ab + positive_ba) / 2) / 2  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


class NNCLRLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.nnclr_loss`.

    The support set is an argument of :meth:`forward`, not state: keep it in a
    :class:`~sslosses.MoCoQueue` and push to it after the loss (the module never does).

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        symmetric: add the cross-entropy over the neighbours. Default: ``True``.
        gather_distributed: contrast against the rows of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: rows per block of the neighbour search and of the logits, ``None`` for the
            plain path or ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`).
            Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import MoCoQueue, NNCLRLoss
        >>> criterion = NNCLRLoss()
        >>> criterion
        NNCLRLoss(temperature=0.1, symmetric=True, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> queue = MoCoQueue(32, 16)
        >>> z_a, z_b, p_a, p_b = (torch.randn(4, 16) for _ in range(4))
        >>> queue.push(z_a)  # the support set needs a row before the first step
        >>> criterion(z_a, z_b, p_a, p_b, queue.features()).shape
        torch.Size([])
        >>> queue.push(z_a)  # after the loss, as the paper
        >>> len(queue)
        8
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        symmetric: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.symmetric = check_bool("symmetric", symmetric)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(
        self, z_a: Tensor, z_b: Tensor, p_a: Tensor, p_b: Tensor, support: Tensor
    ) -> Tensor:
        return nnclr_loss(
            z_a,
            z_b,
            p_a,
            p_b,
            support,
            temperature=self.temperature,
            symmetric=self.symmetric,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, symmetric={self.symmetric}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}, "
            f"chunk_size={self.chunk_size!r}"
        )
