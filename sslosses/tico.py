"""TiCo: transformation invariance and covariance contrast, with its running covariance as state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_bool,
    check_embedding_pair,
    check_non_negative,
    check_positive_int,
    check_real,
    check_reduction,
    check_same_device,
    check_tensor,
)
from sslosses.typing import Reduction

__all__ = ["TiCoCovariance", "TiCoLoss", "tico_loss"]


def tico_loss(
    z_a: Tensor,
    z_b: Tensor,
    covariance: Tensor,
    *,
    rho: float = 8.0,
    normalize: bool = True,
    gather_distributed: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""TiCo: one minus the cosine of the two views plus :math:`\rho` times a covariance contrast.

    With the rows L2-normalized (when ``normalize``) and :math:`C` the running covariance of
    the first view's embeddings (:class:`sslosses.TiCoCovariance`, updated with this batch
    before the loss), each sample's term is

    .. math::
        \ell_i = 1 - \langle \hat z_{a,i}, \hat z_{b,i} \rangle
            + \rho \, \hat z_{a,i}^\top C \, \hat z_{a,i},
        \qquad \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} \ell_i .

    The first term pulls the two views of a sample together (transformation invariance); the
    second penalizes the directions the recent batches already occupy, which spreads the
    embeddings out (covariance contrast). :math:`C` is not differentiated. In a training step,
    update the covariance first and pass its new value:

    .. code-block:: python

        covariance.update(z_a)
        loss = SF.tico_loss(z_a, z_b, covariance.covariance)

    which is what lightly's ``TiCoLoss`` computes in one ``forward`` (its
    :math:`C \leftarrow \beta C + (1 - \beta) \hat Z_a^\top \hat Z_a / N` is applied before the
    loss and stored as a side effect). Here the state is explicit and saved in checkpoints.

    Half-precision inputs (or autocast) are computed in float32, float64 stays float64.

    **Distributed.** Given :math:`C`, every term is per sample, so no embedding is gathered:
    with ``gather_distributed=True`` and a process group of size :math:`W > 1` (ranks may hold
    different batch sizes, and a rank may hold none), ``"mean"`` returns the local sum times
    :math:`W / N_g`, so the mean over ranks equals the single-process loss on the global batch
    and each rank's input gradient divided by :math:`W` is its slice of the single-process
    gradient; the covariance of the global batch comes from :class:`sslosses.TiCoCovariance`
    with ``gather_distributed=True`` (an all-reduce of :math:`D^2` values, no gradient), as
    lightly's ``gather_distributed`` (which gathers both views with gradient instead).
    ``"sum"`` returns :math:`W` times the local sum, ``"none"`` this rank's per-sample terms.

    Args:
        z_a: the first view's embeddings (lightly: the online network's output).
        z_b: the second view's embeddings (lightly: the momentum network's output).
        covariance: the running covariance :math:`C`, :math:`(D, D)`, already updated with
            this batch (``covariance`` of :class:`sslosses.TiCoCovariance`).
        rho: :math:`\rho \ge 0`, the weight of the covariance contrast. Default: ``8.0``
            (the paper's and lightly's).
        normalize: L2-normalize the rows first (as the original). Default: ``True``.
        gather_distributed: scale the reduction so that the mean over ranks is the global
            loss (see above). Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Shape:
        - z_a, z_b: :math:`(N, D)`
        - covariance: :math:`(D, D)`
        - output: :math:`()` for ``"mean"``/``"sum"``, :math:`(N,)` for ``"none"``.

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or an option has the wrong type.
        ValueError: if ``z_a`` and ``z_b`` are not 2-D tensors of the same shape and device
            with :math:`N \ge 1` (with ``gather_distributed`` and :math:`W > 1`: the global
            batch, raised on every rank together, while a rank may hold no rows),
            ``covariance`` is not :math:`(D, D)` on their device, ``rho`` is not a finite
            number >= 0, or ``reduction`` is unknown.

    Examples:
        >>> import torch
        >>> import sslosses
        >>> from sslosses.functional import tico_loss
        >>> z_a, z_b = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16)
        >>> covariance = sslosses.TiCoCovariance(16)
        >>> covariance.update(z_a)
        >>> loss = tico_loss(z_a, z_b, covariance.covariance)
        >>> loss.backward()
        >>> bool(tico_loss(z_a, z_a, torch.zeros(16, 16)).abs() < 1e-6)  # equal views, C = 0
        True

    References:
        Zhu et al., "TiCo: Transformation Invariance and Covariance Contrast for
        Self-Supervised Visual Representation Learning", arXiv:2206.10698 (2022), Algorithm 1.
        The paper has no official code; the implementation reproduced is lightly's
        ``lightly/loss/tico_loss.py`` (``TiCoLoss``, after sayannag/TiCo-pytorch).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    minimum = _collectives.local_minimum(gather_distributed, 1)
    check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=minimum)
    d = z_a.shape[1]
    cov = _check_covariance(covariance, d, z_a)
    rho = check_non_negative("rho", rho)
    normalize = check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    with no_autocast(z_a):
        dtype = compute_dtype(z_a, z_b, cov)
        a, b = upcast(z_a, dtype), upcast(z_b, dtype)
        if normalize:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)  # as lightly
        c = upcast(cov.detach(), dtype)
        invariance = 1.0 - (a * b).sum(dim=1)  # (N,)
        contrast = ((a @ c) * a).sum(dim=1)  # (N,) a_i^T C a_i
        loss = invariance + rho * contrast
        layout = _collectives.global_layout(
            gather_distributed, a.shape[0], a.device, name="z_a", minimum=1
        )
    return _collectives.reduce_over_ranks(loss, reduction, layout)


def _check_covariance(covariance: object, d: int, z_a: Tensor) -> Tensor:
    cov = check_tensor("covariance", covariance, ndim=2)
    if tuple(cov.shape) != (d, d):
        raise ValueError(
            f"covariance must have shape (D, D) = ({d}, {d}) for embeddings of D={d} "
            f"features, got shape {tuple(cov.shape)}"
        )
    check_same_device("z_a", z_a, "covariance", cov)
    return cov


class TiCoLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.tico_loss`.

    The running covariance is a separate component, :class:`sslosses.TiCoCovariance`, updated
    explicitly before the loss and passed to :meth:`forward`.

    Args:
        rho: :math:`\rho \ge 0`, the weight of the covariance contrast. Default: ``8.0``.
        normalize: L2-normalize the rows first. Default: ``True``.
        gather_distributed: scale the reduction so that the mean over ranks is the global
            loss. Default: ``False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. Default: ``"mean"``.

    Examples:
        >>> import torch
        >>> from sslosses import TiCoCovariance, TiCoLoss
        >>> criterion, covariance = TiCoLoss(), TiCoCovariance(16)
        >>> criterion
        TiCoLoss(rho=8.0, normalize=True, gather_distributed=False, reduction='mean')
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> covariance.update(z_a)
        >>> criterion(z_a, z_b, covariance.covariance).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        rho: float = 8.0,
        normalize: bool = True,
        gather_distributed: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.rho = check_non_negative("rho", rho)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        self.reduction: Reduction = check_reduction(reduction)

    def forward(self, z_a: Tensor, z_b: Tensor, covariance: Tensor) -> Tensor:
        return tico_loss(
            z_a,
            z_b,
            covariance,
            rho=self.rho,
            normalize=self.normalize,
            gather_distributed=self.gather_distributed,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"rho={self.rho}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}, reduction={self.reduction!r}"
        )


class TiCoCovariance(nn.Module):
    r"""TiCo's running covariance: an exponential moving average of :math:`\hat Z^\top \hat Z / N`.

    .. math::
        C \leftarrow \beta \, C + (1 - \beta) \, \frac{1}{N} \sum_{i=1}^{N}
            \hat z_i \hat z_i^\top

    ``covariance`` is a persistent buffer (saved in checkpoints), zero at the start as in
    lightly's ``TiCoLoss``. It changes only through :meth:`update`, an explicit step before
    the loss (lightly updates it inside ``forward``), never inside a forward pass. With
    ``gather_distributed=True`` and a process group of size :math:`W > 1`, the batch term is
    the exact mean over all ranks' rows (the :math:`D \times D` sums and the row counts are
    all-reduced, so unequal batches are weighted correctly and a rank may hold none), and
    every rank holds the same covariance. Without a process group it acts locally.

    Args:
        dim: the embedding dimension :math:`D`.
        beta: the EMA coefficient :math:`\beta \in [0, 1]`. Default: ``0.9`` (the paper's and
            lightly's).
        normalize: L2-normalize the rows first (as :func:`~sslosses.functional.tico_loss`
            does by default). Default: ``True``.
        gather_distributed: average over the rows of all ranks. Default: ``False``.
        dtype: the dtype of ``covariance``. Default: ``torch.float32``.
        device: the device of ``covariance``. Default: ``None`` (the current default device).

    Shape:
        - covariance: :math:`(D, D)`.

    Raises:
        TypeError: if ``dim`` is not an ``int``, ``beta`` not a real number, ``normalize`` or
            ``gather_distributed`` not a ``bool``, or ``dtype`` not floating-point.
        ValueError: if ``dim <= 0`` or ``beta`` is outside :math:`[0, 1]`.

    Examples:
        >>> import torch
        >>> from sslosses import TiCoCovariance
        >>> covariance = TiCoCovariance(2, beta=0.5)
        >>> covariance
        TiCoCovariance(dim=2, beta=0.5, normalize=True, gather_distributed=False)
        >>> covariance.update(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
        >>> covariance.covariance
        tensor([[0.2500, 0.0000],
                [0.0000, 0.2500]])
    """

    covariance: Tensor

    def __init__(
        self,
        dim: int,
        *,
        beta: float = 0.9,
        normalize: bool = True,
        gather_distributed: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.beta = check_real("beta", beta, low=0.0, high=1.0)
        self.normalize = check_bool("normalize", normalize)
        self.gather_distributed = check_gather_distributed(gather_distributed)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        self.register_buffer(
            "covariance", torch.zeros(self.dim, self.dim, dtype=dtype, device=device)
        )

    @torch.no_grad()
    def update(self, z: Tensor) -> None:
        """One EMA step of ``covariance`` towards this batch's :math:`\\hat Z^\\top \\hat Z / N`.

        Args:
            z: the embeddings :math:`(N, D)` (TiCo: the first view's, ``z_a``).

        Raises:
            TypeError: if ``z`` is not a floating-point tensor.
            ValueError: if ``z`` is not 2-D with :math:`D` columns on the covariance's device,
                or holds no rows (with ``gather_distributed`` and :math:`W > 1`: no rank holds
                any, raised on every rank together; a rank may hold none).
        """
        rows = check_tensor("z", z, ndim=2)
        if rows.shape[1] != self.dim:
            raise ValueError(
                f"z must have D={self.dim} columns like the covariance, got shape "
                f"{tuple(rows.shape)}"
            )
        if rows.shape[0] < _collectives.local_minimum(self.gather_distributed, 1):
            raise ValueError(f"z must have at least 1 row, got shape {tuple(rows.shape)}")
        check_same_device("z", rows, "covariance", self.covariance)
        dtype = compute_dtype(rows, self.covariance)
        with no_autocast(rows):
            x = upcast(rows.detach(), dtype)
            if self.normalize:
                x = F.normalize(x, dim=1)
            batch_sum = x.T @ x  # (D, D)
            count = x.shape[0]
            layout = _collectives.global_layout(
                self.gather_distributed, count, x.device, name="z", minimum=1
            )
            if layout is not None:
                batch_sum = _collectives.all_reduce_(batch_sum, "sum")
                count = layout.total
            new = self.covariance.to(dtype) * self.beta + batch_sum * ((1 - self.beta) / count)
            self.covariance.copy_(new)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, beta={self.beta}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}"
        )
