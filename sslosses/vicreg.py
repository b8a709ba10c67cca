"""VICReg: variance, invariance and covariance regularization of two views' embeddings."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._numerics import column_dots, no_autocast, upcast
from sslosses._validation import (
    check_algorithm,
    check_embedding_pair,
    check_non_negative,
    check_positive,
    check_variance_batch,
)
from sslosses.kernels.offdiag import offdiag_loss, resolve_algorithm
from sslosses.typing import Algorithm

__all__ = ["VICRegLoss", "VICRegTerms", "vicreg_loss", "vicreg_terms"]


class VICRegTerms(NamedTuple):
    """The VICReg loss and its three unweighted terms (0-d tensors), from one computation.

    ``loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``.
    """

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


class _Centred(torch.autograd.Function):
    r""":math:`X = Z - \bar Z` and the unbiased variance :math:`\sum_n X_{nj}^2 / (N - 1)`.

    The same values as ``z - z.mean(0)`` and ``torch.var(z, dim=0)`` (whose reduction over dim 0
    is several times slower on CPU), with a backward that builds one ``(N, D)`` tensor where
    autograd through those ops builds about five: with :math:`P = I - \mathbf{1}\mathbf{1}^\top/N`,
    :math:`\partial/\partial Z = P\,(G_X + 2 X \operatorname{diag}(g_v) / (N - 1))`. The
    backward is made of differentiable operations, so a double backward (``"dense"``) works.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z - z.mean(dim=0)  # (N, D)
        var = column_dots(x, x).div_(z.shape[0] - 1)  # (D,)
        ctx.save_for_backward(x)
        return x, var

    @staticmethod
    def backward(ctx: Any, grad_x: Tensor, grad_var: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        grad = torch.addcmul(grad_x, x, grad_var, value=2.0 / (x.shape[0] - 1))  # (N, D)
        return grad.sub_(grad.mean(dim=0))  # the centring's projection P


def _centred(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(z - z.mean(0), torch.var(z, dim=0))`` of an ``(N, D)`` batch (see :class:`_Centred`)."""
    untyped: Any = _Centred
    x, var = untyped.apply(z)
    return x, var


def vicreg_terms(
    z_a: Tensor,
    z_b: Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    algorithm: Algorithm = "auto",
) -> VICRegTerms:
    r"""VICReg loss together with its invariance, variance and covariance terms.

    The same computation as :func:`vicreg_loss` (which returns ``vicreg_terms(...).loss``);
    the terms come for free, for logging. See :func:`vicreg_loss` for the definitions, the
    arguments and the errors.

    Returns:
        :class:`~sslosses.VICRegTerms` ``(loss, invariance, variance, covariance)``, 0-d tensors in
        float32 (float64 for float64 inputs); the terms are unweighted, as the official code
        computes ``repr_loss``, ``std_loss`` and ``cov_loss``.

    Examples:
        >>> import torch
        >>> from sslosses.functional import vicreg_terms
        >>> z_a, z_b = torch.randn(32, 64), torch.randn(32, 64)
        >>> terms = vicreg_terms(z_a, z_b)
        >>> total = 25 * terms.invariance + 25 * terms.variance + terms.covariance
        >>> bool(torch.allclose(terms.loss, total))
        True
    """
    dtype = check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=0)
    sim_coeff = check_non_negative("sim_coeff", sim_coeff)
    std_coeff = check_non_negative("std_coeff", std_coeff)
    cov_coeff = check_non_negative("cov_coeff", cov_coeff)
    eps = check_positive("eps", eps)
    gather = _collectives.check_gather_distributed(gather_distributed)
    algorithm = check_algorithm(algorithm)
    layout = _collectives.batch_layout(z_a.shape[0], z_a.device) if gather else None
    sharded = layout is not None and layout.world > 1
    with no_autocast(z_a):
        za = upcast(z_a, dtype)  # (N_r, D): this rank's batch
        zb = upcast(z_b, dtype)  # (N_r, D)
        xa = _collectives.gather_rows(za, layout) if layout else za  # (N, D): the global batch
        xb = _collectives.gather_rows(zb, layout) if layout else zb  # (N, D)
        n, d = xa.shape
        check_variance_batch(n, sharded=sharded, variance="unbiased variance")
        # Invariance on this rank's batch, as the original computes it before its gather. The
        # sum takes this rank's share of the global mean (W / N, over D features) so that the
        # mean over ranks is the global mean squared error even for unequal batch sizes.
        share = _collectives.mean_weight(za.shape[0], layout if sharded else None)
        invariance = F.mse_loss(za, zb, reduction="sum") * (share / d)
        xa, var_a = _centred(xa)  # (N, D): centred; (D,): unbiased variance, as torch.var
        xb, var_b = _centred(xb)
        std_a = (var_a + eps).sqrt()
        std_b = (var_b + eps).sqrt()
        variance = F.relu(1 - std_a).mean() / 2 + F.relu(1 - std_b).mean() / 2
        chosen = resolve_algorithm(algorithm, n, d, symmetric=True, device=xa.device)

        def off_diagonal_term(x: Tensor, var: Tensor) -> Tensor:
            # sum_{i != j} cov_ij^2 / D, cov = X^T X / (N - 1): the off-diagonal primitive with
            # A = B = X (B=None), no diagonal term, off-diagonal weight 1 / D; the variances
            # are the covariance's diagonal
            return offdiag_loss(
                x,
                None,
                divisor=n - 1,
                on_weight=0.0,
                off_weight=1.0 / d,
                algorithm=chosen,
                sharded=sharded,
                diagonal=var,
            )

        covariance = off_diagonal_term(xa, var_a) + off_diagonal_term(xb, var_b)
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
        return VICRegTerms(loss, invariance, variance, covariance)


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    algorithm: Algorithm = "auto",
) -> Tensor:
    r"""VICReg loss: invariance between the views, variance and decorrelation within each.

    With :math:`Z_a, Z_b` the ``(N, D)`` embeddings, :math:`X = Z - \bar Z` the centred
    embeddings, :math:`\mathrm{Var}_j` the unbiased batch variance of feature :math:`j` and
    :math:`\mathrm{Cov}(X) = X^\top X / (N - 1)`:

    .. math::
        s &= \frac{1}{N D} \sum_{n, j} (Z_{a,nj} - Z_{b,nj})^2, \qquad
        v = \sum_{Z \in \{Z_a, Z_b\}} \frac{1}{2D} \sum_j
            \max\Big(0, 1 - \sqrt{\mathrm{Var}_j(Z) + \epsilon}\Big), \\
        c &= \sum_{Z \in \{Z_a, Z_b\}} \frac{1}{D} \sum_i \sum_{j \ne i}
            \mathrm{Cov}(X)_{ij}^2, \qquad
        \mathcal{L} = \alpha\, s + \mu\, v + \nu\, c .

    The defaults are the paper's (:math:`\alpha = \mu = 25`, :math:`\nu = 1`,
    :math:`\epsilon = 10^{-4}`). The result is a 0-d tensor; :func:`vicreg_terms` also returns
    :math:`s, v, c`. Half-precision inputs (or autocast) are computed in float32; float64 stays
    float64.

    The covariance term runs on the off-diagonal primitive shared with
    :func:`barlow_twins_loss`; all algorithms are exact (tests check value and gradient
    against the official formulation):

    - ``"dense"`` builds the ``(D, D)`` covariance of each view in plain autograd operations
      (the reference; the one algorithm with a double backward).
    - ``"gram"`` uses :math:`\sum_{ij} \mathrm{Cov}_{ij}^2 = \|X X^\top\|_F^2 / (N-1)^2` with one
      ``(N, N)`` Gram matrix per view and subtracts :math:`\sum_j \mathrm{Var}_j^2`; it never
      forms a ``(D, D)`` tensor and costs :math:`O(N^2 D)` instead of :math:`O(N D^2)`. Where
      :math:`2N > D`, where the covariance can be close to diagonal and the subtraction would
      cancel in float32, it computes in float64.
    - ``"fused"`` streams tiles of the covariance, squaring and summing each without storing
      it; the backward recomputes the tiles and, the covariance being symmetric, needs one
      product per tile, so it costs at most what ``"dense"`` and the official code cost
      (Triton kernels on CUDA when Triton is installed, strips of at most :math:`2^{22}`
      elements in PyTorch elsewhere). In PyTorch, when the whole covariance is one strip, it
      is built from its upper half and kept for the backward: about half the products.
    - ``"auto"`` runs what :func:`select_algorithm(n, d, symmetric=True)
      <sslosses.functional.select_algorithm>` picks for the (global) batch: ``"gram"`` for
      :math:`N \le D/2`, else ``"fused"``.

    Args:
        z_a: embeddings of the first view.
        z_b: embeddings of the second view.
        sim_coeff: weight :math:`\alpha` of the invariance term. Default: ``25.0``.
        std_coeff: weight :math:`\mu` of the variance term. Default: ``25.0``.
        cov_coeff: weight :math:`\nu` of the covariance term. Default: ``1.0``.
        eps: added to the variance inside the square root. Default: ``1e-4``.
        gather_distributed: compute the variance and covariance terms on the global batch
            across processes, as the original's ``FullGatherLayer`` does; the invariance term
            stays on each rank's own batch, as in the original (scaled by
            :math:`W N_r / N` so that its mean over ranks is the global mean squared error when
            the ranks' batch sizes :math:`N_r` differ; with equal sizes it is the local one).
            Each rank gathers the embeddings of all ranks (with gradient) and computes a share
            of the covariance term, summed over ranks with gradient. The mean over ranks of the
            returned value is the single-process loss of the global batch, and each rank's
            gradient is ``world_size`` times its slice of the single-process gradient (which
            DDP's averaging divides out). Without a process group the loss is local.
            Default: ``False``.
        algorithm: ``"auto"`` | ``"dense"`` | ``"gram"`` | ``"fused"``. Default: ``"auto"``.

    Shape:
        - z_a: :math:`(N, D)` with :math:`N \ge 2`
        - z_b: :math:`(N, D)`
        - output: :math:`()`

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if an input is not a floating-point tensor, or a hyperparameter has the
            wrong type.
        ValueError: if an input is not 2-D or has no features, the shapes or devices differ,
            the (global) batch has fewer than 2 samples, a coefficient is negative,
            ``eps <= 0``, or ``algorithm`` is unknown.
        RuntimeError: from the backward of ``"gram"`` and ``"fused"`` when asked for a
            differentiable gradient (``create_graph=True``); use ``"dense"`` there.

    Examples:
        >>> import torch
        >>> from sslosses.functional import vicreg_loss
        >>> z_a = torch.randn(32, 64, requires_grad=True)
        >>> z_b = z_a.detach() + 0.1 * torch.randn(32, 64)
        >>> loss = vicreg_loss(z_a, z_b)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
        >>> dense = vicreg_loss(z_a, z_b, algorithm="dense")
        >>> bool(torch.allclose(loss, dense, rtol=1e-4))
        True
        >>> loss.backward()

    References:
        Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
        Self-Supervised Learning", ICLR 2022, arXiv:2105.04906. Official code:
        facebookresearch/vicreg, ``main_vicreg.py`` (``VICReg.forward``, ``off_diagonal``,
        ``FullGatherLayer``).
    """
    return vicreg_terms(
        z_a,
        z_b,
        sim_coeff=sim_coeff,
        std_coeff=std_coeff,
        cov_coeff=cov_coeff,
        eps=eps,
        gather_distributed=gather_distributed,
        algorithm=algorithm,
    ).loss


class VICRegLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.vicreg_loss`.

    Args:
        sim_coeff: weight of the invariance term. Default: ``25.0``.
        std_coeff: weight of the variance term. Default: ``25.0``.
        cov_coeff: weight of the covariance term. Default: ``1.0``.
        eps: added to the variance inside the square root. Default: ``1e-4``.
        gather_distributed: global-batch variance and covariance across processes.
            Default: ``False``.
        algorithm: ``"auto"`` | ``"dense"`` | ``"gram"`` | ``"fused"``. Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import VICRegLoss
        >>> criterion = VICRegLoss()
        >>> criterion
        VICRegLoss(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=0.0001,
                   gather_distributed=False, algorithm='auto')
        >>> criterion(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
        algorithm: Algorithm = "auto",
    ) -> None:
        super().__init__()
        self.sim_coeff = check_non_negative("sim_coeff", sim_coeff)
        self.std_coeff = check_non_negative("std_coeff", std_coeff)
        self.cov_coeff = check_non_negative("cov_coeff", cov_coeff)
        self.eps = check_positive("eps", eps)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)
        self.algorithm = check_algorithm(algorithm)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return vicreg_loss(
            z_a,
            z_b,
            sim_coeff=self.sim_coeff,
            std_coeff=self.std_coeff,
            cov_coeff=self.cov_coeff,
            eps=self.eps,
            gather_distributed=self.gather_distributed,
            algorithm=self.algorithm,
        )

    def extra_repr(self) -> str:
        return (
            f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, "
            f"cov_coeff={self.cov_coeff}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}, algorithm={self.algorithm!r}"
        )
