"""Shared argument validation, dtype policy and reductions (private).

Every public loss validates its inputs through these helpers so that the functional and module
paths cannot drift apart and every error names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal, TypeAlias

import torch
from torch import Tensor

Reduction: TypeAlias = Literal["none", "mean", "sum"]
_REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def check_tensor(name: str, value: object, ndim: int | None = None) -> Tensor:
    """Check that ``value`` is a floating-point tensor (of rank ``ndim`` when given)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D tensor, got {value.dim()}-D with shape {tuple(value.shape)}"
        )
    return value


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two tensors have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_device(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two tensors live on the same device."""
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def check_min_batch(name: str, tensor: Tensor, minimum: int) -> None:
    """Check that ``tensor`` has at least ``minimum`` rows."""
    if tensor.shape[0] < minimum:
        raise ValueError(
            f"{name} must have a batch size of at least {minimum}, got {tensor.shape[0]}"
        )


def check_min_features(name: str, tensor: Tensor, minimum: int = 1) -> None:
    """Check that ``tensor`` has at least ``minimum`` columns (features)."""
    if tensor.shape[1] < minimum:
        raise ValueError(
            f"{name} must have at least {minimum} feature(s) (dim 1), got shape "
            f"{tuple(tensor.shape)}"
        )


def check_positive(name: str, value: object) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return number


def check_non_negative(name: str, value: object) -> float:
    """Check that ``value`` is a finite real number >= 0 and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return number


def check_positive_int(name: str, value: object) -> int:
    """Check that ``value`` is an integer > 0 (any ``numbers.Integral`` but ``bool``).

    Returns it as a Python ``int`` (e.g. for a NumPy integer).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be an int > 0, got {value}")
    return int(value)


def check_non_negative_int(name: str, value: object) -> int:
    """Check that ``value`` is an ``int`` >= 0 (a step count, a number of crops, ...)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Check that ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {expected}, got {value!r}")
    return value


def check_reduction(reduction: object) -> Reduction:
    """Check a ``reduction`` argument against PyTorch's contract."""
    check_choice("reduction", reduction, _REDUCTIONS)
    return reduction  # type: ignore[return-value]


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
