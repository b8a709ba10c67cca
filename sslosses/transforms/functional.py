r"""Deterministic, batched image operations with per-sample parameters.

Every function takes images as ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` (read as
``value / 255``) or floating point, on any device, and returns floating-point images: float32
for ``uint8``/float16/bfloat16/float32 input, float64 for float64 input. Colour operations
expect RGB values in ``[0, 1]`` and keep them there. A per-sample parameter is a Python or
NumPy number (the same for every image, checked) or a tensor of shape ``(N,)`` (not read, so
that no device synchronization is needed). The result is always a new tensor.

The random parts (which crop, which factor, whether to apply) live in
:class:`~sslosses.transforms.RandomResizedCrop` and :class:`~sslosses.transforms.Augmentation`;
these functions only compute.
"""

from __future__ import annotations

# The operations live in private modules by concern (colour, blur, crop geometry; shared
# helpers in _kernels); this module is their public face.
from sslosses.transforms import _color
from sslosses.transforms._blur import blur_kernel_size, gaussian_blur, gaussian_kernels
from sslosses.transforms._color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    normalize,
    rgb_to_grayscale,
    solarize,
    to_float,
)
from sslosses.transforms._geometry import resized_crop, sample_crop_boxes

GRAYSCALE_WEIGHTS: tuple[float, float, float] = _color.GRAYSCALE_WEIGHTS
"""ITU-R BT.601 luma weights for R, G, B (PIL's ``convert("L")``; torchvision uses 0.2989)."""

__all__ = [
    "GRAYSCALE_WEIGHTS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "gaussian_blur",
    "gaussian_kernels",
    "normalize",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
    "to_float",
]
