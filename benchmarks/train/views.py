"""The views each method trains on: sslosses.transforms, batched on the training device with
a seeded generator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.train.config import MULTICROP_METHODS, Resolved
from benchmarks.train.data import Data
from sslosses.transforms import (
    Augmentation,
    MultiCrop,
    byol_transform,
    dino_transform,
    simclr_transform,
    swav_transform,
)

# ------------------------------------------------------------------------------------------------
# 3. Augmentations (sslosses.transforms: batched, on the training device, seeded generator)
# ------------------------------------------------------------------------------------------------

Augment = Callable[[Tensor, torch.Generator], list[Tensor]]


def build_augment(r: Resolved, data: Data, mean: Tensor, std: Tensor) -> Augment:
    """The views each method trains on, normalized with the data's channel statistics.

    RGB data gets each paper's recipe at the data's crop size: SimCLR's (colour strength 0.5
    and no blur, its CIFAR-10 setting), MoCo v2's for MoCo and SimSiam (SimCLR's with strength
    0.5 and blur), BYOL's asymmetric pair for BYOL and Barlow Twins (which copies it), SwAV's
    multi-crop. Grayscale data (digits, Fashion-MNIST) gets random resized crops, brightness
    and contrast jitter, and flips where they make sense (not for digits); no hue, saturation
    or grayscale (meaningless) and no blur (it erases 8x8 digits).
    """
    m, s = tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
    method, preset = r.method, r.preset
    size, small, scale = r.image_size, r.small_crop_size, preset.crop_scale
    gray = data.train_x.shape[1] == 1
    multicrop: MultiCrop
    if gray:
        # Grayscale images go through the pipeline with their one channel (brightness and
        # contrast jitter work on it; contrast's luma is the channel itself).
        sizes, counts, scales = [size], [2], [scale]
        if method in MULTICROP_METHODS and r.small_crops:
            sizes, counts = [size, small], [2, r.small_crops]
            scales = [scale, preset.small_crop_scale]
        jitter = Augmentation(jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.8, mean=m, std=s)
        multicrop = MultiCrop(
            sizes, counts, scales, augmentations=jitter, flip_prob=0.5 if preset.flip else 0.0
        )
    elif method in ("simclr", "supervised", "supcon", "nnclr", "dcl", "align-uniform"):
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.0, mean=m, std=s)
    elif method in ("moco", "simsiam"):
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.5, mean=m, std=s)
    elif method in ("byol", "barlow-twins", "vicreg", "tico", "wmse"):  # as VICReg: BYOL's
        multicrop = byol_transform(size, scale=scale, mean=m, std=s)
    elif method in ("dino", "dino-sinkhorn", "dinov2"):
        multicrop = dino_transform(
            size,
            small,
            local_count=r.small_crops,
            global_scale=scale,
            local_scale=preset.small_crop_scale,
            mean=m,
            std=s,
        )
    else:
        multicrop = swav_transform(
            size,
            small,
            local_count=r.small_crops,
            global_scale=scale,
            local_scale=preset.small_crop_scale,
            blur_kernel_size=None,
            mean=m,
            std=s,
        )

    def augment(images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return list(multicrop(to_float(images, data), generator=generator))

    return augment


def to_float(images: Tensor, data: Data) -> Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1]."""
    return images.float() / data.max_value
