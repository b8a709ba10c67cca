"""SimCLR: the normalized temperature-scaled cross-entropy (NT-Xent) over 2N views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._chunked_ce import similarity_logsumexp
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_chunk_size,
    check_embedding_pair,
    check_positive,
    check_reduction,
)
from sslosses.typing import ChunkSize, Reduction

__all__ = ["NTXentLoss", "nt_xent"]


def nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.1,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""SimCLR's NT-Xent loss: cross-entropy of each view against the other 2N - 1 views.

    The two views' embeddings are stacked into :math:`2N` anchors :math:`u = [a; b]`; the
    positive of :math:`a_n` is :math:`b_n` and vice versa, and the remaining :math:`2N - 2`
    embeddings are negatives. With :math:`s_{ij} = \langle u_i, u_j \rangle / \tau` (cosine
    similarities when ``normalize=True``) and :math:`p(i)` the index of the positive of
    :math:`i`,

    .. math::
        \ell_i = -\log \frac{\exp(s_{i\,p(i)})}{\sum_{j \ne i} \exp(s_{ij})}, \qquad
        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

    The self-similarity :math:`s_{ii}` is left out of the sum (masked to :math:`-\infty`, not
    shifted by a large constant) and the log-sum-exp is max-subtracted, so small temperatures
    (e.g. ``0.01``) stay finite. ``reduction="none"`` returns, per pair, the average of its
    two directions, :math:`(\ell_n + \ell_{N+n}) / 2`, so its mean is the ``"mean"`` loss.
    Half-precision inputs (or autocast) are computed in float32; float64 stays float64.

    **Large batches.** With an integer ``chunk_size``, the :math:`2N \times 2N` logit matrix is
    never stored: row blocks of :math:`B` = ``chunk_size`` anchors are reduced to their
    log-sum-exp in the forward and recomputed in the backward (a custom autograd Function), so
    the extra memory is :math:`O(B N)` instead of :math:`O(N^2)`. Value and gradient equal the
    plain path up to rounding. A block holds about :math:`3 \cdot B \cdot 2N` floats. ``None``
    always builds the full matrix (the plain path). ``"auto"`` (the default) decides by shape
    and device with the rule of :func:`~sslosses.functional.resolve_chunk_size` (called with
    ``rows = cols = 2N``), which also covers :func:`torch.compile`, :mod:`torch.func` and
    double backward.

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, both views are gathered from all ranks with gradient
    (:func:`sslosses.distributed.gather`; ranks may hold different batch sizes): this rank's
    :math:`2 N_r` anchors are contrasted against all :math:`2 N_g` embeddings of the global
    batch. The returned ``"mean"`` is the local sum scaled by :math:`W / N_g`, so the mean over
    ranks equals the single-process loss on the concatenated global batch, and each rank's
    input gradient divided by :math:`W` (DDP's averaging) is its slice of the single-process
    gradient. ``"sum"`` returns :math:`W` times the local sum (mean over ranks = global sum);
    ``"none"`` returns this rank's rows of the global per-pair loss. A double backward through
    the gather is exact when every rank runs it. Without a process group the loss is computed
    locally.

    Args:
        z_a: embeddings of the first view :math:`a`.
        z_b: embeddings of the second view :math:`b` (row ``n`` pairs with row ``n`` of ``z_a``).
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        normalize: L2-normalize the embeddings first (cosine similarity). Default: ``True``.
        gather_distributed: contrast against the embeddings of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the memory-saving blockwise path, ``None`` for the
            plain path, or ``"auto"`` to decide by shape and device
            (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Shape:
        - z_a: :math:`(N, D)`
        - z_b: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, the shapes or devices differ, the batch is too
            small (:math:`N < 2`; with ``gather_distributed`` and :math:`W > 1` the global
            :math:`N_g < 2`, raised on every rank together, while a rank may hold no rows),
            ``temperature`` is not a finite number > 0, ``chunk_size`` is not > 0 or ``"auto"``, or
            ``reduction`` is unknown.

    Examples:
        >>> import torch
        >>> from sslosses.functional import nt_xent
        >>> z_a = torch.randn(8, 32, requires_grad=True)
        >>> z_b = torch.randn(8, 32, requires_grad=True)
        >>> loss = nt_xent(z_a, z_b, temperature=0.5)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> loss.backward()
        >>> chunked = nt_xent(z_a, z_b, temperature=0.5, chunk_size=4)
        >>> bool(torch.isclose(chunked, loss))
        True
        >>> same = torch.ones(8, 32)  # all views coincide: the loss is log(2N - 1)
        >>> import math
        >>> math.isclose(nt_xent(same, same).item(), math.log(2 * 8 - 1), rel_tol=1e-6)
        True

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
        ICML 2020, arXiv:2002.05709. Official code: google-research/simclr, ``objective.py``
        (``add_contrastive_loss``), whose ``loss_a + loss_b`` is twice this mean (we follow
        the paper's Algorithm 1, the mean over the 2N anchors).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    minimum = _collectives.local_minimum(gather_distributed, 2)
    dtype = check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=minimum)
    scale = 1.0 / check_positive("temperature", temperature)
    check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    chunk_size = check_chunk_size(chunk_size)
    with no_autocast(z_a):
        a = upcast(z_a, dtype)  # (N, D)
        b = upcast(z_b, dtype)  # (N, D)
        if normalize:
            a = F.normalize(a, dim=1)
            b = F.normalize(b, dim=1)
        n, d = a.shape
        layout = _collectives.global_layout(
            gather_distributed, n, a.device, name="z_a", minimum=2, why=" (2N_g >= 4 views)"
        )
        if layout is not None:
            offset, n_global = layout.offset, layout.total  # N_g >= 2; this rank's N may be 0
            views = _collectives.gather_rows(torch.cat([a, b], dim=1), layout)  # (N_g, 2D)
            a_all, b_all = views[:, :d], views[:, d:]  # (N_g, D) each
        else:
            offset, n_global, a_all, b_all = 0, n, a, b
        anchors = torch.cat([a, b])  # (2N, D)
        candidates = torch.cat([a_all, b_all])  # (2N_g, D)
        own = torch.arange(offset, offset + n, device=a.device)  # (N,)
        self_index = torch.cat([own, own + n_global])  # (2N,): each anchor's own column
        lse = similarity_logsumexp(
            anchors, candidates, scale=scale, exclude=self_index, chunk_size=chunk_size
        )  # (2N,)
        positive = ((a * scale) * b).sum(dim=1)  # (N,): both directions share it
        loss = (lse[:n] + lse[n:]) / 2 - positive  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


class NTXentLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.nt_xent`.

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        normalize: L2-normalize the embeddings first. Default: ``True``.
        gather_distributed: contrast against the embeddings of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import NTXentLoss
        >>> criterion = NTXentLoss(temperature=0.5)
        >>> criterion
        NTXentLoss(temperature=0.5, normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> criterion(torch.randn(4, 16), torch.randn(4, 16)).shape
        torch.Size([])
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return nt_xent(
            z_a,
            z_b,
            temperature=self.temperature,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}, "
            f"chunk_size={self.chunk_size!r}"
        )
