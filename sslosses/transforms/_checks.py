"""Argument validation for the transforms (private).

Builds on :mod:`sslosses._validation`; every error names the argument, what was expected and what
came.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sslosses._validation import check_non_negative, check_positive_int

__all__ = [
    "Size",
    "as_batch",
    "check_generator",
    "check_images",
    "check_interval",
    "check_probability",
    "check_size",
    "check_stats",
    "check_strengths",
    "check_unit_interval",
]

Size = int | tuple[int, int]
"""An output size: ``s`` for an ``s x s`` crop or ``(height, width)``."""


def check_images(name: str, value: object) -> Tensor:
    """Check images: a ``uint8`` or floating tensor of shape ``(N, C, H, W)`` or ``(C, H, W)``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != torch.uint8 and not value.is_floating_point():
        raise TypeError(
            f"{name} must have dtype torch.uint8 or a floating dtype, got {value.dtype}"
        )
    if value.dim() not in (3, 4):
        raise ValueError(
            f"{name} must be a 4-D (N, C, H, W) or 3-D (C, H, W) tensor, "
            f"got {value.dim()}-D with shape {tuple(value.shape)}"
        )
    if any(s == 0 for s in value.shape[-3:]):
        raise ValueError(f"{name} must have C, H, W > 0, got shape {tuple(value.shape)}")
    return value


def as_batch(name: str, value: object) -> tuple[Tensor, bool]:
    """Validate ``value`` (:func:`check_images`) and convert it to a float ``(N, C, H, W)`` batch.

    ``uint8`` becomes float32 in ``[0, 1]`` (divided by 255); float16/bfloat16 become float32;
    float32 and float64 are kept. Returns the batch and whether the input had no batch dimension.
    """
    images = check_images(name, value)
    if images.dtype == torch.uint8:
        images = images.to(torch.float32) / 255.0
    elif images.dtype not in (torch.float32, torch.float64):
        images = images.to(torch.float32)
    unbatched = images.dim() == 3
    return (images.unsqueeze(0) if unbatched else images), unbatched


def check_probability(name: str, value: object) -> float:
    """Check that ``value`` is a real number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def _check_pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (min, max) of floats, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name} must be a pair (min, max) of finite floats, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    return low, high


def check_unit_interval(name: str, value: object) -> tuple[float, float]:
    """Check a crop-scale range ``(min, max)`` with ``0 < min <= max <= 1``."""
    low, high = _check_pair(name, value)
    if not (low > 0.0 and high <= 1.0):
        raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {value!r}")
    return low, high


def check_interval(name: str, value: object, *, allow_zero: bool = False) -> tuple[float, float]:
    """Check a range ``(min, max)`` with ``0 < min <= max`` (``0 <= min`` if ``allow_zero``)."""
    low, high = _check_pair(name, value)
    if low < 0.0 or (low == 0.0 and not allow_zero):
        bound = "<=" if allow_zero else "<"
        raise ValueError(f"{name} must satisfy 0 {bound} min <= max, got {value!r}")
    return low, high


def check_size(name: str, value: object) -> tuple[int, int]:
    """Check an output size: a positive ``int`` or a pair ``(height, width)`` of positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return check_positive_int(f"{name}[0]", value[0]), check_positive_int(
            f"{name}[1]", value[1]
        )
    size = check_positive_int(name, value)
    return size, size


def check_stats(name: str, value: object, *, positive: bool) -> tuple[float, ...]:
    """Check per-channel normalization statistics (a non-empty sequence of finite floats)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of floats, got {value!r}")
    out: list[float] = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name}[{i}] must be a finite float, got {v!r}")
        if positive and v <= 0:
            raise ValueError(f"{name}[{i}] must be > 0, got {v}")
        out.append(float(v))
    return tuple(out)


def check_generator(value: object) -> torch.Generator | None:
    """Check that ``value`` is a :class:`torch.Generator` or ``None``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_strengths(value: object) -> tuple[float, float, float, float]:
    """Check colour-jitter strengths ``(brightness, contrast, saturation, hue)``."""
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise TypeError(
            f"jitter must be a 4-tuple (brightness, contrast, saturation, hue), got {value!r}"
        )
    names = ("brightness", "contrast", "saturation", "hue")
    b, c, s, h = (check_non_negative(f"jitter {n}", v) for n, v in zip(names, value, strict=True))
    if h > 0.5:
        raise ValueError(f"jitter hue must be in [0, 0.5], got {h}")
    return b, c, s, h
