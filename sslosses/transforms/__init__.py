"""Batched tensor augmentation and multi-crop for self-supervised learning.

Pure PyTorch (no torchvision, no PIL): every operation works on a whole batch
``(N, C, H, W)`` (or one image ``(C, H, W)``) on any device, with per-image random parameters
drawn from an optional :class:`torch.Generator` (same seed, same output). ``uint8`` input is
read as ``value / 255``; outputs are float32 (float64 for float64 input), in ``[0, 1]`` before
normalization.

- :class:`RandomResizedCrop`: torchvision-style random resized crop + horizontal flip, all crops
  of a batch in one ``grid_sample``.
- :class:`Augmentation`: colour jitter, grayscale, Gaussian blur, solarization, normalization.
- :class:`MultiCrop`: groups of crops, each with its own :class:`Augmentation`.
- :func:`forward_multicrop`: one backbone pass per crop resolution (the model side,
  defined in ``sslosses/multicrop.py``; exported here, next to the crops it takes).
- Presets: :func:`simclr_transform`, :func:`byol_transform`, :func:`swav_transform`,
  :func:`dino_transform`.
- :mod:`sslosses.transforms.functional`: the deterministic operations.
"""

from __future__ import annotations

from sslosses.multicrop import forward_multicrop
from sslosses.transforms import functional
from sslosses.transforms.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    AugmentationParams,
)
from sslosses.transforms.crop import CropParams, RandomResizedCrop
from sslosses.transforms.multicrop import MultiCrop
from sslosses.transforms.presets import (
    SWAV_STD,
    byol_transform,
    dino_transform,
    simclr_transform,
    swav_transform,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SWAV_STD",
    "Augmentation",
    "AugmentationParams",
    "CropParams",
    "MultiCrop",
    "RandomResizedCrop",
    "byol_transform",
    "dino_transform",
    "forward_multicrop",
    "functional",
    "simclr_transform",
    "swav_transform",
]
