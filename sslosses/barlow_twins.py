"""Barlow Twins: redundancy reduction on the cross-correlation of batch-normalized views."""

from __future__ import annotations

from torch import Tensor, nn

from sslosses import _collectives, distributed
from sslosses._numerics import no_autocast, upcast
from sslosses._validation import (
    check_algorithm,
    check_embedding_pair,
    check_non_negative,
    check_positive,
    check_variance_batch,
)
from sslosses.kernels.offdiag import offdiag_loss, resolve_algorithm
from sslosses.typing import Algorithm

__all__ = ["BarlowTwinsLoss", "barlow_twins_loss"]


def barlow_twins_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    lambd: float = 0.0051,
    eps: float = 1e-5,
    gather_distributed: bool = False,
    algorithm: Algorithm = "auto",
) -> Tensor:
    r"""Barlow Twins loss: drive the cross-correlation of the two views to the identity.

    Each view is normalized per feature with batch statistics, as ``BatchNorm1d(affine=False)``
    does in training mode (batch mean, biased variance, ``eps`` inside the square root):
    :math:`A = (z_a - \mu_a) / \sqrt{\sigma_a^2 + \epsilon}`, likewise :math:`B`. Then

    .. math::
        C = \frac{A^\top B}{N} \in \mathbb{R}^{D \times D}, \qquad
        \mathcal{L} = \sum_i (1 - C_{ii})^2 + \lambda \sum_i \sum_{j \ne i} C_{ij}^2 .

    The result is a 0-d tensor (no ``reduction``: the loss is a sum over the features, as in
    the official code). Half-precision inputs (or autocast) are computed in float32; float64
    stays float64.

    Algorithms, all exact (tests check value and gradient against the dense path):

    - ``"dense"`` builds :math:`C` (``(D, D)``), the official formulation in plain autograd
      ops (the reference the other paths are tested against; it supports a double backward);
      the off-diagonal sum is taken over the off-diagonal entries themselves.
    - ``"gram"`` uses :math:`\sum_{ij} C_{ij}^2 = \sum (A A^\top) \circ (B B^\top) / N^2` with
      the ``(N, N)`` Gram matrices, and :math:`C_{ii} = \sum_n A_{ni} B_{ni} / N`; it never forms
      a ``(D, D)`` tensor and costs :math:`O(N^2 D)` instead of :math:`O(N D^2)`. The
      off-diagonal sum is then the Frobenius sum minus the diagonal one. For
      :math:`N \le D/2` its rounding stays within float32 precision of the loss (:math:`C` has
      rank below :math:`N`, so :math:`\|C - I\|_F^2 \ge D/2`); for :math:`N > D/2`, where
      :math:`C` can approach the identity and the subtraction would cancel in float32,
      ``"gram"`` computes in float64.
    - ``"fused"`` streams tiles of :math:`C`, squaring, weighting and summing each without
      storing :math:`C`; the backward recomputes the tiles (in PyTorch it keeps the one
      strip when :math:`C` fits in one). Triton kernels on CUDA (when Triton
      is installed), strips of at most :math:`2^{22}` elements of :math:`C` in PyTorch elsewhere.
    - ``"auto"`` runs what :func:`~sslosses.functional.select_algorithm` picks for the
      (global) batch and the inputs' device: ``"gram"`` for :math:`N \le D/2`; else on CPU
      ``"fused"`` up to :math:`D = 2048` (:math:`C` in one strip), ``"dense"`` up to
      :math:`D = 8192` and ``"fused"`` beyond; on other devices ``"dense"`` up to
      :math:`D = 8192`, else ``"fused"``.

    Args:
        z_a: embeddings of the first view.
        z_b: embeddings of the second view.
        lambd: weight :math:`\lambda` of the off-diagonal (redundancy reduction) term.
            Default: ``0.0051``.
        eps: added to the batch variance inside the square root. Default: ``1e-5``.
        gather_distributed: compute the loss on the global batch across processes: global
            normalization statistics (as the official ``SyncBatchNorm``) and global
            cross-correlation. Each rank gathers the raw embeddings of all ranks (with
            gradient) and computes a share of the terms (rows of :math:`C` for
            ``"dense"``/``"fused"``, rows of the Gram matrices for ``"gram"``); the shares are
            summed over ranks with gradient. Every rank returns the global loss, and each
            rank's gradient is ``world_size`` times its slice of the single-process gradient
            (which DDP's averaging divides out). Communication is :math:`2 N D` values each way
            instead of the official :math:`D^2` all-reduce; compute per rank is
            :math:`1/W` of the global work, as in the official code. Without a process group
            the loss is local. Default: ``False``.
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
            the (global) batch has fewer than 2 samples, ``lambd < 0``, ``eps <= 0``, or
            ``algorithm`` is unknown.
        RuntimeError: from the backward of ``"gram"`` and ``"fused"`` (and ``"auto"``, which
            runs one of them or ``"dense"``), when it is asked for a differentiable gradient
            (``create_graph=True``, e.g. a gradient penalty): they are custom autograd functions
            with a first-order backward, and raising is safer than the constant gradient
            PyTorch's ``once_differentiable`` would silently give. ``"dense"`` is written in
            plain autograd ops and supports it.

    Examples:
        >>> import torch
        >>> from sslosses.functional import barlow_twins_loss
        >>> z_a = torch.randn(32, 64, requires_grad=True)
        >>> z_b = z_a.detach() + 0.1 * torch.randn(32, 64)
        >>> loss = barlow_twins_loss(z_a, z_b)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
        >>> dense = barlow_twins_loss(z_a, z_b, algorithm="dense")
        >>> bool(torch.allclose(loss, dense, rtol=1e-4))
        True
        >>> loss.backward()

    References:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
        ICML 2021, arXiv:2103.03230. Official code: facebookresearch/barlowtwins, ``main.py``
        (``BarlowTwins.forward``, ``off_diagonal``).
    """
    dtype = check_embedding_pair("z_a", z_a, "z_b", z_b, min_batch=0)
    lambd = check_non_negative("lambd", lambd)
    eps = check_positive("eps", eps)
    gather = _collectives.check_gather_distributed(gather_distributed)
    algorithm = check_algorithm(algorithm)
    sharded = gather and distributed.world_size() > 1
    with no_autocast(z_a):
        za = upcast(z_a, dtype)  # (N, D)
        zb = upcast(z_b, dtype)  # (N, D)
        if sharded:
            za, zb = distributed.gather(za), distributed.gather(zb)  # (N_global, D)
        n, d = za.shape
        check_variance_batch(n, sharded=sharded, variance="batch variance")
        # A, B: BatchNorm1d(affine=False) in training mode (batch mean, biased variance) of
        # za, zb, applied inside the off-diagonal primitive (the Gram path fuses it)
        return offdiag_loss(
            za,
            zb,
            divisor=n,
            on_weight=1.0,
            off_weight=lambd,
            algorithm=resolve_algorithm(algorithm, n, d, symmetric=False, device=za.device),
            sharded=sharded,
            batch_norm_eps=eps,
        )


class BarlowTwinsLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.barlow_twins_loss`.

    Args:
        lambd: weight of the off-diagonal term. Default: ``0.0051``.
        eps: added to the batch variance inside the square root. Default: ``1e-5``.
        gather_distributed: global-batch loss across processes. Default: ``False``.
        algorithm: ``"auto"`` | ``"dense"`` | ``"gram"`` | ``"fused"``. Default: ``"auto"``.

    Examples:
        >>> import torch
        >>> from sslosses import BarlowTwinsLoss
        >>> criterion = BarlowTwinsLoss()
        >>> criterion
        BarlowTwinsLoss(lambd=0.0051, eps=1e-05, gather_distributed=False, algorithm='auto')
        >>> criterion(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        lambd: float = 0.0051,
        eps: float = 1e-5,
        gather_distributed: bool = False,
        algorithm: Algorithm = "auto",
    ) -> None:
        super().__init__()
        self.lambd = check_non_negative("lambd", lambd)
        self.eps = check_positive("eps", eps)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)
        self.algorithm = check_algorithm(algorithm)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return barlow_twins_loss(
            z_a,
            z_b,
            lambd=self.lambd,
            eps=self.eps,
            gather_distributed=self.gather_distributed,
            algorithm=self.algorithm,
        )

    def extra_repr(self) -> str:
        return (
            f"lambd={self.lambd}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}, algorithm={self.algorithm!r}"
        )
