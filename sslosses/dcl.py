"""DCL and DCLW: decoupled contrastive learning, NT-Xent without the positive in the denominator."""

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

__all__ = ["DCLLoss", "DCLWLoss", "dcl_loss", "dclw_loss"]


def dcl_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.1,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""The decoupled contrastive loss (DCL): NT-Xent with the positive left out of the denominator.

    As in :func:`~sslosses.functional.nt_xent`, the two views are stacked into :math:`2N`
    anchors :math:`u = [a; b]`, :math:`s_{ij} = \langle u_i, u_j \rangle / \tau` (cosine
    similarities when ``normalize=True``) and :math:`p(i)` is the index of the positive of
    :math:`i`. The denominator keeps only the :math:`2N - 2` negatives:

    .. math::
        \ell_i = -s_{i\,p(i)} + \log \sum_{j \notin \{i,\, p(i)\}} \exp(s_{ij}), \qquad
        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

    Per anchor, NT-Xent is :math:`\operatorname{softplus}(\ell_i) = \log(1 + e^{\ell_i})`, so
    DCL is below NT-Xent everywhere and the two agree where the positive is much less similar
    than the negatives; removing the positive from the denominator removes the factor
    :math:`1 - \text{softmax}_{i\,p(i)}` that shrinks NT-Xent's gradient as the positive pair
    grows dominant (the paper's negative-positive coupling). Unlike NT-Xent, DCL can be
    negative.

    The log-sum-exp is max-subtracted, with the two excluded logits masked to
    :math:`-\infty`. ``reduction="none"`` returns, per pair, the average of its two
    directions, :math:`(\ell_n + \ell_{N+n}) / 2`. Half-precision inputs (or autocast) are
    computed in float32; float64 stays float64.

    **Large batches** and **distributed** training follow :func:`~sslosses.functional.nt_xent`
    exactly: an integer ``chunk_size`` reduces row blocks of :math:`B` anchors to their
    log-sum-exp without storing the :math:`2N \times 2N` logits (:math:`O(B N)` extra memory,
    the same value and gradient), ``"auto"`` uses
    :func:`~sslosses.functional.resolve_chunk_size` with ``rows = cols = 2N``; with
    ``gather_distributed=True`` and :math:`W > 1` both views are gathered with gradient, this
    rank's :math:`2 N_r` anchors are contrasted against the :math:`2 N_g` embeddings of the
    global batch (ranks may hold different batch sizes, and a rank may hold none), the mean
    over ranks of the returned ``"mean"`` is the single-process loss on the global batch and
    each rank's input gradient divided by :math:`W` is its slice of the single-process
    gradient.

    Args:
        z_a: embeddings of the first view :math:`a`.
        z_b: embeddings of the second view :math:`b` (row ``n`` pairs with row ``n`` of ``z_a``).
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        normalize: L2-normalize the embeddings first (cosine similarity). Default: ``True``.
        gather_distributed: contrast against the embeddings of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the memory-saving blockwise path, ``None`` for the
            plain path, or ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`).
            Default: ``"auto"``.

    Shape:
        - z_a: :math:`(N, D)`
        - z_b: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, the shapes or devices differ, the batch is too
            small (:math:`N < 2`, which leaves an anchor without negatives; with
            ``gather_distributed`` and :math:`W > 1` the global :math:`N_g < 2`, raised on
            every rank together, while a rank may hold no rows), ``temperature`` is not a
            finite number > 0, ``chunk_size`` is not > 0 or ``"auto"``, or ``reduction`` is
            unknown.

    Examples:
        >>> import torch
        >>> from sslosses.functional import dcl_loss, nt_xent
        >>> z_a = torch.randn(8, 32, requires_grad=True)
        >>> z_b = torch.randn(8, 32, requires_grad=True)
        >>> loss = dcl_loss(z_a, z_b, temperature=0.5)
        >>> loss.shape, bool(loss < nt_xent(z_a, z_b, temperature=0.5))
        (torch.Size([]), True)
        >>> loss.backward()
        >>> chunked = dcl_loss(z_a, z_b, temperature=0.5, chunk_size=4)
        >>> bool(torch.isclose(chunked, loss))
        True

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848 (Eq. 6
        without a weight). Reproduces lightly's ``DCLLoss`` (``lightly/loss/dcl_loss.py``,
        temperature ``0.1``), the mean of its two directions; the code the paper's
        implementations cite, raminnakhli/Decoupled-Contrastive-Learning ``loss/dcl.py``
        (``DCL``), returns the sum of the two directions, twice this mean.
    """
    return _decoupled(
        z_a,
        z_b,
        temperature=temperature,
        sigma=None,
        normalize=normalize,
        gather_distributed=gather_distributed,
        reduction=reduction,
        chunk_size=chunk_size,
    )


def dclw_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.1,
    sigma: float = 0.5,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""DCLW: :func:`~sslosses.functional.dcl_loss` with a von Mises-Fisher weight on the positive.

    Each positive term of DCL is scaled by the negative von Mises-Fisher weight of its pair,

    .. math::
        w_n = 2 - \frac{\exp(\langle a_n, b_n \rangle / \sigma)}
            {\frac{1}{N} \sum_{m=1}^{N} \exp(\langle a_m, b_m \rangle / \sigma)}
            = 2 - N \operatorname{softmax}_n\bigl(\langle a_n, b_n \rangle / \sigma\bigr),
        \qquad
        \ell_i = -w_{n(i)}\, s_{i\,p(i)} + \log \sum_{j \notin \{i,\, p(i)\}} \exp(s_{ij}),

    with :math:`n(i)` the pair of anchor :math:`i` (both directions of a pair share its
    weight) and :math:`\mathcal{L}` the mean of :math:`\ell_i` over the :math:`2N` anchors.
    The weights average to 1 over the batch and are larger for the pairs that are less
    similar than the others: the hard positives get more of the pull. They are a constant
    of the loss (not differentiated), as in lightly's ``DCLWLoss``. The similarity in the
    weight is the plain inner product divided by :math:`\sigma` (a cosine when
    ``normalize=True``), not divided by :math:`\tau`.

    Everything else (masking, ``reduction``, dtypes, ``chunk_size``) is as in
    :func:`~sslosses.functional.dcl_loss`. With ``gather_distributed=True`` and :math:`W > 1`
    the softmax of the weights runs over the :math:`N_g` pairs of the global batch (taken
    from the same gathered views), so the mean over ranks is again the single-process loss
    on the global batch and each rank's gradient divided by :math:`W` its slice of the
    single-process gradient.

    Args:
        z_a: embeddings of the first view :math:`a`.
        z_b: embeddings of the second view :math:`b` (row ``n`` pairs with row ``n`` of ``z_a``).
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        sigma: :math:`\sigma > 0`, the temperature of the weight's softmax. Default: ``0.5``.
        normalize: L2-normalize the embeddings first (cosine similarity). Default: ``True``.
        gather_distributed: contrast against (and weight over) the pairs of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the memory-saving blockwise path, ``None`` for the
            plain path, or ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`).
            Default: ``"auto"``.

    Shape:
        - z_a: :math:`(N, D)`
        - z_b: :math:`(N, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: as :func:`~sslosses.functional.dcl_loss`, and if ``sigma`` is not a
            finite number > 0.

    Examples:
        >>> import torch
        >>> from sslosses.functional import dcl_loss, dclw_loss
        >>> z = torch.randn(8, 32)
        >>> loss = dclw_loss(z, z + 0.1 * torch.randn(8, 32), sigma=0.5)
        >>> loss.shape
        torch.Size([])
        >>> same = torch.randn(8, 32)  # equal similarities: every weight is 1, DCLW is DCL
        >>> bool(torch.isclose(dclw_loss(same, same), dcl_loss(same, same)))
        True

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848 (Eq. 6 with
        the negative von Mises-Fisher weight). Reproduces lightly's ``DCLWLoss``
        (``lightly/loss/dcl_loss.py``: ``negative_mises_fisher_weights``, ``sigma=0.5``,
        ``temperature=0.1``), the mean of its two directions. The weight of
        raminnakhli/Decoupled-Contrastive-Learning ``loss/dcl.py`` (``DCLW``) is
        :math:`2 - \operatorname{softmax}` without the factor :math:`N` of the paper's
        expectation, and is differentiated.
    """
    return _decoupled(
        z_a,
        z_b,
        temperature=temperature,
        sigma=check_positive("sigma", sigma),
        normalize=normalize,
        gather_distributed=gather_distributed,
        reduction=reduction,
        chunk_size=chunk_size,
    )


def _decoupled(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float,
    sigma: float | None,
    normalize: bool,
    gather_distributed: bool,
    reduction: Reduction,
    chunk_size: ChunkSize,
) -> Tensor:
    """DCL (``sigma=None``) or DCLW (the von Mises-Fisher weight at ``sigma``)."""
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
            gather_distributed, n, a.device, name="z_a", minimum=2, why=" (2 negatives)"
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
        positive_index = torch.cat([own + n_global, own])  # (2N,): its positive's column
        lse = similarity_logsumexp(
            anchors,
            candidates,
            scale=scale,
            exclude=torch.stack([self_index, positive_index], dim=1),  # (2N, 2)
            chunk_size=chunk_size,
        )  # (2N,): the log-sum-exp over the 2N_g - 2 negatives
        positive = ((a * scale) * b).sum(dim=1)  # (N,): both directions share it
        if sigma is not None:
            positive = positive * _vmf_weights(a_all, b_all, sigma, offset, n)
        loss = (lse[:n] + lse[n:]) / 2 - positive  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


def _vmf_weights(a_all: Tensor, b_all: Tensor, sigma: float, offset: int, n: int) -> Tensor:
    r"""The weights :math:`2 - N_g \operatorname{softmax}(\langle a, b \rangle / \sigma)` of this
    rank's ``n`` pairs (rows ``offset : offset + n`` of the ``N_g`` pairs), without gradient."""
    with torch.no_grad():
        similarity = (a_all * b_all).sum(dim=1) / sigma  # (N_g,)
        weights = 2 - a_all.shape[0] * torch.softmax(similarity, dim=0)  # (N_g,)
    return weights[offset : offset + n]  # (N,)


class DCLLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.dcl_loss`.

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        normalize: L2-normalize the embeddings first. Default: ``True``.
        gather_distributed: contrast against the embeddings of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import DCLLoss
        >>> criterion = DCLLoss(temperature=0.5)
        >>> criterion
        DCLLoss(temperature=0.5, normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')
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
        return dcl_loss(
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


class DCLWLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.dclw_loss`.

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.1``.
        sigma: :math:`\sigma > 0` of the von Mises-Fisher weight. Default: ``0.5``.
        normalize: L2-normalize the embeddings first. Default: ``True``.
        gather_distributed: contrast against (and weight over) the pairs of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import DCLWLoss
        >>> criterion = DCLWLoss()
        >>> criterion
        DCLWLoss(temperature=0.1, sigma=0.5, normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> criterion(torch.randn(4, 16), torch.randn(4, 16)).shape
        torch.Size([])
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        sigma: float = 0.5,
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.sigma = check_positive("sigma", sigma)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return dclw_loss(
            z_a,
            z_b,
            temperature=self.temperature,
            sigma=self.sigma,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, sigma={self.sigma}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}, "
            f"chunk_size={self.chunk_size!r}"
        )
