r"""PyTorch cores of the Barlow Twins loss (private).

Every function here takes the batch-normalized views ``A`` and ``B`` of shape ``(N, D)`` (the
normalization itself stays in ordinary autograd) and returns a 0-d partial loss with a hand
written backward. With the cross-correlation :math:`C = A^\top B / N` (``(D, D)``), the partial
loss over the rows :math:`i \in [s, t)` of :math:`C` (a *strip*) is

.. math::
    L_{[s, t)} = \sum_{i=s}^{t-1} \Big[(C_{ii} - 1)^2 + \lambda \sum_{j \ne i} C_{ij}^2\Big],

so the full loss is :math:`L_{[0, D)}`; distributed callers split the rows over ranks. With
:math:`W_{ij} = 1` on the diagonal and :math:`\lambda` off it, :math:`\partial L / \partial C =
M = 2\,W \circ (C - I)`, hence :math:`\partial L/\partial A = B M^\top / N` and
:math:`\partial L/\partial B = A M / N`, restricted to the strip's rows of :math:`M`.

The off-diagonal sum is always computed from the off-diagonal entries themselves (the diagonal
is zeroed first), never as a full sum minus the diagonal: when :math:`N \gg D`, :math:`C`
approaches the identity and that difference cancels catastrophically in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sslosses._autograd import apply_function, first_order_only

__all__ = [
    "STRIP_ELEMENTS",
    "DenseCrossCorrelationLoss",
    "GramFrobenius",
    "TiledCrossCorrelationLoss",
    "dense_loss",
    "gram_frobenius",
    "strip_height",
    "tiled_loss",
]

NO_DOUBLE_BACKWARD = (
    "the Barlow Twins loss written with plain autograd ops (BatchNorm-standardized views, "
    "C = A.T @ B / N, sum((diag(C) - 1)^2) + lambda * sum(offdiag(C)^2)) where a gradient of "
    "the gradient is needed"
)
"""What the custom Functions' refusal of a double backward suggests instead."""

STRIP_ELEMENTS = 1 << 22
"""The most elements of :math:`C` the tiled path holds at once (16 MiB in float32)."""

_SQUARE_CHUNK = 1 << 20


