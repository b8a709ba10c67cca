r"""Triton kernels for the fused off-diagonal loss of Barlow Twins and VICReg (private, optional).

The loss and its notation are those of :mod:`sslosses.kernels.offdiag_torch`. The forward
kernel gives each program one ``(BLOCK_I, BLOCK_J)`` tile of :math:`C = A^\top B / s`: it
accumulates the tile over the batch in float32 registers, squares, weights
(:math:`w_\mathrm{on}` on the diagonal against a target of 1, :math:`w_\mathrm{off}` off it)
and sums it, and writes one partial sum.
Neither :math:`C` nor any ``(D, D)`` tensor is stored. The backward recomputes :math:`C` strip by
strip: a second kernel turns each tile into :math:`M = 2\,W \circ (C - I)` scaled by
``grad / s`` (the same fused tile, written out for the strip only), and two matrix products
give :math:`\partial L/\partial A = B M^\top` and :math:`\partial L/\partial B \mathrel{+}= A M`.

Float32 tiles use ``input_precision="ieee"`` unless ``torch.backends.cuda.matmul.allow_tf32``
is set, so the kernel matches the dense path's cuBLAS products under the same setting.

Triton is optional: without it ``HAS_TRITON`` is ``False`` and nothing here may be called; the
loss then uses :mod:`sslosses.kernels.offdiag_torch` everywhere. On CPU the kernels run
only under ``TRITON_INTERPRET=1`` (the tests do this).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sslosses._autograd import apply_function, first_order_only
from sslosses.kernels.offdiag_torch import NO_DOUBLE_BACKWARD, STRIP_ELEMENTS, WHAT, strip_height

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

__all__ = ["BLOCKS", "HAS_TRITON", "TritonOffDiagonalLoss", "triton_loss", "usable"]

HAS_TRITON: bool = triton is not None
"""Whether Triton imported; the fused path falls back to PyTorch silently when it did not."""

BLOCKS: tuple[int, int, int] = (64, 64, 32)
"""Default ``(BLOCK_I, BLOCK_J, BLOCK_N)``: rows and columns of a tile of C, batch chunk."""

_DTYPES = (torch.float32, torch.float16)


def usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Triton kernels serve tensors of this device and dtype."""
    return HAS_TRITON and device.type == "cuda" and dtype in _DTYPES


