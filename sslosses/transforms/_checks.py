"""Image checks and the choice of device for random draws (private, transforms only).

Numeric and other argument checks live in :mod:`sslosses._validation`; every error names the
argument, what was expected and what came.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslosses._validation import check_generator

__all__ = ["as_batch", "check_images", "random_devices"]


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


def random_devices(
    generator: object, device: torch.device | str | None
) -> tuple[torch.Generator | None, torch.device, torch.device]:
    """Check ``generator`` and pick the devices of a random draw.

    Returns ``(generator, out, draw)``: the results go to ``device`` (default: the generator's
    device, else CPU) and the numbers are drawn on the generator's device (on ``out`` with the
    default generator), so a seeded CPU generator gives the same draws for every ``device``.
    """
    gen = check_generator(generator)
    if device is not None:
        out = torch.device(device)
    else:
        out = gen.device if gen is not None else torch.device("cpu")
    return gen, out, (gen.device if gen is not None else out)
