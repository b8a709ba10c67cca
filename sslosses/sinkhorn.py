"""Sinkhorn-Knopp equipartition of samples over prototypes (SwAV's ``distributed_sinkhorn``)."""

from __future__ import annotations

import torch
from torch import Tensor

from sslosses import _collectives, distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_min_batch,
    check_positive,
    check_positive_int,
    check_tensor,
)

__all__ = ["sinkhorn"]


def sinkhorn(
    scores: Tensor,
    *,
    epsilon: float = 0.05,
    iterations: int = 3,
    gather_distributed: bool = False,
) -> Tensor:
    r"""Soft assignments of samples to prototypes by the Sinkhorn-Knopp algorithm (SwAV).

    Starting from :math:`P = \exp(S / \varepsilon)`, SwAV alternately rescales the prototypes
    (each prototype gets total mass :math:`1/K`) and the samples (each sample gets mass
    :math:`1/B`), ``iterations`` times, then multiplies by :math:`B` so that every sample's
    assignment sums to 1. Written with the dual potentials :math:`a \in \mathbb{R}^K`,
    :math:`b \in \mathbb{R}^B`, starting from :math:`b^{(0)} = 0`:

    .. math::
        a_k^{(t)} = \log \sum_{n} \exp\!\left(\frac{s_{nk}}{\varepsilon} - b_n^{(t-1)}\right),
        \qquad
        b_n^{(t)} = \log \sum_{k} \exp\!\left(\frac{s_{nk}}{\varepsilon} - a_k^{(t)}\right),

    .. math::
        Q_{nk} = \exp\!\left(\frac{s_{nk}}{\varepsilon} - a_k^{(T)} - b_n^{(T)}\right),
        \qquad t = 1, \dots, T.

    The last step applied is the per-sample normalization, so each row of :math:`Q` sums to 1
    exactly; the per-prototype totals :math:`\sum_n Q_{nk}` approach :math:`B/K` as
    ``iterations`` grows (after SwAV's default of 3 they are only approximately equal). The
    constant factors of the original (``/ K``, ``/ B``, ``* B`` and the initial division by the
    total) cancel and are left out. The result is invariant to adding a constant per prototype
    (a column of ``scores``); a constant per sample changes it, less so as ``iterations``
    grows.

    This reproduces ``distributed_sinkhorn`` of the official SwAV code with one deliberate
    difference: the original exponentiates ``scores / epsilon`` directly, which overflows to
    ``inf`` (and then ``nan``) once ``scores / epsilon`` exceeds about 88 in float32 or 709 in
    float64, e.g. cosine scores near 1 with ``epsilon=0.01`` in float32. Here the first
    per-prototype normalization is a log-sum-exp with the maximum subtracted; its result is
    then shifted per sample so that each sample's largest entry is 1 (the per-sample step that
    follows cancels the shift) and exponentiated once, and the remaining normalizations are the
    original's rescalings of that matrix (scaling vectors, no further exponential). Every
    entry lies in [0, 1], no row or column underflows as a whole, and the result is finite for
    ``epsilon`` down to 0.01 and ``|scores|`` up to ``1 / epsilon`` and beyond; wherever the
    original is finite, both agree to rounding (tested in float64). It costs one exponential
    pass over the scores more than the original, not one per normalization.

    The computation runs under :class:`torch.no_grad` and the result carries no gradient, as the
    codes are targets. Half-precision inputs (or autocast) are computed and returned in float32;
    float64 stays float64.

    With ``gather_distributed=True`` and a process group of size :math:`W > 1`, the
    per-prototype sums run over the samples of all ranks (``torch.distributed.all_reduce`` of
    a maximum and a sum of exponentials, an exact log-sum-exp across ranks), so :math:`B` is
    the global batch size as in ``distributed_sinkhorn``; each rank gets back the rows of its
    own samples, identical to its slice of :func:`sinkhorn` on the concatenated global batch.
    Ranks may hold different numbers of rows, none included (the global batch needs one; when
    it has none every rank raises the same error). Without a process group it acts locally.

    Args:
        scores: prototype scores :math:`s_{nk}`, e.g. ``normalize(z) @ prototypes.T``.
        epsilon: entropic regularization :math:`\varepsilon` (SwAV's ``--epsilon``).
            Default: ``0.05``.
        iterations: number of Sinkhorn iterations :math:`T` (SwAV's
            ``--sinkhorn_iterations``). Default: ``3``.
        gather_distributed: normalize the prototype marginals over the samples of all ranks.
            Default: ``False``.

    Shape:
        - scores: :math:`(N, K)`, :math:`N` samples and :math:`K` prototypes.
        - output: :math:`(N, K)`, non-negative, each row summing to 1.

    Returns:
        The assignments :math:`Q` in float32 (float64 for float64 input), without gradient.

    Raises:
        TypeError: if ``scores`` is not a floating-point tensor, ``iterations`` not an int or
            ``gather_distributed`` not a bool.
        ValueError: if ``scores`` is not 2-D or has no rows (with ``gather_distributed`` and
            :math:`W > 1`: no rank has any) or no columns, ``epsilon <= 0`` or
            ``iterations <= 0``.

    Examples:
        >>> import torch
        >>> from sslosses.functional import sinkhorn
        >>> scores = torch.nn.functional.normalize(torch.randn(64, 10), dim=1)
        >>> q = sinkhorn(scores, epsilon=0.05, iterations=3)
        >>> q.shape, q.requires_grad
        (torch.Size([64, 10]), False)
        >>> bool(torch.allclose(q.sum(dim=1), torch.ones(64)))
        True
        >>> bool(torch.isfinite(sinkhorn(100 * scores, epsilon=0.01)).all())  # exp(1e4) inside
        True

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882. Official code: facebookresearch/swav,
        ``main_swav.py`` (``distributed_sinkhorn``). Cuturi, "Sinkhorn Distances", NeurIPS
        2013, arXiv:1306.0895.
    """
    gather_distributed = _collectives.check_gather_distributed(gather_distributed)
    rows = _collectives.local_minimum(gather_distributed, 1)
    checked = _check_scores("scores", scores, rows=rows)
    epsilon = check_positive("epsilon", epsilon)
    iterations = check_positive_int("iterations", iterations)
    _collectives.global_layout(gather_distributed, checked.shape[0], checked.device, name="scores")
    return _sinkhorn(checked, epsilon, iterations, gather_distributed)


