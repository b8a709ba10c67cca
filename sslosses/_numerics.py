"""The dtype policy and the reductions of the losses (private).

A loss computes in float32 for float16/bfloat16/float32 inputs and in float64 when any input
is float64 (:func:`compute_dtype`, :func:`upcast`), with autocast disabled on the inputs'
device (:func:`no_autocast`); :func:`reduce` applies a validated ``reduction`` and
:func:`clamp_value` keeps a bounded loss inside its bound without touching its gradient.
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