def strip_height(d: int, budget: int = STRIP_ELEMENTS) -> int:
    """Rows of :math:`C` per strip: a ``(rows, d)`` strip holds at most ``budget`` elements."""
    return max(1, budget // max(d, 1))


def _strip(A: Tensor, B: Tensor, start: int, stop: int, out: Tensor | None = None) -> Tensor:
    """Rows ``[start, stop)`` of ``C = A^T B / N``, ``(stop - start, D)``, into ``out`` if given."""
    if out is None:
        c = torch.mm(A[:, start:stop].t(), B)  # (S, D)
    else:
        c = torch.mm(A[:, start:stop].t(), B, out=out[: stop - start])
    return c.div_(A.shape[0])


def _sum_squares(x: Tensor) -> Tensor:
    """``x.square().sum()`` in chunks of rows, bounding the temporary to ~``_SQUARE_CHUNK``."""
    rows = max(1, _SQUARE_CHUNK // max(x.shape[1], 1))
    if x.shape[0] <= rows:
        return x.square().sum()
    return torch.stack([part.square().sum() for part in torch.split(x, rows)]).sum()


def _strip_value_(c: Tensor, start: int, lambd: float) -> Tensor:
    """The partial loss of strip ``c`` (rows from ``start``); overwrites ``c``."""
    diag = c.diagonal(offset=start)  # (S,): C_ii for the strip's rows
    on = (diag - 1).square().sum()
    diag.zero_()
    return on + lambd * c.square_().sum()


def _strip_grad_(c: Tensor, start: int, lambd: float, scale: Tensor) -> Tensor:
    """Turn strip ``c`` into ``scale * 2 W o (C - I)`` in place and return it."""
    diag = c.diagonal(offset=start)
    on = (diag - 1).mul_(2).mul_(scale)  # (S,)
    c.mul_(scale * (2 * lambd))
    diag.copy_(on)
    return c


class DenseCrossCorrelationLoss(torch.autograd.Function):
    """``"dense"``: build the strip of ``C`` once, keep it for the backward."""

    @staticmethod
    def forward(ctx: Any, A: Tensor, B: Tensor, lambd: float, start: int, stop: int) -> Tensor:
        c = _strip(A, B, start, stop)  # (S, D)
        diag = c.diagonal(offset=start).clone()  # (S,)
        c.diagonal(offset=start).zero_()  # c now holds the off-diagonal entries only
        value = (diag - 1).square().sum() + lambd * _sum_squares(c)
        ctx.save_for_backward(A, B, c, diag)
        ctx.lambd, ctx.start, ctx.stop = lambd, start, stop
        return value

    @staticmethod
    @first_order_only("barlow_twins_loss", NO_DOUBLE_BACKWARD)
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        A, B, c, diag = ctx.saved_tensors
        start, stop = ctx.start, ctx.stop
        scale = grad / A.shape[0]
        m = c * (scale * (2 * ctx.lambd))  # (S, D)
        m.diagonal(offset=start).copy_((diag - 1) * (2 * scale))
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            if start == 0 and stop == A.shape[1]:
                grad_a = torch.mm(B, m.t())  # (N, D)
            else:
                grad_a = torch.zeros_like(A)
                grad_a[:, start:stop] = torch.mm(B, m.t())
        if ctx.needs_input_grad[1]:
            grad_b = torch.mm(A[:, start:stop], m)  # (N, D)
        return grad_a, grad_b, None, None, None


class TiledCrossCorrelationLoss(torch.autograd.Function):
    """``"fused"`` on the PyTorch path: strips of at most ``budget`` elements, recomputed."""

    @staticmethod
    def forward(
        ctx: Any, A: Tensor, B: Tensor, lambd: float, start: int, stop: int, budget: int
    ) -> Tensor:
        height = min(strip_height(A.shape[1], budget), max(stop - start, 1))
        buffer = A.new_empty(height, A.shape[1])  # one strip, reused
        parts = [A.new_zeros(())]
        for s in range(start, stop, height):
            c = _strip(A, B, s, min(s + height, stop), out=buffer)
            parts.append(_strip_value_(c, s, lambd))
        ctx.save_for_backward(A, B)
        ctx.lambd, ctx.start, ctx.stop, ctx.height = lambd, start, stop, height
        return torch.stack(parts).sum()

    @staticmethod
    @first_order_only("barlow_twins_loss", NO_DOUBLE_BACKWARD)
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        A, B = ctx.saved_tensors
        scale = grad / A.shape[0]
        grad_a = torch.zeros_like(A) if ctx.needs_input_grad[0] else None
        grad_b = torch.zeros_like(B) if ctx.needs_input_grad[1] else None
        buffer = A.new_empty(ctx.height, A.shape[1])  # one strip, reused
        for s in range(ctx.start, ctx.stop, ctx.height):
            t = min(s + ctx.height, ctx.stop)
            m = _strip_grad_(_strip(A, B, s, t, out=buffer), s, ctx.lambd, scale)  # (S, D)
            if grad_a is not None:
                grad_a[:, s:t] = torch.mm(B, m.t())
            if grad_b is not None:
                grad_b.addmm_(A[:, s:t], m)
        return grad_a, grad_b, None, None, None, None


class GramFrobenius(torch.autograd.Function):
    r"""``"gram"``: :math:`\sum_{n \in [s, t)} \sum_m (A A^\top)_{nm} (B B^\top)_{nm} / N^2`.

    Over all rows this is :math:`\|C\|_F^2 = \sum_{ij} C_{ij}^2`, computed from the ``(N, N)``
    Gram matrices without forming ``C``; distributed callers split the rows ``n`` over ranks.
    """

    @staticmethod
    def forward(ctx: Any, A: Tensor, B: Tensor, start: int, stop: int) -> Tensor:
        ga = torch.mm(A[start:stop], A.t())  # (R, N)
        gb = torch.mm(B[start:stop], B.t())  # (R, N)
        value = (ga * gb).sum() / A.shape[0] ** 2
        ctx.save_for_backward(A, B, ga, gb)
        ctx.start, ctx.stop = start, stop
        return value

    @staticmethod
    @first_order_only("barlow_twins_loss", NO_DOUBLE_BACKWARD)
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        A, B, ga, gb = ctx.saved_tensors
        start, stop = ctx.start, ctx.stop
        scale = grad / A.shape[0] ** 2
        whole = start == 0 and stop == A.shape[0]
        grads: list[Tensor | None] = []
        for x, g, need in ((A, gb, ctx.needs_input_grad[0]), (B, ga, ctx.needs_input_grad[1])):
            if not need:
                grads.append(None)
            elif whole:  # g is symmetric: d/dX sum(X X^T o G) = 2 G X
                grads.append(torch.mm(g, x).mul_(2 * scale))
            else:
                out = torch.mm(g.t(), x[start:stop])  # (N, D)
                out[start:stop] += torch.mm(g, x)
                grads.append(out.mul_(scale))
        return grads[0], grads[1], None, None


def dense_loss(A: Tensor, B: Tensor, lambd: float, start: int, stop: int) -> Tensor:
    """Rows ``[start, stop)`` of the loss from a stored strip of ``C`` (``"dense"``)."""
    return apply_function(DenseCrossCorrelationLoss, A, B, lambd, start, stop)


def tiled_loss(
    A: Tensor, B: Tensor, lambd: float, start: int, stop: int, budget: int = STRIP_ELEMENTS
) -> Tensor:
    """Rows ``[start, stop)`` of the loss in recomputed strips of ``budget`` elements."""
    return apply_function(TiledCrossCorrelationLoss, A, B, lambd, start, stop, budget)


def gram_frobenius(A: Tensor, B: Tensor, start: int, stop: int) -> Tensor:
    """Rows ``[start, stop)`` of ``sum((A A^T) o (B B^T)) / N^2`` (``"gram"``)."""
    return apply_function(GramFrobenius, A, B, start, stop)