def _check_scores(name: str, scores: object, *, rows: int = 1) -> Tensor:
    scores = check_tensor(name, scores, ndim=2)
    check_min_batch(name, scores, rows)
    if scores.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least 1 prototype (column), got shape {tuple(scores.shape)}"
        )
    return scores


def _logsumexp_over_samples(x: Tensor, across_ranks: bool) -> Tensor:
    """``log(sum_n exp(x[n, k]))`` of an ``(N, K)`` tensor, summed over all ranks if asked."""
    if not across_ranks:
        return torch.logsumexp(x, dim=0)  # (K,)
    # the peak of a rank without rows is -inf (amax rejects an empty dim)
    peak = x.amax(dim=0) if x.shape[0] else x.new_full(x.shape[1:], -torch.inf)  # (K,)
    peak = _collectives.all_reduce_(peak, "max")
    total = _collectives.all_reduce_(torch.exp(x - peak).sum(dim=0), "sum")  # (K,)
    return peak + torch.log(total)


def _sinkhorn(
    scores: Tensor,
    epsilon: float,
    iterations: int,
    gather_distributed: bool,
    samples: Tensor | None = None,
) -> Tensor:
    """:func:`sinkhorn` on validated arguments (shared with SwAV, DINO and iBOT).

    ``samples`` (``(N,)`` bool, optional) marks the rows that take part: the per-prototype sums
    run over those rows only, so their assignments are those of :func:`sinkhorn` on the marked
    rows alone (a fixed-shape form of ``sinkhorn(scores[samples])``); the other rows get a
    row-normalized output that means nothing (``nan`` when no row is marked anywhere).
    """
    across_ranks = gather_distributed and distributed.world_size() > 1
    dtype = compute_dtype(scores)
    with torch.no_grad(), no_autocast(scores):
        logits = upcast(scores.detach(), dtype) / epsilon  # (N, K)
        marked = logits if samples is None else logits.masked_fill(~samples[:, None], -torch.inf)
        # iteration 1's per-prototype step, exactly in the log domain: a^(1) (finite where the
        # original's exp(scores / epsilon) overflows)
        col = _logsumexp_over_samples(marked, across_ranks)  # (K,)
        # Its result exp(logits - a) shifted per sample so that each row's largest entry is 1
        # (a per-sample factor, which the per-sample step that follows cancels): no row
        # underflows, and each column, which summed to 1, keeps an entry of at least 1 / B.
        # From here on the original's rescalings, as scaling vectors of this one matrix: one
        # exponential in all instead of one per normalization.
        kernel = logits - col  # (N, K)
        kernel = kernel.sub_(kernel.amax(dim=1, keepdim=True)).exp_()  # (N, K) in [0, 1]
        weight = None if samples is None else samples.to(dtype)  # (N,): 1 takes part, 0 not
        row = 1.0 / kernel.sum(dim=1)  # (N,): iteration 1's per-sample step, rows sum to 1
        if iterations > 1:
            # the global number of samples B: each prototype gets B / K, so that the total
            # mass stays B in both steps (1 instead would grow it by B / K per iteration)
            count = logits.new_full((), logits.shape[0]) if weight is None else weight.sum()
            if across_ranks:
                count = _collectives.all_reduce_(count, "sum")
            share = count / logits.shape[1]
            for _ in range(iterations - 1):
                mass = (row if weight is None else row * weight) @ kernel  # (K,)
                if across_ranks:
                    mass = _collectives.all_reduce_(mass, "sum")
                prototype = share / mass  # (K,): each prototype's total becomes B / K
                row = 1.0 / (kernel @ prototype)  # (N,): each sample's total becomes 1
            kernel.mul_(prototype)
        return kernel.mul_(row[:, None])  # (N, K)
