"""MMCR: maximum manifold capacity representations (the nuclear norm of the view centroids)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import check_bool, check_crops, check_non_negative, check_same_shape

__all__ = ["MMCRLoss", "mmcr_loss"]


def mmcr_loss(
    views: Sequence[Tensor],
    *,
    target_views: Sequence[Tensor] | None = None,
    lambd: float = 0.0,
    normalize: bool = True,
    gather_distributed: bool = False,
) -> Tensor:
    r"""MMCR: minus the nuclear norm of the matrix of per-sample view centroids.

    Each sample :math:`i` comes as :math:`V` views :math:`z_i^{(1)}, \dots, z_i^{(V)}`
    (L2-normalized when ``normalize``); :math:`Z_i` is the :math:`V \times D` matrix of its
    views, :math:`c_i = \frac{1}{V} \sum_v z_i^{(v)}` their centroid and :math:`C` the
    :math:`N \times D` matrix of the centroids. With :math:`\|\cdot\|_*` the nuclear norm (the
    sum of the singular values):

    .. math::
        \mathcal{L} = -\|C\|_* + \frac{\lambda}{N} \sum_{i=1}^{N} \|Z_i\|_* .

    Minimizing it spreads the centroids over many directions (a large nuclear norm of
    :math:`C`) while the views of one sample, pulled toward one point on the sphere, shrink
    their centroid's manifold; the optional :math:`\lambda` term penalizes each sample's own
    spread, as the original's ``lmbda`` (``0`` by default there and here, which skips it).

    With ``target_views`` (a momentum network's views, the original's momentum variant), the
    centroid is the average of the two networks' centroids,
    :math:`c_i = \tfrac12 (\bar z_i + \bar z_i^{\,\prime})`, and the :math:`\lambda` term
    uses ``views`` only. The target views are not detached here: compute them without
    gradient (as a momentum encoder is) if they should not be trained.

    **The gradient of the nuclear norm.** For :math:`C = U \Sigma V^\top`,
    :math:`\partial \|C\|_* / \partial C = U V^\top` (the backward of
    ``torch.linalg.svdvals``, which never forms the :math:`1 / (\sigma_i^2 - \sigma_j^2)` terms
    of a full SVD backward). :math:`U V^\top` does not depend on how the singular vectors of a
    repeated singular value are chosen, so the gradient is unique and finite at repeated
    nonzero singular values (e.g. orthonormal centroids, where it is :math:`C` itself). At a
    zero singular value (collapsed or linearly dependent centroids) the nuclear norm is not
    differentiable: the gradient is then the subgradient given by the singular vectors LAPACK
    returns, still finite.

    Half-precision inputs (or autocast) are computed in float32, float64 stays float64 (the
    original computes in the input dtype, and ``svdvals`` has no half-precision kernel).

    **Distributed.** The original all-gathers every rank's views without gradient and puts its
    own back, so each rank's gradient is its slice of the global gradient (DDP's averaging then
    divides the step by :math:`W`). With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, this function gathers only the centroids, with gradient (ranks may hold
    different batch sizes, and a rank may hold none): every rank returns the same
    :math:`-\|C_g\|_*` of the :math:`N_g \times D` global centroids plus its share
    :math:`\lambda W / N_g \sum_{i \in r} \|Z_i\|_*` of the :math:`\lambda` term, so the mean
    over ranks equals the single-process loss on the global batch, and each rank's input
    gradient divided by :math:`W` (DDP's averaging) is its slice of the single-process
    gradient. Without a process group the loss is computed locally.

    Args:
        views: the :math:`V \ge 1` views of the batch, each :math:`(N, D)`, row :math:`i` of
            every view the same sample.
        target_views: optional views of a target (momentum) network, each :math:`(N, D)`;
            their centroid is averaged with that of ``views``. Default: ``None``.
        lambd: :math:`\lambda \ge 0`, the weight of the per-sample nuclear norms (the
            original's ``lmbda``). Default: ``0.0``.
        normalize: L2-normalize every view first (as the original). Default: ``True``.
        gather_distributed: take the nuclear norm of the centroids of all ranks.
            Default: ``False``.

    Shape:
        - views, target_views: sequences of :math:`(N, D)` tensors
        - output: :math:`()`

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``views`` or ``target_views`` is not a list or tuple of floating-point
            tensors, or an option has the wrong type.
        ValueError: if a view is not 2-D, the views differ in shape or device, the batch is
            empty (with ``gather_distributed`` and :math:`W > 1`: the global batch, raised on
            every rank together, while a rank may hold no rows), or ``lambd`` is not a finite
            number >= 0.

    Examples:
        >>> import math
        >>> import torch
        >>> from sslosses.functional import mmcr_loss
        >>> views = [torch.randn(32, 16, requires_grad=True) for _ in range(4)]
        >>> loss = mmcr_loss(views)
        >>> loss.backward()
        >>> eye = torch.eye(4)  # 4 samples whose views agree and are orthonormal
        >>> math.isclose(mmcr_loss([eye, eye]).item(), -4.0, rel_tol=1e-6)
        True

    References:
        Yerxa et al., "Learning Efficient Coding of Natural Images with Maximum Manifold
        Capacity Representations", NeurIPS 2023, arXiv:2303.03307. Official code:
        ThomasYerxa/mmcr, ``mmcr/imagenet/loss_mmcr.py`` (``MMCR_Loss``) and
        ``loss_mmcr_momentum.py`` (``MMCR_Momentum_Loss``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    rows = _collectives.local_minimum(gather_distributed, 1)
    crops = check_crops("views", views, minimum=1, rows=rows, column="feature (column)")
    targets = []
    if target_views is not None:
        targets = check_crops("target_views", target_views, minimum=1, rows=0)
        check_same_shape("views[0]", crops[0], "target_views[0]", targets[0])
    lambd = check_non_negative("lambd", lambd)
    normalize = check_bool("normalize", normalize)
    with no_autocast(crops[0]):
        dtype = compute_dtype(*crops, *targets)
        z = torch.stack([upcast(c, dtype) for c in crops], dim=1)  # (N, V, D)
        if normalize:
            z = F.normalize(z, dim=-1)  # as the original
        centroids = z.mean(dim=1)  # (N, D)
        if targets:
            t = torch.stack([upcast(c, dtype) for c in targets], dim=1)  # (N, V', D)
            centroids = 0.5 * (centroids + (F.normalize(t, dim=-1) if normalize else t).mean(dim=1))
        n = z.shape[0]
        layout = _collectives.global_layout(
            gather_distributed, n, z.device, name="views[0]", minimum=1
        )
        if layout is not None:
            centroids = _collectives.gather_rows(centroids, layout)  # (N_g, D)
        loss: Tensor = -torch.linalg.svdvals(centroids).sum()
        if lambd != 0.0:  # the original skips the per-sample SVDs too
            spread: Tensor = torch.linalg.svdvals(z).sum()  # sum over i of ||Z_i||_*
            loss = loss + lambd * spread * _collectives.mean_weight(n, layout)
    return loss


class MMCRLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.mmcr_loss`.

    Args:
        lambd: :math:`\lambda \ge 0`, the weight of the per-sample nuclear norms.
            Default: ``0.0``.
        normalize: L2-normalize every view first. Default: ``True``.
        gather_distributed: take the nuclear norm of the centroids of all ranks.
            Default: ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import MMCRLoss
        >>> criterion = MMCRLoss(lambd=0.005)
        >>> criterion
        MMCRLoss(lambd=0.005, normalize=True, gather_distributed=False)
        >>> criterion([torch.randn(8, 16), torch.randn(8, 16)]).shape
        torch.Size([])
    """

    def __init__(
        self, *, lambd: float = 0.0, normalize: bool = True, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        self.lambd = check_non_negative("lambd", lambd)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)

    def forward(
        self, views: Sequence[Tensor], target_views: Sequence[Tensor] | None = None
    ) -> Tensor:
        return mmcr_loss(
            views,
            target_views=target_views,
            lambd=self.lambd,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"lambd={self.lambd}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}"
        )
