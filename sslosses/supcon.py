"""SupCon: the supervised contrastive loss (Khosla et al. 2020) over any number of views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._chunked_ce import similarity_logsumexp
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_choice,
    check_chunk_size,
    check_crops,
    check_min_batch,
    check_positive,
    check_reduction,
    check_same_device,
    check_tensor,
)
from sslosses.typing import ChunkSize, ContrastMode, Reduction

__all__ = ["SupConLoss", "supcon_loss"]

_CONTRAST_MODES: tuple[ContrastMode, ...] = ("all", "one")


def supcon_loss(
    views: Tensor | Sequence[Tensor],
    labels: Tensor | None = None,
    *,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    contrast_mode: ContrastMode = "all",
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
    chunk_size: ChunkSize = "auto",
) -> Tensor:
    r"""The supervised contrastive loss (SupCon): every same-label view is a positive.

    The :math:`V` views of :math:`N` samples give :math:`VN` embeddings :math:`u_j` (view-major:
    all first views, then all second views, ...), each with its sample's label :math:`y_j`.
    With :math:`s_{ij} = \langle u_i, u_j \rangle / \tau` (cosine similarities when
    ``normalize=True``), the positives of anchor :math:`i` are the other embeddings of its
    label, :math:`P(i) = \{p \ne i : y_p = y_i\}`, and

    .. math::
        \ell_i = -\frac{\tau}{\tau_b} \frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip})}{\sum_{j \ne i} \exp(s_{ij})}
        = \frac{\tau}{\tau_b} \Bigl( \log \sum_{j \ne i} \exp(s_{ij})
            - \frac{\langle u_i, S_{y_i} - u_i \rangle}{\tau \, |P(i)|} \Bigr),

    where :math:`S_c` is the sum of all embeddings of label :math:`c` and :math:`\tau_b` the
    ``base_temperature`` (the original's factor :math:`\tau / \tau_b`, 1 at the defaults).
    ``contrast_mode="all"`` takes every embedding as an anchor, ``"one"`` only the first
    view of each sample (all :math:`VN` embeddings stay candidates); the loss is the mean of
    :math:`\ell_i` over the anchors. With ``labels=None`` each sample is its own label: the
    positives of an anchor are its sample's other views, and for :math:`V = 2` with
    :math:`\tau = \tau_b` this is :func:`~sslosses.functional.nt_xent` exactly.

    The positive term is computed from the label sums :math:`S_c` (:math:`O(N D)`), never from
    the :math:`VN \times VN` matrix; labels may be any integers (only equality matters).
    ``reduction="none"`` returns, per sample, the mean of its anchors' :math:`\ell_i` (its
    :math:`V` views with ``"all"``, its first view with ``"one"``), so its mean is the
    ``"mean"`` loss. The self-similarity is masked to :math:`-\infty` and the log-sum-exp is
    max-subtracted, so small temperatures stay finite. Half-precision inputs (or autocast) are
    computed in float32; float64 stays float64.

    **Anchors without a positive.** With one view (:math:`V = 1`), an anchor whose label no
    other sample has has no positive (:math:`|P(i)| = 0`). Its :math:`\ell_i` is 0 and it
    sends no gradient, but it still counts in the mean over anchors, as in the original's
    current code (which maps :math:`|P(i)| = 0` to 1; its first release divided by zero and
    returned NaN). The loss stays finite. ``labels=None`` needs :math:`V \ge 2`.

    **Large batches.** With an integer ``chunk_size``, the anchors-by-candidates logit matrix
    is never stored: row blocks of :math:`B` = ``chunk_size`` anchors are reduced to their
    log-sum-exp in the forward and recomputed in the backward (the blockwise path of
    :func:`~sslosses.functional.nt_xent`), so the extra memory is :math:`O(B V N)` instead of
    :math:`O(V^2 N^2)`, with the value and gradient of the plain path up to rounding.
    ``None`` always builds the full matrix; ``"auto"`` (the default) decides by shape and
    device with :func:`~sslosses.functional.resolve_chunk_size`, called with ``rows`` = the
    anchors (:math:`VN`, or :math:`N` with ``"one"``) and ``cols`` = :math:`V N_g`.

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, the views and the labels of all ranks are gathered (the views with
    gradient; ranks may hold different batch sizes, and a rank may hold none): this rank's
    anchors are contrasted against the :math:`V N_g` embeddings of the global batch, and the
    positives are every same-label embedding of the global batch. The returned ``"mean"`` is
    the local sum scaled by :math:`W / N_g`, so the mean over ranks equals the single-process
    loss on the concatenated global batch, and each rank's input gradient divided by
    :math:`W` (DDP's averaging) is its slice of the single-process gradient. ``"sum"``
    returns :math:`W` times the local sum; ``"none"`` this rank's rows of the global
    per-sample loss. Every rank passes ``labels``, or every rank passes ``None``. Without a
    process group the loss is computed locally.

    Args:
        views: the embeddings, either a list or tuple of :math:`V` tensors :math:`(N, D)`
            (row ``n`` of every view is sample ``n``, as the two arguments of
            :func:`~sslosses.functional.nt_xent`), or one :math:`(N, V, D)` tensor (the
            original's ``features`` layout).
        labels: the class of each sample, an integer tensor :math:`(N,)`, or ``None`` for
            the self-supervised case (each sample its own class). Default: ``None``.
        temperature: :math:`\tau > 0`. Default: ``0.07``.
        base_temperature: :math:`\tau_b > 0`; the loss is scaled by :math:`\tau / \tau_b`.
            Default: ``0.07``.
        contrast_mode: ``"all"`` (every view is an anchor) or ``"one"`` (the first view only).
            Default: ``"all"``.
        normalize: L2-normalize the embeddings first (cosine similarity). The original
            expects normalized features and does not normalize. Default: ``True``.
        gather_distributed: contrast against the views and labels of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the memory-saving blockwise path, ``None`` for the
            plain path, or ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`).
            Default: ``"auto"``.

    Shape:
        - views: :math:`V` tensors :math:`(N, D)`, or :math:`(N, V, D)`
        - labels: :math:`(N,)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``views`` is not a 3-D tensor or a list or tuple of tensors, a view is
            not a floating-point tensor, ``labels`` is not an integer tensor, or an option has
            the wrong type.
        ValueError: if the views' shapes or devices differ, a view is not 2-D, the batch is
            too small (:math:`N < 2`; with ``gather_distributed`` and :math:`W > 1` the global
            :math:`N_g < 2`, raised on every rank together, while a rank may hold no rows),
            ``labels`` is not :math:`(N,)` on the views' device, ``labels=None`` with one view,
            ``temperature`` or ``base_temperature`` is not a finite number > 0,
            ``contrast_mode`` or ``reduction`` is unknown, or ``chunk_size`` is not > 0 or
            ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses.functional import nt_xent, supcon_loss
        >>> z_a = torch.randn(8, 32, requires_grad=True)
        >>> z_b = torch.randn(8, 32, requires_grad=True)
        >>> labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        >>> loss = supcon_loss([z_a, z_b], labels, temperature=0.1)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> loss.backward()
        >>> chunked = supcon_loss([z_a, z_b], labels, temperature=0.1, chunk_size=4)
        >>> bool(torch.isclose(chunked, loss))
        True
        >>> features = torch.stack([z_a, z_b], dim=1)  # the original's (N, V, D) layout
        >>> bool(torch.isclose(supcon_loss(features, labels, temperature=0.1), loss))
        True
        >>> unsupervised = supcon_loss([z_a, z_b], temperature=0.5, base_temperature=0.5)
        >>> bool(torch.isclose(unsupervised, nt_xent(z_a, z_b, temperature=0.5)))
        True

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362.
        Official code: HobbitLong/SupContrast, ``losses.py`` (``SupConLoss``; its ``mask``
        argument, an explicit sample-by-sample positive mask, has no counterpart here).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    minimum = _collectives.local_minimum(gather_distributed, 2)
    embeddings = _check_views(views, minimum)
    tau = check_positive("temperature", temperature)
    scale, factor = 1.0 / tau, tau / check_positive("base_temperature", base_temperature)
    contrast_mode = check_choice("contrast_mode", contrast_mode, _CONTRAST_MODES)
    check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    chunk_size = check_chunk_size(chunk_size)
    n_views, first = len(embeddings), embeddings[0]
    n = first.shape[0]
    if labels is None:
        if n_views < 2:
            raise ValueError(
                "supcon_loss with labels=None needs at least 2 views (a sample's other views "
                f"are its only positives), got {n_views} view; pass labels or more views"
            )
    else:
        labels = _check_labels(labels, first)
    dtype = compute_dtype(*embeddings)
    with no_autocast(first):
        u = [upcast(v, dtype) for v in embeddings]  # V x (N, D)
        if normalize:
            u = [F.normalize(v, dim=1) for v in u]
        d = first.shape[1]
        layout = _collectives.global_layout(
            gather_distributed, n, first.device, name="views", minimum=2
        )
        local = torch.stack(u, dim=1)  # (N, V, D)
        if layout is not None:
            offset, n_global = layout.offset, layout.total  # N_g >= 2; this rank's N may be 0
            flat = _collectives.gather_rows(local.reshape(n, n_views * d), layout)  # (N_g, V D)
            everything = flat.reshape(n_global, n_views, d)  # (N_g, V, D)
            if labels is not None:
                labels = _collectives.gather_rows(labels, layout)  # (N_g,)
        else:
            offset, n_global, everything = 0, n, local
        candidates = everything.transpose(0, 1).reshape(n_views * n_global, d)  # (V N_g, D)
        own = torch.arange(offset, offset + n, device=first.device)  # (N,)
        if contrast_mode == "all":
            anchors = torch.cat(u)  # (V N, D), view-major as the candidates
            self_index = torch.cat([own + v * n_global for v in range(n_views)])  # (V N,)
        else:
            anchors = u[0]  # (N, D)
            self_index = own
        lse = similarity_logsumexp(
            anchors, candidates, scale=scale, exclude=self_index, chunk_size=chunk_size
        )  # (A,)
        # each sample's class id in [0, N_g); the label sums S_c and sizes (in samples)
        ids = _class_ids(labels, n_global, first.device)  # (N_g,)
        sums = everything.new_zeros(n_global, d).index_add(0, ids, everything.sum(dim=1))
        sizes = everything.new_zeros(n_global).index_add(0, ids, everything.new_ones(n_global))
        mine = ids[offset : offset + n]  # (N,)
        repeats = n_views if contrast_mode == "all" else 1
        class_sum = sums[mine].repeat(repeats, 1)  # (A, D)
        positives = (n_views * sizes[mine] - 1).repeat(repeats)  # (A,): |P(i)|
        positive = ((anchors * scale) * (class_sum - anchors)).sum(dim=1)  # (A,): sum of s_ip
        per_anchor = lse - positive / positives.clamp(min=1)  # (A,)
        per_anchor = torch.where(positives > 0, per_anchor, torch.zeros_like(per_anchor))
        loss = factor * per_anchor.reshape(repeats, n).mean(dim=0)  # (N,)
    return _collectives.reduce_over_ranks(loss, reduction, layout)


def _check_views(views: object, minimum: int) -> list[Tensor]:
    """The views as a list of ``V`` tensors ``(N, D)``: from a sequence or one ``(N, V, D)``."""
    if isinstance(views, Tensor):
        tensor = check_tensor("views", views)
        if tensor.dim() != 3:
            raise ValueError(
                "views must be a list or tuple of (N, D) tensors or one (N, V, D) tensor, got a "
                f"{tensor.dim()}-D tensor with shape {tuple(tensor.shape)}"
            )
        check_min_batch("views", tensor, minimum)
        if tensor.shape[1] < 1 or tensor.shape[2] < 1:
            raise ValueError(
                f"views must have at least 1 view and 1 feature, got shape {tuple(tensor.shape)}"
            )
        return list(tensor.unbind(dim=1))
    return check_crops("views", views, minimum=1, rows=minimum, column="feature (column)")


def _check_labels(labels: object, first: Tensor) -> Tensor:
    """``labels`` as an int64 tensor ``(N,)`` on the views' device."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != first.shape[0]:
        raise ValueError(
            f"labels must have shape (N,) = ({first.shape[0]},), one per sample, got "
            f"{tuple(labels.shape)}"
        )
    check_same_device("labels", labels, "views", first)
    return labels.long()


def _class_ids(labels: Tensor | None, n_global: int, device: torch.device) -> Tensor:
    """Each sample's label as an id in ``[0, N_g)`` (equal labels, equal ids); ``None``: its row.

    Sorting keeps the shapes static (no ``torch.unique``), so this also compiles.
    """
    if labels is None:
        return torch.arange(n_global, device=device)
    ordered, order = torch.sort(labels)  # (N_g,)
    starts = torch.ones_like(ordered)
    starts[1:] = ordered[1:] != ordered[:-1]  # 1 where a new label begins
    ranks = torch.cumsum(starts, dim=0) - 1  # (N_g,): the id of each sorted sample
    return torch.empty_like(ranks).scatter_(0, order, ranks)


class SupConLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.supcon_loss`.

    Args:
        temperature: :math:`\tau > 0`. Default: ``0.07``.
        base_temperature: :math:`\tau_b > 0` (the loss is scaled by :math:`\tau / \tau_b`).
            Default: ``0.07``.
        contrast_mode: ``"all"`` or ``"one"`` (only the first view is an anchor).
            Default: ``"all"``.
        normalize: L2-normalize the embeddings first. Default: ``True``.
        gather_distributed: contrast against the views and labels of all ranks.
            Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.
        chunk_size: anchors per block for the blockwise path, ``None`` for the plain path or
            ``"auto"`` (:func:`~sslosses.functional.resolve_chunk_size`). Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import SupConLoss
        >>> criterion = SupConLoss(temperature=0.1)
        >>> criterion
        SupConLoss(temperature=0.1, base_temperature=0.07, contrast_mode='all', normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')
        >>> views = [torch.randn(4, 16), torch.randn(4, 16)]
        >>> criterion(views, torch.tensor([0, 1, 0, 1])).shape
        torch.Size([])
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        base_temperature: float = 0.07,
        contrast_mode: ContrastMode = "all",
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.base_temperature = check_positive("base_temperature", base_temperature)
        self.contrast_mode: ContrastMode = check_choice(
            "contrast_mode", contrast_mode, _CONTRAST_MODES
        )
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(self, views: Tensor | Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        return supcon_loss(
            views,
            labels,
            temperature=self.temperature,
            base_temperature=self.base_temperature,
            contrast_mode=self.contrast_mode,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
            f"contrast_mode={self.contrast_mode!r}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}, "
            f"chunk_size={self.chunk_size!r}"
        )
