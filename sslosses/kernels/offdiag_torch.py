r"""PyTorch cores of the off-diagonal loss shared by Barlow Twins and VICReg (private).

Every function here takes two ``(N, D)`` matrices ``A`` and ``B`` (``B=None`` means ``B = A``,
the symmetric case of a covariance) and returns a 0-d partial loss. With
:math:`C = A^\top B / s` (``(D, D)``, :math:`s` the ``divisor``), the partial loss over the rows
:math:`i \in [r, t)` of :math:`C` (a *strip*) is

.. math::
    L_{[r, t)} = \sum_{i=r}^{t-1} \Big[w_\mathrm{on} (C_{ii} - 1)^2
        + w_\mathrm{off} \sum_{j \ne i} C_{ij}^2\Big],

so the full loss is :math:`L_{[0, D)}`; distributed callers split the rows over ranks. Barlow
Twins is :math:`A, B` the batch-normalized views, :math:`s = N`, :math:`w_\mathrm{on} = 1`,
:math:`w_\mathrm{off} = \lambda`; a VICReg covariance term is :math:`A = B` the centred
embeddings, :math:`s = N - 1`, :math:`w_\mathrm{on} = 0`, :math:`w_\mathrm{off} = 1/D`.

With :math:`W_{ij} = w_\mathrm{on}` on the diagonal and :math:`w_\mathrm{off}` off it,
:math:`\partial L / \partial C = M = 2\,W \circ (C - I)`, hence :math:`\partial L/\partial A =
B M^\top / s` and :math:`\partial L/\partial B = A M / s`, restricted to the strip's rows of
:math:`M` (for ``B=None`` the two add up).

``dense_loss`` is the readable reference, plain differentiable ops (so it supports a double
backward); the tiled and Gram cores are custom autograd functions with a first-order backward.
The off-diagonal sum is always computed from the off-diagonal entries themselves (the diagonal
is zeroed first), never as a full sum minus the diagonal: when :math:`N \gg D`, :math:`C` can
approach the identity and that difference cancels catastrophically in float32.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from sslosses._autograd import apply_function, first_order_only
from sslosses._numerics import column_dots

__all__ = [
    "GRAM_BLOCK",
    "NO_DOUBLE_BACKWARD",
    "STRIP_ELEMENTS",
    "SYMMETRIC_BLOCK",
    "WHAT",
    "GramTerms",
    "TiledOffDiagonalLoss",
    "dense_loss",
    "gram_block",
    "gram_frobenius",
    "gram_terms",
    "strip_height",
    "symmetric_product",
    "tiled_loss",
]

WHAT = "barlow_twins_loss / vicreg_loss with algorithm 'gram' or 'fused'"
"""What the custom Functions' refusal of a double backward names."""

NO_DOUBLE_BACKWARD = (
    "algorithm='dense' (the reference path in plain autograd ops, which supports it) where a "
    "gradient of the gradient is needed"
)
"""What the custom Functions' refusal of a double backward suggests instead."""

STRIP_ELEMENTS = 1 << 22
"""The most elements of :math:`C` the tiled path holds at once (16 MiB in float32)."""

SYMMETRIC_BLOCK = 256
"""Rows per block when the tiled path builds a whole covariance from its upper half."""

GRAM_BLOCK = 32
"""The fewest rows per block when the Gram path builds a whole Gram matrix from its upper half."""


