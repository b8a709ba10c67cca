"""The views each method trains on: sslosses.transforms, batched on the training device with
a seeded generator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.train.config import MULTICROP_RECIPES, Resolved
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

    The method's ``MethodSpec.augmentation`` names the recipe. RGB data gets it at the data's
    crop size: SimCLR's (colour strength 0.5 and no blur, its CIFAR-10 setting), MoCo v2's
    (SimCLR's with strength 0.5 and blur; MoCo and SimSiam), BYOL's asymmetric pair (BYOL and
    the methods that copy it: Barlow Twins, VICReg, TiCo, W-MSE), DINO's and SwAV's multi-crop.
    Grayscale data (digits, Fashion-MNIST) gets random resized crops, brightness
    and contrast jitter, and flips where they make sense (not for digits); no hue, saturation
    or grayscale (meaningless) and no blur (it erases 8x8 digits).
    """
    m, s = tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
    recipe, preset = r.spec.augmentation, r.preset
    size, small, scale = r.image_size, r.small_crop_size, preset.crop_scale
    gray = data.train_x.shape[1] == 1
    multicrop: MultiCrop
    if gray:
        # Grayscale images go through the pipeline with their one channel (brightness and
        # contrast jitter work on it; contrast's luma is the channel itself).
        sizes, counts, scales = [size], [2], [scale]
        if recipe in MULTICROP_RECIPES and r.small_crops:
            sizes, counts = [size, small], [2, r.small_crops]
            scales = [scale, preset.small_crop_scale]
        jitter = Augmentation(jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.8, mean=m, std=s)
        multicrop = MultiCrop(
            sizes, counts, scales, augmentations=jitter, flip_prob=0.5 if preset.flip else 0.0
        )
    elif recipe == "simclr":
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.0, mean=m, std=s)
    elif recipe == "mocov2":
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.5, mean=m, std=s)
    elif recipe == "byol":
        multicrop = byol_transform(size, scale=scale, mean=m, std=s)
    elif recipe == "dino":
        multicrop = dino_transform(
            size,
            small,
            local_count=r.small_crops,
            global_scale=scale,
            local_scale=preset.small_crop_scale,
            mean=m,
            std=s,
        )
    else:  # "swav"
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
