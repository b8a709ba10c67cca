"""Edge inputs of ``sslosses.transforms``: empty batches, bad parameters, aliasing (issue 10)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from sslosses.transforms import (
    Augmentation,
    MultiCrop,
    RandomResizedCrop,
    byol_transform,
    dino_transform,
    simclr_transform,
    swav_transform,
)
from sslosses.transforms import functional as TF

X = torch.rand(2, 3, 6, 6)


# --------------------------------------------------------------------------------------------
# Item 8: an empty batch (N = 0) gives empty crops
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("antialias", [False, True])
def test_resized_crop_of_an_empty_batch_is_empty(antialias: bool) -> None:
    empty = torch.zeros(0, 3, 10, 12, dtype=torch.uint8)
    out = TF.resized_crop(empty, torch.zeros(0, 4, dtype=torch.int64), (4, 5), antialias=antialias)
    assert out.shape == (0, 3, 4, 5) and out.dtype == torch.float32
    flip = torch.zeros(3, 0, dtype=torch.bool)
    out = TF.resized_crop(
        empty, torch.zeros(3, 0, 4, dtype=torch.int64), 4, flip=flip, antialias=antialias
    )
    assert out.shape == (3, 0, 3, 4, 4)


@pytest.mark.parametrize("antialias", [False, True])
def test_random_resized_crop_of_an_empty_batch_is_empty(antialias: bool) -> None:
    crop = RandomResizedCrop(4, antialias=antialias)
    out = crop(torch.zeros(0, 3, 10, 12, dtype=torch.float64))
    assert out.shape == (0, 3, 4, 4) and out.dtype == torch.float64
    params = crop.sample_params(0, 10, 12, count=2)
    assert params.boxes.shape == (2, 0, 4) and params.flip.shape == (2, 0)
    assert crop.apply_params(torch.zeros(0, 3, 10, 12), params).shape == (2, 0, 3, 4, 4)


def test_multicrop_of_an_empty_batch_is_empty() -> None:
    multicrop = MultiCrop((6, 4), (2, 3), ((0.4, 1.0), (0.1, 0.4)), augmentations=Augmentation())
    crops = multicrop(torch.zeros(0, 3, 10, 12, dtype=torch.uint8))
    assert [tuple(c.shape) for c in crops] == [(0, 3, 6, 6)] * 2 + [(0, 3, 4, 4)] * 3


@pytest.mark.parametrize(
    ("preset", "shapes"),
    [
        (lambda: simclr_transform(8), [(0, 3, 8, 8)] * 2),
        (lambda: byol_transform(8), [(0, 3, 8, 8)] * 2),
        (lambda: swav_transform(8, 4, local_count=2), [(0, 3, 8, 8)] * 2 + [(0, 3, 4, 4)] * 2),
        (lambda: dino_transform(8, 4, local_count=1), [(0, 3, 8, 8)] * 2 + [(0, 3, 4, 4)]),
    ],
)
def test_presets_on_an_empty_batch_return_empty_crops(
    preset: Callable[[], MultiCrop], shapes: list[tuple[int, ...]]
) -> None:
    crops = preset()(torch.zeros(0, 3, 16, 16, dtype=torch.uint8))
    assert [tuple(c.shape) for c in crops] == shapes


# --------------------------------------------------------------------------------------------
# Item 9: flip must be a bool tensor
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_resized_crop_rejects_a_non_bool_flip(dtype: torch.dtype) -> None:
    boxes = torch.tensor([[0, 0, 4, 4], [1, 1, 3, 3]])
    with pytest.raises(TypeError, match=rf"flip must be a bool tensor, got dtype {dtype}"):
        TF.resized_crop(X, boxes, 4, flip=torch.ones(2, dtype=dtype))


# --------------------------------------------------------------------------------------------
# Item 11: colour factors, blur sigma and solarize threshold are validated
# --------------------------------------------------------------------------------------------
ADJUST = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]


@pytest.mark.parametrize("op", ADJUST)
@pytest.mark.parametrize("factor", [-0.5, -1, math.nan, math.inf, np.float32(-2.0)])
def test_colour_factors_must_be_finite_and_non_negative(
    op: Callable[[torch.Tensor, float], torch.Tensor], factor: float
) -> None:
    with pytest.raises(ValueError, match=r"factor must be a finite number >= 0, got"):
        op(X, factor)


@pytest.mark.parametrize("op", ADJUST)
def test_colour_factors_of_the_wrong_type_name_the_argument(
    op: Callable[[torch.Tensor, object], torch.Tensor],
) -> None:
    with pytest.raises(TypeError, match=r"factor must be a float or a Tensor, got str"):
        op(X, "1.5")
    with pytest.raises(TypeError, match=r"factor must be a float or a Tensor, got bool"):
        op(X, True)


@pytest.mark.parametrize("op", ADJUST)
def test_colour_factors_accept_numpy_scalars(
    op: Callable[[torch.Tensor, float], torch.Tensor],
) -> None:
    torch.testing.assert_close(op(X, np.float32(0.5)), op(X, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(op(X, np.int64(0)), op(X, 0.0), rtol=0, atol=0)


@pytest.mark.parametrize("sigma", [math.nan, math.inf, -1.0, np.float64(-0.5)])
def test_gaussian_blur_rejects_a_non_finite_or_negative_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match=r"sigma must be a finite number >= 0, got"):
        TF.gaussian_blur(X, sigma, 3)


def test_gaussian_blur_accepts_a_numpy_sigma() -> None:
    torch.testing.assert_close(
        TF.gaussian_blur(X, np.float32(1.5), 5), TF.gaussian_blur(X, 1.5, 5), rtol=0, atol=0
    )


def test_solarize_validates_the_threshold() -> None:
    with pytest.raises(ValueError, match=r"threshold must be a finite number, got nan"):
        TF.solarize(X, math.nan)
    with pytest.raises(TypeError, match=r"threshold must be a float, got str"):
        TF.solarize(X, "0.5")  # type: ignore[arg-type]
    torch.testing.assert_close(TF.solarize(X, np.float32(0.5)), TF.solarize(X, 0.5))


# --------------------------------------------------------------------------------------------
# Item 15: outputs never alias the input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "images",
    [
        torch.rand(2, 3, 6, 6),  # kernel size 1
        torch.rand(2, 3, 1, 1),  # 1-pixel images
        torch.rand(3, 1, 1, dtype=torch.float64),  # unbatched
    ],
)
def test_gaussian_blur_never_returns_the_input(images: torch.Tensor) -> None:
    kernel_size = 1 if images.shape[-1] > 1 else 5
    before = images.clone()
    out = TF.gaussian_blur(images, 1.0, kernel_size)
    assert torch.equal(out, before)
    assert out is not images and out.data_ptr() != images.data_ptr()
    out.add_(1.0)
    assert torch.equal(images, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 4, 4)])
def test_to_float_never_returns_the_input(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    images = torch.rand(shape, dtype=dtype)
    before = images.clone()
    out = TF.to_float(images)
    assert torch.equal(out, before) and out.dtype == dtype
    assert out is not images and out.data_ptr() != images.data_ptr()
    out.add_(1.0)
    assert torch.equal(images, before)


@pytest.mark.parametrize(
    "op",
    [
        TF.to_float,
        TF.rgb_to_grayscale,
        lambda x: TF.adjust_brightness(x, 1.0),
        lambda x: TF.adjust_contrast(x, 1.0),
        lambda x: TF.adjust_saturation(x, 1.0),
        lambda x: TF.adjust_hue(x, 0.0),
        lambda x: TF.solarize(x, 2.0),  # nothing reaches the threshold: the identity
        lambda x: TF.normalize(x, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        lambda x: TF.gaussian_blur(x, 0.0, 3),
    ],
)
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 1, 1)])
def test_no_image_function_returns_memory_of_its_input(
    op: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]
) -> None:
    images = torch.rand(shape)
    before = images.clone()
    out = op(images)
    assert out.untyped_storage().data_ptr() != images.untyped_storage().data_ptr()
    out.fill_(2.0)
    assert torch.equal(images, before)
