"""The dtype policy and the reductions of the losses (private).

A loss computes in float32 for float16/bfloat16/float32 inputs and in float64 when any input
is float64 (:func:`compute_dtype`, :func:`upcast`), with autocast disabled on the inputs'
device (:func:`no_autocast`); :func:`reduce` applies a validated ``reduction``,
:func:`clamp_value` keeps a bounded loss inside its bound without touching its gradient, and
:func:`column_dots` sums products over the rows without an ``(N, D)`` temporary.
Argument checks are in :mod:`sslosses._validation`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslosses.typing import Reduction


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a loss computes in: float64 if any input is float64, else float32."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def upcast(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast ``tensor`` to the compute ``dtype`` (a no-op when it already has it)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def reduce(loss: Tensor, reduction: Reduction) -> Tensor:
    """Apply a validated ``reduction`` to a per-sample loss of shape ``(N,)``."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


COLUMN_DOTS_ELEMENTS = 1 << 18
"""The most elements of the temporary product :func:`column_dots` holds at once (1 MiB float32)."""


def column_dots(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(dim=0)`` for ``(N, D)`` tensors, without their ``(N, D)`` product.

    Row blocks of at most :data:`COLUMN_DOTS_ELEMENTS` elements: a full-size temporary would be
    fresh memory (page faults) on every call of a loss, and costs more than the sum itself.
    Not differentiable by itself (for the forward of custom autograd Functions).
    """
    n, d = a.shape
    rows = max(1, COLUMN_DOTS_ELEMENTS // max(d, 1))
    out = a.new_zeros(d)  # (D,)
    for s in range(0, n, rows):
        out += (a[s : s + rows] * b[s : s + rows]).sum(dim=0)
    return out


def clamp_value(loss: Tensor, low: float, high: float) -> Tensor:
    """``loss`` with its value clamped to ``[low, high]`` and its gradient left as it was.

    For bounded losses whose float32 value can leave the bound by an ulp through rounding:
    the value is exactly ``loss.clamp(low, high)`` and the gradient (of any order) is that of
    ``loss`` everywhere, so a row just past the bound keeps its gradient.
    """
    value = loss.detach()
    return value.clamp(low, high) + (loss - value)


def no_autocast(tensor: Tensor) -> torch.autocast:
    """A context that disables autocast on ``tensor``'s device, so losses compute in float32."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)
