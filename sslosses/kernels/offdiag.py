r"""The off-diagonal primitive shared by Barlow Twins and VICReg (private).

:func:`offdiag_loss` computes, for :math:`C = A^\top B / s` built from ``(N, D)`` inputs,

.. math::
    L = w_\mathrm{on} \sum_i (C_{ii} - 1)^2 + w_\mathrm{off} \sum_i \sum_{j \ne i} C_{ij}^2

by one of the algorithms ``"dense"`` (the plain-autograd reference), ``"gram"`` (the Gram
identity, never a ``(D, D)`` tensor) or ``"fused"`` (tiles of :math:`C` reduced without storing
it), optionally split over the ranks of a process group. ``B=None`` stands for ``B = A`` (a
covariance), which the Gram path uses to build one Gram matrix instead of two. The cores live
in :mod:`sslosses.kernels.offdiag_torch` and :mod:`sslosses.kernels.offdiag_triton`.

Only the kernels and their dispatch live here; the checks of the users' arguments the two
losses share (``check_embedding_pair``, ``check_algorithm``, ``check_variance_batch``) are in
:mod:`sslosses._validation`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from sslosses import distributed
from sslosses._numerics import upcast
from sslosses._validation import (
    check_bool,
    check_non_negative_int,
)
from sslosses.kernels.offdiag_torch import (
    STRIP_ELEMENTS,
    dense_loss,
    gram_frobenius,
    gram_terms,
    tiled_loss,
)
from sslosses.typing import Algorithm

__all__ = [
    "DENSE_MAX_ELEMENTS",
    "GRAM_MAX_RATIO",
    "offdiag_loss",
    "resolve_algorithm",
    "select_algorithm",
]

ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

GRAM_MAX_RATIO = 0.5
"""``"auto"`` picks ``"gram"`` when ``N <= GRAM_MAX_RATIO * D`` (the measured crossover)."""

DENSE_MAX_ELEMENTS = 1 << 26
"""``"auto"`` picks ``"fused"`` over ``"dense"`` when ``D * D`` exceeds this (256 MiB float32);
on CPU also when ``D * D`` is at most ``STRIP_ELEMENTS`` (one strip)."""


def select_algorithm(
    n: int, d: int, *, symmetric: bool = False, device: torch.device | str = "cpu"
) -> Literal["dense", "gram", "fused"]:
    r"""The algorithm ``algorithm="auto"`` runs for a (global) batch of ``n`` rows, ``d`` features.

    :func:`~sslosses.functional.barlow_twins_loss` (a cross-correlation :math:`A^\top B`) and
    :func:`~sslosses.functional.vicreg_loss` (a covariance :math:`X^\top X`,
    ``symmetric=True``) call this when given ``algorithm="auto"``, their default, with the
    device of their inputs. The rule:

    - ``"gram"`` when :math:`N \le D/2`: the :math:`(N, N)` Gram identity costs
      :math:`O(N^2 D)` instead of :math:`O(N D^2)` and never forms a :math:`(D, D)` tensor;
    - otherwise, for a covariance, ``"fused"``: its backward needs one product per strip
      instead of two, so it costs at most what ``"dense"`` (and the official code) costs,
      without the :math:`(D, D)` buffers, and about half of it when the covariance is one
      strip (:math:`D \le 2048`: built from its upper half and kept for the backward, on the
      PyTorch path);
    - otherwise, for a cross-correlation, ``"fused"`` when :math:`D^2 > 2^{26}` (each
      :math:`(D, D)` buffer would pass 256 MiB in float32), and on CPU also when
      :math:`D^2 \le 2^{22}` (:math:`D \le 2048`: :math:`C` is one strip, kept for the
      backward, so ``"fused"`` does the products of ``"dense"`` without its
      :math:`(D, D)` temporaries), else ``"dense"`` (between the two, ``"fused"`` would
      recompute its strips in the backward). On other devices, where the fused kernels are
      untimed, a cross-correlation keeps ``"dense"`` up to :math:`D^2 = 2^{26}`.

    :math:`N` is the global batch when the loss runs distributed. The measurements behind
    the rule are in :ref:`the Barlow Twins page <barlow-twins-measurements>` and
    :ref:`the VICReg page <vicreg-measurements>`.

    Args:
        n: rows of the (global) batch.
        d: features.
        symmetric: ``True`` for a covariance (VICReg), ``False`` for a cross-correlation
            (Barlow Twins). Default: ``False``.
        device: the device the loss runs on (only its type matters). Default: ``"cpu"``.

    Returns:
        ``"dense"``, ``"gram"`` or ``"fused"``.

    Raises:
        TypeError: if ``n`` or ``d`` is not an integer, ``symmetric`` is not a bool, or
            ``device`` is neither a :class:`torch.device` nor a string.
        ValueError: if ``n`` or ``d`` is negative.

    Examples:
        >>> from sslosses.functional import select_algorithm
        >>> select_algorithm(256, 8192), select_algorithm(8192, 2048)
        ('gram', 'fused')
        >>> select_algorithm(8192, 4096), select_algorithm(8192, 2048, device="cuda")
        ('dense', 'dense')
        >>> select_algorithm(8192, 2048, symmetric=True)
        'fused'
    """
    if not isinstance(device, torch.device | str):
        raise TypeError(f"device must be a torch.device or a string, got {type(device).__name__}")
    return _select(
        check_non_negative_int("n", n),
        check_non_negative_int("d", d),
        symmetric=check_bool("symmetric", symmetric),
        cpu=torch.device(device).type == "cpu",
    )


def resolve_algorithm(
    algorithm: Algorithm, n: int, d: int, *, symmetric: bool, device: torch.device
) -> Literal["dense", "gram", "fused"]:
    """``algorithm`` as given, or for ``"auto"`` the choice of :func:`select_algorithm`
    (arguments already checked: the losses pass their shapes, which may be symbolic)."""
    if algorithm != "auto":
        return algorithm
    return _select(n, d, symmetric=symmetric, cpu=device.type == "cpu")


def _select(n: int, d: int, *, symmetric: bool, cpu: bool) -> Literal["dense", "gram", "fused"]:
    """:func:`select_algorithm` on checked arguments."""
    if n <= GRAM_MAX_RATIO * d:
        return "gram"
    if symmetric or d * d > DENSE_MAX_ELEMENTS:
        return "fused"
    if cpu and d * d <= STRIP_ELEMENTS:  # C in one strip, kept for the backward
        return "fused"
    return "dense"


def _triton_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Triton fused kernels serve this device and dtype (imports Triton lazily)."""
    if device.type != "cuda":
        return False
    from sslosses.kernels import offdiag_triton

    return offdiag_triton.usable(device, dtype)