def strip_height(d: int, budget: int = STRIP_ELEMENTS) -> int:
    """Rows of :math:`C` per strip: a ``(rows, d)`` strip holds at most ``budget`` elements."""
    return max(1, budget // max(d, 1))


def dense_loss(
    A: Tensor,
    B: Tensor | None,
    divisor: float,
    on_weight: float,
    off_weight: float,
    start: int,
    stop: int,
) -> Tensor:
    """Rows ``[start, stop)`` of the loss from the stored strip of ``C``, in plain autograd ops.

    The reference the fast paths are tested against; differentiable any number of times.
    """
    B = A if B is None else B
    c = A[:, start:stop].t() @ B / divisor  # (S, D): rows [start, stop) of C
    diag = c.diagonal(offset=start)  # (S,): C_ii for the strip's rows
    off = c.diagonal_scatter(torch.zeros_like(diag), offset=start)  # C with C_ii = 0
    return on_weight * (diag - 1).square().sum() + off_weight * off.square().sum()


def _strip(A: Tensor, B: Tensor, divisor: float, start: int, stop: int, out: Tensor) -> Tensor:
    """Rows ``[start, stop)`` of ``C = A^T B / divisor`` into the reusable buffer ``out``."""
    c = torch.mm(A[:, start:stop].t(), B, out=out[: stop - start])  # (S, D)
    return c.div_(divisor)


def symmetric_product(A: Tensor, out: Tensor, block: int) -> Tensor:
    """All of the symmetric ``A^T A`` (``A`` of shape ``(N, D)``) into ``out``, from its upper half.

    Row blocks of ``block`` rows are multiplied only from their diagonal block rightwards and
    mirrored below it: about half the products of one ``A^T A`` (BLAS has no symmetric
    rank-k update in PyTorch). ``symmetric_product(X.t(), ...)`` is the Gram matrix
    ``X X^T``.
    """
    d = A.shape[1]
    for s in range(0, d, block):
        t = min(s + block, d)
        torch.mm(A[:, s:t].t(), A[:, s:], out=out[s:t, s:])  # (S, D - s)
        out[t:, s:t] = out[s:t, t:].t()
    return out


def gram_block(n: int) -> int:
    """Rows per block when the Gram path builds a whole ``(N, N)`` Gram matrix from its upper
    half: ``max(GRAM_BLOCK, N // 16)`` (small blocks lose BLAS efficiency, large ones waste
    products below the diagonal)."""
    return max(GRAM_BLOCK, n // 16)


def _covariance(A: Tensor, divisor: float, out: Tensor, block: int) -> Tensor:
    """All of the symmetric ``C = A^T A / divisor`` into ``out``, ``(D, D)``, from its upper half
    (:func:`symmetric_product`)."""
    return symmetric_product(A, out, block).div_(divisor)


def _strip_value_(c: Tensor, start: int, on_weight: float, off_weight: float) -> Tensor:
    """The partial loss of strip ``c`` (rows from ``start``); overwrites ``c``."""
    diag = c.diagonal(offset=start)  # (S,): C_ii for the strip's rows
    on = (diag - 1).square().sum()
    diag.zero_()
    return on_weight * on + off_weight * c.square_().sum()


def _strip_grad_(
    c: Tensor, start: int, on_weight: float, off_weight: float, scale: Tensor
) -> Tensor:
    """Turn strip ``c`` into ``scale * 2 W o (C - I)`` in place and return it."""
    diag = c.diagonal(offset=start)
    on = (diag - 1).mul_(scale * (2 * on_weight))  # (S,)
    c.mul_(scale * (2 * off_weight))
    diag.copy_(on)
    return c


class TiledOffDiagonalLoss(torch.autograd.Function):
    """``"fused"`` on the PyTorch path: strips of at most ``budget`` elements, recomputed.

    When the rows ``[start, stop)`` fit in one strip, that strip is kept for the backward
    instead of recomputed (it holds no more than one strip's memory, and saves a product).
    """

    @staticmethod
    def forward(
        ctx: Any,
        A: Tensor,
        B: Tensor | None,
        divisor: float,
        on_weight: float,
        off_weight: float,
        start: int,
        stop: int,
        budget: int,
    ) -> Tensor:
        other = A if B is None else B
        height = min(strip_height(A.shape[1], budget), max(stop - start, 1))
        buffer = A.new_empty(height, A.shape[1])  # one strip, reused
        ctx.args = (divisor, on_weight, off_weight, start, stop, height)
        if start < stop <= start + height:  # one strip: keep it for the backward
            if B is None and start == 0 and stop == A.shape[1]:
                c = _covariance(A, divisor, buffer, SYMMETRIC_BLOCK)  # all of C, symmetric
            else:
                c = _strip(A, other, divisor, start, stop, buffer)
            diag = c.diagonal(offset=start)  # (S,): C_ii for the strip's rows
            kept_diag = diag.clone()
            diag.zero_()  # c: the strip's off-diagonal entries, kept as they are
            flat = c.view(-1)
            value = on_weight * (kept_diag - 1).square().sum() + off_weight * torch.dot(flat, flat)
            ctx.save_for_backward(A, B, c, kept_diag)
            return value
        parts = [A.new_zeros(())]
        for s in range(start, stop, height):
            c = _strip(A, other, divisor, s, min(s + height, stop), buffer)
            parts.append(_strip_value_(c, s, on_weight, off_weight))
        ctx.save_for_backward(A, B, None, None)
        return torch.stack(parts).sum()

    @staticmethod
    @first_order_only(WHAT, NO_DOUBLE_BACKWARD)
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        A, B, kept, kept_diag = ctx.saved_tensors
        divisor, on_weight, off_weight, start, stop, height = ctx.args
        symmetric = B is None
        other = A if symmetric else B
        scale = grad / divisor
        whole_symmetric = symmetric and start == 0 and stop == A.shape[1]
        if whole_symmetric:
            # all of M, which is symmetric: both factors' contributions equal A M, so one
            # product per strip instead of two
            scale = scale * 2
            need_a, need_b = False, ctx.needs_input_grad[0]
        else:
            need_a = ctx.needs_input_grad[0]
            need_b = ctx.needs_input_grad[1] or (symmetric and need_a)
        if kept is not None:
            # M from the kept strip, out of place (a second backward must find it intact)
            m = kept * (scale * (2 * off_weight))
            m.diagonal(offset=start).copy_((kept_diag - 1) * (scale * (2 * on_weight)))
            if whole_symmetric:
                return torch.mm(A, m) if need_b else None, None, None, None, None, None, None, None
            if not symmetric and start == 0 and stop == A.shape[1]:  # the strip is all of C
                grad_a = torch.mm(other, m.t()) if need_a else None  # (N, D)
                grad_b = torch.mm(A, m) if need_b else None  # (N, D)
                return grad_a, grad_b, None, None, None, None, None, None
        grad_a = torch.zeros_like(A) if need_a else None
        grad_b = (
            (grad_a if grad_a is not None and symmetric else torch.zeros_like(other))
            if need_b
            else None
        )
        buffer = A.new_empty(height, A.shape[1]) if kept is None else kept  # one strip
        for s in range(start, stop, height):
            t = min(s + height, stop)
            if kept is None:
                c = _strip(A, other, divisor, s, t, buffer)
                m = _strip_grad_(c, s, on_weight, off_weight, scale)  # (S, D)
            if grad_a is not None:
                grad_a[:, s:t] += torch.mm(other, m.t())
            if grad_b is not None:
                grad_b.addmm_(A[:, s:t], m)
        if symmetric:
            return grad_b if grad_a is None else grad_a, None, None, None, None, None, None, None
        return grad_a, grad_b, None, None, None, None, None, None


class GramTerms(torch.autograd.Function):
    r"""``"gram"``: the diagonal of :math:`C` and rows of its squared Frobenius norm.

    Returns :math:`\big(\sum_{n \in [r, t)} \sum_m (A A^\top)_{nm} (B B^\top)_{nm} / s^2,\;
    (C_{ii})_i\big)` with :math:`C_{ii} = \sum_n A_{ni} B_{ni} / s`. Over all rows the first is
    :math:`\|C\|_F^2 = \sum_{ij} C_{ij}^2`, computed from the ``(N, N)`` Gram matrices without
    forming ``C``; distributed callers split the rows ``n`` over ranks (the diagonal is always
    whole). Whole Gram matrices are built from their upper halves (:func:`symmetric_product`);
    for ``B=None`` one Gram matrix serves both factors. The backward takes both terms' gradients
    in one pass: one ``(N, N) x (N, D)`` product per factor, into which the diagonal's gradient
    is added in place. Given ``eps``, the inputs are raw embeddings that the Function
    batch-normalizes first (Barlow Twins), and the backward takes the gradient back through
    the normalization in the same buffer: one ``(N, D)`` tensor per factor in all.
    """

    @staticmethod
    def forward(
        ctx: Any,
        A: Tensor,
        B: Tensor | None,
        divisor: float,
        start: int,
        stop: int,
        diagonal: bool,
        eps: float | None,
    ) -> tuple[Tensor, Tensor | None]:
        ctx.set_materialize_grads(False)
        ra = rb = None
        if eps is not None:  # A and B are the raw embeddings: batch-normalize them first
            A, ra = _batch_norm(A, eps)
            B, rb = (None, ra) if B is None else _batch_norm(B, eps)
        if start == 0 and stop == A.shape[0]:  # whole Gram matrices: from their upper halves

            def gram(x: Tensor) -> Tensor:
                n = x.shape[0]
                return symmetric_product(x.t(), x.new_empty(n, n), gram_block(n))  # (N, N)

        else:

            def gram(x: Tensor) -> Tensor:
                return torch.mm(x[start:stop], x.t())  # (R, N)

        ga = gram(A)
        gb = ga if B is None else gram(B)
        frob = torch.dot(ga.view(-1), gb.view(-1)) / divisor**2
        # (D,): C_ii, unless the caller has it
        diag = column_dots(A, A if B is None else B).div_(divisor) if diagonal else None
        ctx.save_for_backward(A, B, ga, None if B is None else gb, ra, rb)
        ctx.args = (divisor, start, stop)
        return frob, diag

    @staticmethod
    @first_order_only(WHAT, NO_DOUBLE_BACKWARD)
    def backward(
        ctx: Any, grad_frob: Tensor | None, grad_diag: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        A, B, ga, gb, ra, rb = ctx.saved_tensors
        divisor, start, stop = ctx.args
        symmetric = B is None
        whole = start == 0 and stop == A.shape[0]

        def one(x: Tensor, g: Tensor, other: Tensor, factor: float, rstd: Tensor | None) -> Tensor:
            """The gradient for factor ``x``: ``g`` the other factor's Gram rows, ``other`` the
            other factor (``factor`` 2 when both factors are ``x``), taken back through the
            batch normalization (in place) when ``x`` is normalized with ``1 / std = rstd``."""
            out = None
            if grad_frob is not None:
                k = grad_frob * (factor / divisor**2)
                if whole:  # g is symmetric: d/dX sum(X X^T o G) = 2 G X
                    out = torch.mm(g * (2 * k), x)  # (N, D)
                else:
                    g = g * k  # (R, N)
                    out = torch.mm(g.t(), x[start:stop])  # (N, D)
                    out[start:stop].addmm_(g, x)
            if grad_diag is not None:  # d/dX sum_i w_i sum_n X_ni Y_ni = Y diag(w)
                w = grad_diag * (factor / divisor)  # (D,)
                out = other * w if out is None else out.addcmul_(other, w)
            if out is None:
                return torch.zeros_like(x)
            return out if rstd is None else _batch_norm_backward_(out, x, rstd)

        if symmetric:  # both factors are A: twice the gradient through one of them
            grad_a = one(A, ga, A, 2.0, ra) if ctx.needs_input_grad[0] else None
            return grad_a, None, None, None, None, None, None
        grad_a = one(A, gb, B, 1.0, ra) if ctx.needs_input_grad[0] else None
        grad_b = one(B, ga, A, 1.0, rb) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None, None, None, None, None


def _batch_norm(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``F.batch_norm(z, None, None, training=True, eps=eps)`` (batch mean, biased variance,
    ``eps`` inside the square root) and the ``(D,)`` reciprocal standard deviations."""
    x = z - z.mean(dim=0)  # (N, D)
    rstd = column_dots(x, x).div_(z.shape[0]).add_(eps).rsqrt_()  # (D,)
    return x.mul_(rstd), rstd


def _batch_norm_backward_(grad: Tensor, x: Tensor, rstd: Tensor) -> Tensor:
    r"""The gradient ``grad`` for the normalized ``x`` taken back to the raw embeddings, in
    place: :math:`r \circ (g - \bar g - x \circ \overline{g \circ x})` (means over rows)."""
    n = grad.shape[0]
    mean_gx = column_dots(grad, x).div_(n)  # (D,)
    grad.sub_(grad.mean(dim=0)).addcmul_(x, mean_gx, value=-1.0)
    return grad.mul_(rstd)


def tiled_loss(
    A: Tensor,
    B: Tensor | None,
    divisor: float,
    on_weight: float,
    off_weight: float,
    start: int,
    stop: int,
    budget: int = STRIP_ELEMENTS,
) -> Tensor:
    """Rows ``[start, stop)`` of the loss in recomputed strips of ``budget`` elements."""
    return apply_function(
        TiledOffDiagonalLoss, A, B, divisor, on_weight, off_weight, start, stop, budget
    )


def gram_terms(
    A: Tensor,
    B: Tensor | None,
    divisor: float,
    start: int,
    stop: int,
    batch_norm_eps: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Rows ``[start, stop)`` of ``sum((A A^T) o (B B^T)) / divisor^2`` and the diagonal
    ``sum(A o B, 0) / divisor`` of ``C`` (``"gram"``); with ``batch_norm_eps``, of the
    batch-normalized ``A`` and ``B`` (``F.batch_norm`` in training mode, that ``eps``)."""
    untyped: Any = GramTerms
    frob, diag = untyped.apply(A, B, divisor, start, stop, True, batch_norm_eps)
    return frob, diag


def gram_frobenius(A: Tensor, B: Tensor | None, divisor: float, start: int, stop: int) -> Tensor:
    """Rows ``[start, stop)`` of ``sum((A A^T) o (B B^T)) / divisor^2`` (``"gram"``) alone."""
    untyped: Any = GramTerms
    frob, _ = untyped.apply(A, B, divisor, start, stop, False, None)
    return cast(Tensor, frob)
