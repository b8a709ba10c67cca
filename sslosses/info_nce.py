"""MoCo: InfoNCE of queries against their keys, in-batch keys and queue negatives."""

from __future__ import annotations

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
    check_positive,
    check_reduction,
    check_same_device,
    check_tensor,
)
from sslosses.typing import ChunkSize, Reduction

__all__ = ["InfoNCELoss", "info_nce"]


def _check_negatives(negatives: object, query: Tensor) -> Tensor:
    negatives = check_tensor("negatives", negatives, ndim=2)
    if negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"negatives must have shape (K, {query.shape[1]}) to match the embedding dim D of "
            f"query, got {tuple(negatives.shape)}"
        )
    check_same_device("query", query, "negatives", negatives)
    return negatives


def info_nce(
    query: Tensor,
    key: Tensor,
    *,
    negatives: Tensor | None = None,
    temperature: float = 0.2,
    in_batch_negatives: bool = True,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""InfoNCE (MoCo): cross-entropy of each query against its key and a set of negatives.

    Query :math:`q_n` is paired with key :math:`k_n`; :math:`u_1, \dots, u_K` are extra
    negatives (e.g. a MoCo queue, :meth:`sslosses.MoCoQueue.features`). With
    ``in_batch_negatives=True`` the other keys of the batch are negatives too (MoCo v3):

    .. math::
        \ell_n = -\log \frac{\exp(q_n \cdot k_n / \tau)}
                 {\sum_{m=1}^{N} \exp(q_n \cdot k_m / \tau)
                  + \sum_{j=1}^{K} \exp(q_n \cdot u_j / \tau)}

    and with ``in_batch_negatives=False`` only the queue is (MoCo v1/v2, ``negatives``
    required):

    .. math::
        \ell_n = -\log \frac{\exp(q_n \cdot k_n / \tau)}
                 {\exp(q_n \cdot k_n / \tau) + \sum_{j=1}^{K} \exp(q_n \cdot u_j / \tau)} .

    ``normalize=True`` L2-normalizes queries, keys and negatives (cosine similarities), as
    MoCo does. The log-sum-exp is max-subtracted, so small temperatures stay finite. An empty
    queue (:math:`K = 0`, e.g. :meth:`sslosses.MoCoQueue.features` before the first
    :meth:`~sslosses.MoCoQueue.push`) adds no negatives; with ``in_batch_negatives=False``
    the loss is then exactly 0 with zero gradient (a single logit).

    Gradients flow into ``query``, ``key`` and ``negatives`` as given: MoCo's keys come from a
    momentum encoder and carry no gradient, so pass them detached (or produced under
    :class:`torch.no_grad`), as MoCo v1/v2 do; the function does not detach them for you.
    MoCo v3 computes ``ctr(q1, k2) + ctr(q2, k1)`` and scales each term by :math:`2\tau`;
    this function is one unscaled term. Half-precision inputs (or autocast) are computed in
    float32; float64 stays float64.

    **Large batches.** With an integer ``chunk_size``, the :math:`N \times (N + K)` logit
    matrix is never stored: row blocks of :math:`B` = ``chunk_size`` queries are reduced to
    their log-sum-exp in the forward and recomputed in the backward (a custom autograd
    Function), so the extra memory is :math:`O(B (N + K))`. Value and gradient equal the plain
    path up to rounding. A block holds about :math:`3 \cdot B \cdot (N + K)` floats. ``None``
    always builds the full matrix (the plain path). ``"auto"`` (the default) decides by shape
    and device with the rule of :func:`~sslosses.functional.resolve_chunk_size` (called with
    ``rows = N``, ``cols = N + K``).

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, the keys of all ranks are gathered with gradient
    (:func:`sslosses.distributed.gather`; ranks may hold different batch sizes) and serve as
    in-batch negatives for this rank's queries (MoCo v3's ``concat_all_gather`` with labels
    offset by the rank's position). With ``in_batch_negatives=False`` nothing is gathered; only
    the batch sizes are exchanged, to scale the mean. ``negatives`` are used as given and never
    gathered: pass the same queue on every rank (e.g. one filled with gathered keys) for the
    equivalence below. The returned ``"mean"`` is the local sum scaled by :math:`W / N_g`
    (:math:`N_g` the global batch size), so the mean over ranks equals the single-process loss
    on the concatenated global batch, and each rank's input gradient divided by :math:`W` is
    its slice of the single-process gradient. ``"sum"`` returns :math:`W` times the local sum;
    ``"none"`` returns this rank's rows of the global per-sample loss. A double backward through
    the gather is exact when every rank runs it. Without a process group the loss is computed
    locally.

    Args:
        query: the queries :math:`q` (online encoder).
        key: the keys :math:`k` (momentum encoder), row ``n`` the positive of query ``n``.
        negatives: extra negatives :math:`u`, e.g. a queue, or ``None``. Default: ``None``.
        temperature: :math:`\tau > 0`. Default: ``0.2``.
        in_batch_negatives: use the other keys of the (global) batch as negatives.
            Default: ``True``.
        normalize: L2-normalize queries, keys and negatives first. Default: ``True``.
        gather_distributed: gather the keys of all ranks as in-batch negatives.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: queries per block for the memory-saving blockwise path, ``None`` for the
            plain path, or ``"auto"`` to decide by shape and device
            (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Shape:
        - query: :math:`(N, D)`
        - key: :math:`(N, D)`
        - negatives: :math:`(K, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 if any input is float64).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if an input is not 2-D, shapes or devices do not match, ``query`` has no
            rows, ``negatives`` is missing with ``in_batch_negatives=False``, a query has no
            negative at all (:math:`N < 2` with in-batch negatives and no or an empty queue),
            ``temperature`` is not a finite number > 0, ``chunk_size`` is not > 0 or
            ``"auto"``, or ``reduction`` is unknown. With ``gather_distributed`` and
            :math:`W > 1` the batch-size minimum applies to the global batch :math:`N_g` and
            is raised on every rank together; a rank may hold no rows.

    Examples:
        >>> import torch
        >>> from sslosses.functional import info_nce
        >>> q = torch.randn(8, 32, requires_grad=True)
        >>> k = torch.randn(8, 32)  # keys from the momentum encoder: no gradient
        >>> queue = torch.randn(64, 32)
        >>> v3 = info_nce(q, k)  # MoCo v3: the other keys are negatives
        >>> v2 = info_nce(q, k, negatives=queue, in_batch_negatives=False)  # MoCo v2
        >>> v2.shape, bool(v2 > 0)
        (torch.Size([]), True)
        >>> v2.backward()
        >>> bool(torch.isclose(info_nce(q, k, chunk_size=3), v3))
        True

    References:
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR
        2020, arXiv:1911.05722; Chen et al., "Improved Baselines with Momentum Contrastive
        Learning", arXiv:2003.04297. Official code: facebookresearch/moco, ``moco/builder.py``
        (``MoCo.forward``). Chen et al., "An Empirical Study of Training Self-Supervised Vision
        Transformers", ICCV 2021, arXiv:2104.02057. Official code: facebookresearch/moco-v3,
        ``moco/builder.py`` (``MoCo.contrastive_loss``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    local_minimum = _collectives.local_minimum(gather_distributed, 1)
    dtype = check_embedding_pair("query", query, "key", key, min_batch=local_minimum)
    if negatives is not None:
        negatives = _check_negatives(negatives, query)
        dtype = compute_dtype(query, key, negatives)  # float64 if any of the three is
    scale = 1.0 / check_positive("temperature", temperature)
    check_bool("in_batch_negatives", in_batch_negatives)
    check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    chunk_size = check_chunk_size(chunk_size)
    if not in_batch_negatives and negatives is None:
        raise ValueError(
            "in_batch_negatives=False needs queue negatives: pass negatives of shape (K, D), "
            "got None"
        )
    no_queue = negatives is None or negatives.shape[0] == 0
    minimum = 2 if in_batch_negatives and no_queue else 1  # every query needs a negative
    only_keys = (
        " when the other keys are the only negatives (in_batch_negatives=True, no or empty "
        "negatives)"
        if minimum == 2
        else ""
    )
    if local_minimum and query.shape[0] < minimum:
        raise ValueError(
            f"query must have a batch size of at least {minimum}{only_keys}, got {query.shape[0]}"
        )
    layout = _collectives.global_layout(
        gather_distributed,
        query.shape[0],
        query.device,
        name="query",
        minimum=minimum,
        why=only_keys,
    )
    with no_autocast(query):
        q = upcast(query, dtype)  # (N, D)
        k = upcast(key, dtype)  # (N, D)
        u = None if negatives is None else upcast(negatives, dtype)  # (K, D)
        if normalize:
            q = F.normalize(q, dim=1)
            k = F.normalize(k, dim=1)
            u = None if u is None else F.normalize(u, dim=1)
        positive = ((q * scale) * k).sum(dim=1)  # (N,): l_pos / tau
        if in_batch_negatives:
            keys = k if layout is None else _collectives.gather_rows(k, layout)  # (N_g, D)
            candidates = keys if u is None else torch.cat([keys, u])  # (N_g + K, D)
            lse = similarity_logsumexp(q, candidates, scale=scale, chunk_size=chunk_size)
            loss = lse - positive  # (N,)
        else:
            assert u is not None  # checked above
            lse_neg = similarity_logsumexp(q, u, scale=scale, chunk_size=chunk_size)  # (N,)
            # -log(e^pos / (e^pos + sum e^neg)) = log(1 + e^(lse_neg - pos)), exact for any gap
            # as logaddexp (F.softplus returns x itself past x > 20: 2e-9 off there)
            gap = lse_neg - positive  # (N,)
            loss = torch.logaddexp(gap, torch.zeros_like(gap))  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


class InfoNCELoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.info_nce`.

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.2``.
        in_batch_negatives: use the other keys of the batch as negatives. Default: ``True``.
        normalize: L2-normalize queries, keys and negatives first. Default: ``True``.
        gather_distributed: gather the keys of all ranks. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: queries per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import InfoNCELoss
        >>> criterion = InfoNCELoss(temperature=0.2, in_batch_negatives=False)
        >>> criterion
        InfoNCELoss(temperature=0.2, in_batch_negatives=False, normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> criterion(torch.randn(4, 16), torch.randn(4, 16), torch.randn(32, 16)).shape
        torch.Size([])
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.2,
        in_batch_negatives: bool = True,
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.in_batch_negatives = check_bool("in_batch_negatives", in_batch_negatives)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        return info_nce(
            query,
            key,
            negatives=negatives,
            temperature=self.temperature,
            in_batch_negatives=self.in_batch_negatives,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, in_batch_negatives={self.in_batch_negatives}, "
            f"normalize={self.normalize}, gather_distributed={self.gather_distributed}, "
            f"reduction={self.reduction!r}, chunk_size={self.chunk_size!r}"
        )