def _shard(size: int, parts: int, index: int) -> tuple[int, int]:
    """Bounds of the ``index``-th of ``parts`` nearly equal contiguous ranges of ``range(size)``."""
    return size * index // parts, size * (index + 1) // parts


def _my_shard(size: int, sharded: bool) -> tuple[int, int]:
    if not sharded:
        return 0, size
    return _shard(size, distributed.world_size(), distributed.rank())


def _gram_loss(
    A: Tensor,
    B: Tensor | None,
    divisor: float,
    on_weight: float,
    off_weight: float,
    sharded: bool,
    diagonal: Tensor | None,
    batch_norm_eps: float | None,
) -> Tensor:
    r"""The loss by the Gram identity: :math:`\|C\|_F^2 = \sum (A A^\top) \circ (B B^\top) / s^2`.

    The off-diagonal sum is :math:`\|C\|_F^2 - \sum_i C_{ii}^2`, clamped at zero against
    rounding (the exact value is a sum of squares). When :math:`2 N > D` (where
    :math:`C` may be close to diagonal, and the subtraction would cancel in float32) it is
    computed in float64, with the diagonal computed again from the float64 inputs.
    """
    dtype = A.dtype
    n, d = A.shape
    if 2 * n > d:
        A = upcast(A, torch.float64)
        B = None if B is None else upcast(B, torch.float64)
        diagonal = None
    start, stop = _my_shard(n, sharded)
    if diagonal is None:  # a share of ||C||_F^2; (D,): all C_ii
        frob, c = gram_terms(A, B, divisor, start, stop, batch_norm_eps)
    else:
        frob, c = gram_frobenius(A, B, divisor, start, stop), diagonal
    if sharded:
        frob = distributed.all_reduce_sum(frob)
    # a sum of squares: rounding must not make it negative (its gradient vanishes near 0 too)
    off = (frob - c.square().sum()).clamp_min(0)
    return upcast(on_weight * (c - 1).square().sum() + off_weight * off, dtype)


def offdiag_loss(
    A: Tensor,
    B: Tensor | None,
    *,
    divisor: float,
    on_weight: float,
    off_weight: float,
    algorithm: Literal["dense", "gram", "fused"],
    sharded: bool = False,
    diagonal: Tensor | None = None,
    batch_norm_eps: float | None = None,
) -> Tensor:
    r"""The weighted sum of squares of :math:`C - I` (see the module docstring), 0-d.

    With ``batch_norm_eps``, ``A`` and ``B`` are raw embeddings, each first normalized per
    feature as ``BatchNorm1d(affine=False)`` does in training mode (batch mean, biased
    variance, that ``eps`` inside the square root; Barlow Twins): ``"gram"`` does it inside its
    Function (its backward takes the gradient back through it in place), the other algorithms
    with ``F.batch_norm``.

    ``diagonal``, when given, is :math:`(C_{ii})_i` as the caller computed it, with its
    gradient (VICReg's variances): ``"gram"`` uses it instead of computing it again wherever
    it computes in the inputs' dtype; the other algorithms read the diagonal off :math:`C`.

    ``A`` and ``B`` hold the global batch on every rank when ``sharded``: each rank then
    computes a share (rows of :math:`C` for ``"dense"``/``"fused"``, rows of the Gram matrices
    for ``"gram"``) and the shares are summed over ranks with gradient, so every rank returns
    the whole value and its gradient is the sum over ranks of the shares' gradients.
    """
    if algorithm == "gram":
        return _gram_loss(A, B, divisor, on_weight, off_weight, sharded, diagonal, batch_norm_eps)
    if batch_norm_eps is not None:
        A = F.batch_norm(A, None, None, training=True, eps=batch_norm_eps)  # (N, D)
        B = None if B is None else F.batch_norm(B, None, None, training=True, eps=batch_norm_eps)
    start, stop = _my_shard(A.shape[1], sharded)
    if algorithm == "dense":
        partial = dense_loss(A, B, divisor, on_weight, off_weight, start, stop)
    elif _triton_usable(A.device, A.dtype):
        from sslosses.kernels.offdiag_triton import triton_loss

        partial = triton_loss(A, B, divisor, on_weight, off_weight, start, stop).to(A.dtype)
    else:
        partial = tiled_loss(A, B, divisor, on_weight, off_weight, start, stop)
    return distributed.all_reduce_sum(partial) if sharded else partial