def _tile_impl(
    a_ptr: Any,
    b_ptr: Any,
    n: Any,
    offs_i: Any,
    offs_j: Any,
    mask_i: Any,
    mask_j: Any,
    stride_an: Any,
    stride_ad: Any,
    stride_bn: Any,
    stride_bd: Any,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
) -> Any:
    """The ``(BLOCK_I, BLOCK_J)`` tile ``sum_n A[n, i] B[n, j]`` in float32."""
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for n0 in range(0, n, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n
        at = tl.load(  # (BLOCK_I, BLOCK_N): a tile of A^T
            a_ptr + offs_i[:, None] * stride_ad + offs_n[None, :] * stride_an,
            mask=mask_i[:, None] & mask_n[None, :],
            other=0.0,
        )
        b = tl.load(  # (BLOCK_N, BLOCK_J)
            b_ptr + offs_n[:, None] * stride_bn + offs_j[None, :] * stride_bd,
            mask=mask_n[:, None] & mask_j[None, :],
            other=0.0,
        )
        acc = tl.dot(at, b, acc, input_precision=PRECISION)
    return acc


def _deviation_tile_impl(
    a_ptr: Any,
    b_ptr: Any,
    n: Any,
    d: Any,
    row_start: Any,
    row_stop: Any,
    stride_an: Any,
    stride_ad: Any,
    stride_bn: Any,
    stride_bd: Any,
    inv_div: Any,
    on_weight: Any,
    off_weight: Any,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
) -> Any:
    """This program's tile of ``C - I`` and of ``W * (C - I)``, its row offsets (relative to
    ``row_start``), its column offsets and its mask: the part both kernels share."""
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    offs_i = row_start + pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_i = offs_i < row_stop
    mask_j = offs_j < d
    acc = _tile(
        a_ptr, b_ptr, n, offs_i, offs_j, mask_i, mask_j,
        stride_an, stride_ad, stride_bn, stride_bd,
        BLOCK_I, BLOCK_J, BLOCK_N, PRECISION,
    )  # fmt: skip
    c = acc * inv_div
    on_diag = offs_i[:, None] == offs_j[None, :]
    dev = tl.where(on_diag, c - 1.0, c)
    weighted = tl.where(on_diag, on_weight, off_weight) * dev
    return dev, weighted, offs_i - row_start, offs_j, mask_i[:, None] & mask_j[None, :]


def _forward_impl(
    a_ptr: Any,
    b_ptr: Any,
    out_ptr: Any,
    n: Any,
    d: Any,
    row_start: Any,
    row_stop: Any,
    stride_an: Any,
    stride_ad: Any,
    stride_bn: Any,
    stride_bd: Any,
    inv_div: Any,
    on_weight: Any,
    off_weight: Any,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    dev, weighted, _, _, mask = _deviation_tile(
        a_ptr, b_ptr, n, d, row_start, row_stop,
        stride_an, stride_ad, stride_bn, stride_bd, inv_div, on_weight, off_weight,
        BLOCK_I, BLOCK_J, BLOCK_N, PRECISION,
    )  # fmt: skip
    val = tl.where(mask, weighted * dev, 0.0)
    out = out_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(out, tl.sum(tl.sum(val, axis=1), axis=0))


def _grad_impl(
    a_ptr: Any,
    b_ptr: Any,
    m_ptr: Any,
    g_ptr: Any,
    n: Any,
    d: Any,
    row_start: Any,
    row_stop: Any,
    stride_an: Any,
    stride_ad: Any,
    stride_bn: Any,
    stride_bd: Any,
    stride_mi: Any,
    stride_mj: Any,
    inv_div: Any,
    on_weight: Any,
    off_weight: Any,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    _, weighted, rows, offs_j, mask = _deviation_tile(
        a_ptr, b_ptr, n, d, row_start, row_stop,
        stride_an, stride_ad, stride_bn, stride_bd, inv_div, on_weight, off_weight,
        BLOCK_I, BLOCK_J, BLOCK_N, PRECISION,
    )  # fmt: skip
    m = weighted * (2.0 * inv_div * tl.load(g_ptr).to(tl.float32))
    tl.store(
        m_ptr + rows[:, None] * stride_mi + offs_j[None, :] * stride_mj,
        m.to(m_ptr.dtype.element_ty),
        mask=mask,
    )


# The kernels call each other by these global names, which Triton resolves at compile time.
_tile: Any = triton.jit(_tile_impl) if HAS_TRITON else None
_deviation_tile: Any = triton.jit(_deviation_tile_impl) if HAS_TRITON else None
_forward_kernel: Any = triton.jit(_forward_impl) if HAS_TRITON else None
_grad_kernel: Any = triton.jit(_grad_impl) if HAS_TRITON else None


def _precision(A: Tensor) -> str:
    if A.dtype == torch.float32 and A.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def forward(
    A: Tensor,
    B: Tensor,
    weights: tuple[float, float, float],
    start: int,
    stop: int,
    blocks: tuple[int, int, int],
) -> Tensor:
    """The partial loss over rows ``[start, stop)`` of ``C`` (0-d, float32)."""
    n, d = A.shape
    bi, bj, bn = blocks
    grid = (_cdiv(stop - start, bi), _cdiv(d, bj))
    partial = torch.zeros(grid[0] * grid[1], dtype=torch.float32, device=A.device)
    if stop > start:
        _forward_kernel[grid](
            A, B, partial, n, d, start, stop,
            A.stride(0), A.stride(1), B.stride(0), B.stride(1),
            1.0 / weights[0], weights[1], weights[2],
            BLOCK_I=bi, BLOCK_J=bj, BLOCK_N=bn, PRECISION=_precision(A),
        )  # fmt: skip
    return partial.sum()


def grad_strip(
    A: Tensor,
    B: Tensor,
    grad: Tensor,
    weights: tuple[float, float, float],
    start: int,
    stop: int,
    blocks: tuple[int, int, int],
) -> Tensor:
    """Rows ``[start, stop)`` of ``grad * 2 W o (C - I) / s`` as a ``(stop - start, D)`` tensor."""
    n, d = A.shape
    bi, bj, bn = blocks
    m = torch.empty(stop - start, d, dtype=A.dtype, device=A.device)
    g = grad.detach().reshape(1).to(torch.float32)
    grid = (_cdiv(stop - start, bi), _cdiv(d, bj))
    _grad_kernel[grid](
        A, B, m, g, n, d, start, stop,
        A.stride(0), A.stride(1), B.stride(0), B.stride(1), m.stride(0), m.stride(1),
        1.0 / weights[0], weights[1], weights[2],
        BLOCK_I=bi, BLOCK_J=bj, BLOCK_N=bn, PRECISION=_precision(A),
    )  # fmt: skip
    return m


class TritonOffDiagonalLoss(torch.autograd.Function):
    """``"fused"`` with Triton: tiles reduced in registers; the backward recomputes strips."""

    @staticmethod
    def forward(
        ctx: Any,
        A: Tensor,
        B: Tensor | None,
        weights: tuple[float, float, float],
        start: int,
        stop: int,
        budget: int = STRIP_ELEMENTS,
        blocks: tuple[int, int, int] = BLOCKS,
    ) -> Tensor:
        ctx.save_for_backward(A, B)
        ctx.args = (weights, start, stop, budget, blocks)
        return forward(A, A if B is None else B, weights, start, stop, blocks)

    @staticmethod
    @first_order_only(WHAT, NO_DOUBLE_BACKWARD)
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        A, B = ctx.saved_tensors
        weights, start, stop, budget, blocks = ctx.args
        symmetric = B is None
        other = A if symmetric else B
        height = strip_height(A.shape[1], budget)
        if symmetric and start == 0 and stop == A.shape[1]:
            # all of M, which is symmetric: both factors' contributions equal A M
            grad = grad * 2
            need_a, need_b = False, ctx.needs_input_grad[0]
        else:
            need_a = ctx.needs_input_grad[0]
            need_b = ctx.needs_input_grad[1] or (symmetric and need_a)
        grad_a = torch.zeros_like(A) if need_a else None
        grad_b = (
            (grad_a if grad_a is not None and symmetric else torch.zeros_like(other))
            if need_b
            else None
        )
        for s in range(start, stop, height):
            t = min(s + height, stop)
            m = grad_strip(A, other, grad, weights, s, t, blocks)  # (S, D)
            if grad_a is not None:
                grad_a[:, s:t] += torch.mm(other, m.t())
            if grad_b is not None:
                grad_b.addmm_(A[:, s:t], m)
        if symmetric:
            return grad_b if grad_a is None else grad_a, None, None, None, None, None, None
        return grad_a, grad_b, None, None, None, None, None


def triton_loss(
    A: Tensor,
    B: Tensor | None,
    divisor: float,
    on_weight: float,
    off_weight: float,
    start: int,
    stop: int,
    budget: int = STRIP_ELEMENTS,
    blocks: tuple[int, int, int] = BLOCKS,
) -> Tensor:
    """Rows ``[start, stop)`` of the loss with the Triton kernels (0-d float32, differentiable)."""
    weights = (float(divisor), float(on_weight), float(off_weight))
    return apply_function(TritonOffDiagonalLoss, A, B, weights, start, stop, budget, blocks)
