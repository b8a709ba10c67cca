"""``sslosses.transforms``: batched augmentation against per-sample loops and written-out formulas.

The per-sample loops below (``crop_ref``, ``augment_ref``, ``multicrop_ref``) are the oracles:
one image at a time, the formulas of torchvision / colorsys / the papers written out plainly.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS
from torch import Tensor, nn

import sslosses.multicrop
import sslosses.transforms.augment as augment_module
from benchmarks import references
from sslosses.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SWAV_STD,
    Augmentation,
    AugmentationParams,
    CropParams,
    MultiCrop,
    RandomResizedCrop,
    _blur,
    byol_transform,
    dino_transform,
    forward_multicrop,
    simclr_transform,
    swav_transform,
)
from sslosses.transforms import functional as TF

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(n: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = F64) -> Tensor:
    return torch.rand(n, 3, h, w, generator=gen(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------
# Oracles: one image at a time, formulas written out
# --------------------------------------------------------------------------------------------
# The colour and blur formulas are the shared originals of ``benchmarks/references.py``.
gray_ref = references.gray
hue_ref = references.adjust_hue
jitter_op_ref = references.jitter_op
blur_ref = references.gaussian_blur


def augment_ref(img: Tensor, aug: Augmentation, p: AugmentationParams, i: int) -> Tensor:
    """The Augmentation pipeline on image ``img`` with the parameters of row ``i``."""
    y = img.clone()
    if aug.jitter_prob > 0 and bool(p.jitter[i]):
        order = p.order[i].tolist() if aug.jitter_order == "random" else [0, 1, 2, 3]
        for op in order:
            if aug.jitter[op] > 0:
                y = jitter_op_ref(y, op, float(p.factors[i, op]))
    if bool(p.grayscale[i]):
        y = gray_ref(y).expand(3, -1, -1)
    if bool(p.blur[i]):
        size = aug.blur_kernel_size or 2 * (img.shape[1] // 20) + 1
        y = blur_ref(y, float(p.sigma[i]), size)
    if bool(p.solarize[i]):
        y = torch.where(y >= aug.solarize_threshold, 1 - y, y)
    if aug.mean is not None and aug.std is not None:
        mean = torch.tensor(aug.mean, dtype=y.dtype).view(-1, 1, 1)
        std = torch.tensor(aug.std, dtype=y.dtype).view(-1, 1, 1)
        y = (y - mean) / std
    return y


def crop_ref(
    img: Tensor, box: Sequence[int], size: tuple[int, int], flip: bool, *, antialias: bool
) -> Tensor:
    """Slice the box, resize bilinearly (antialiased or not), flip: torchvision's resized_crop."""
    top, left, h, w = box
    patch = img[:, top : top + h, left : left + w]
    out = F.interpolate(
        patch[None], size=size, mode="bilinear", align_corners=False, antialias=antialias
    )[0]
    return out.flip(-1) if flip else out


def multicrop_ref(
    images: Tensor, mc: MultiCrop, params: list[tuple[CropParams, AugmentationParams]]
) -> list[Tensor]:
    n = images.shape[0]
    out = []
    for (crop_p, aug_p), crop, aug, count in zip(
        params, mc.crops, mc.augmentations, mc.crop_counts, strict=True
    ):
        for v in range(count):
            views = []
            for i in range(n):
                c = crop_ref(
                    images[i],
                    crop_p.boxes[v, i].tolist(),
                    crop.size,
                    bool(crop_p.flip[v, i]),
                    antialias=crop.antialias,
                )
                views.append(augment_ref(c, aug, aug_p, v * n + i))
            out.append(torch.stack(views))
    return out


# --------------------------------------------------------------------------------------------
# Colour operations against hand-computed values
# --------------------------------------------------------------------------------------------
def test_to_float_dtypes() -> None:
    u8 = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    assert torch.equal(TF.to_float(u8), torch.tensor([[[0.0, 0.2, 1.0]]]))
    assert TF.to_float(u8).dtype == torch.float32
    assert TF.to_float(torch.zeros(3, 2, 2, dtype=torch.float16)).dtype == torch.float32
    assert TF.to_float(torch.zeros(3, 2, 2, dtype=torch.bfloat16)).dtype == torch.float32
    assert TF.to_float(torch.zeros(3, 2, 2, dtype=F64)).dtype == F64


def test_grayscale_weights() -> None:
    img = torch.tensor([[[1.0, 0.0, 0.2]], [[0.0, 1.0, 0.4]], [[0.0, 0.0, 0.6]]], dtype=F64)
    expected = torch.tensor([[[0.299, 0.587, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6]]], dtype=F64)
    torch.testing.assert_close(TF.rgb_to_grayscale(img), expected, rtol=0, atol=1e-15)
    assert TF.rgb_to_grayscale(rand_images(2, 3, 3)).shape == (2, 1, 3, 3)


def test_brightness_contrast_saturation_formulas() -> None:
    img = torch.tensor([[[0.2, 0.9]], [[0.5, 0.1]], [[0.4, 0.3]]], dtype=F64)  # (3, 1, 2)
    r, g, b = img[0, 0], img[1, 0], img[2, 0]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # brightness 1.5: 1.5 x, clamped
    torch.testing.assert_close(
        TF.adjust_brightness(img, 1.5), (1.5 * img).clamp(0, 1), rtol=0, atol=1e-15
    )
    assert float(TF.adjust_brightness(img, 1.5)[0, 0, 1]) == 1.0  # 1.35 clamped
    # contrast 0.5 around the mean luma
    m = float(luma.mean())
    torch.testing.assert_close(
        TF.adjust_contrast(img, 0.5), 0.5 * img + 0.5 * m, rtol=0, atol=1e-15
    )
    # saturation 0: the luma in every channel; 2: pushed away from it, clamped
    torch.testing.assert_close(
        TF.adjust_saturation(img, 0.0), luma.expand(3, 1, 2), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        TF.adjust_saturation(img, 2.0), (2 * img - luma).clamp(0, 1), rtol=0, atol=1e-15
    )


def test_per_sample_factors() -> None:
    x = rand_images(3, 4, 5)
    f = torch.tensor([0.5, 1.0, 1.7], dtype=F64)
    for fn in (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue):
        batched = fn(x, f if fn is not TF.adjust_hue else f - 1.0)
        for i in range(3):
            fi = float(f[i]) if fn is not TF.adjust_hue else float(f[i]) - 1.0
            torch.testing.assert_close(batched[i], fn(x[i], fi), rtol=0, atol=1e-15)
    assert torch.equal(TF.adjust_contrast(x, 1.0), x)
    assert torch.equal(TF.adjust_brightness(x, 1.0), x)


@pytest.mark.parametrize("shift", [0.0, 0.1, -0.3, 0.5, -0.5, 1 / 3])
def test_hue_matches_colorsys(shift: float) -> None:
    img = rand_images(1, 4, 5, seed=3)[0]
    img[:, 0, 0] = torch.tensor([0.5, 0.5, 0.5])  # gray: no hue
    img[:, 0, 1] = torch.tensor([0.8, 0.8, 0.1])  # ties in the max
    img[:, 0, 2] = torch.tensor([0.9, 0.2, 0.9])
    out = TF.adjust_hue(img, shift)
    for i in range(4):
        for j in range(5):
            h, s, v = colorsys.rgb_to_hsv(*img[:, i, j].tolist())
            expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
            assert out[:, i, j].tolist() == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(out, hue_ref(img, shift), rtol=0, atol=1e-12)


def test_hue_known_values() -> None:
    red = torch.tensor([1.0, 0.0, 0.0], dtype=F64).view(3, 1, 1)
    torch.testing.assert_close(
        TF.adjust_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1, 0], dtype=F64)
    )
    torch.testing.assert_close(
        TF.adjust_hue(red, -1 / 3).flatten(), torch.tensor([0.0, 0, 1], dtype=F64)
    )
    torch.testing.assert_close(
        TF.adjust_hue(red, 1 / 6).flatten(), torch.tensor([1.0, 1, 0], dtype=F64)
    )


def hue_roundtrip_ref(x: Tensor, shift: Tensor) -> Tensor:
    """The batched HSV round trip that ``_hue`` used before it was streamlined, written plainly."""
    r, g, b = x.unbind(dim=1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(c > 0, c, 1.0)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, (b - r) / safe, (r - g) / safe))
    h6 = torch.where(v == r, torch.remainder(h, 6.0), h + torch.where(v == g, 2.0, 4.0))
    h6 = torch.remainder(h6 + 6.0 * shift.view(-1, 1, 1), 6.0)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)
    return v.unsqueeze(1) - c.unsqueeze(1) * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hue_matches_hsv_roundtrip(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(32, 3, 30, 8, generator=g, dtype=dtype)
    x[:, :, :5] = x[:, :1, :5]  # gray: max == min
    x[:, :, 5:10] = torch.randint(0, 2, (32, 3, 5, 8), generator=g).to(dtype)  # 0 and 1
    x[:, :, 10:15] = torch.round(x[:, :, 10:15] * 4) / 4  # saturated colours, ties
    x[:, 1, 15:20] = x[:, 0, 15:20]  # r == g
    x[:, 2, 20:25] = x[:, 0, 20:25]  # r == b
    x[:, 2, 25:30] = x[:, 1, 25:30]  # g == b
    shift = torch.rand(32, generator=g, dtype=dtype) - 0.5
    shift[:5] = torch.tensor([0.0, 0.5, -0.5, 1 / 3, -1 / 6], dtype=dtype)
    out = TF.adjust_hue(x, shift)
    tol = 1e-13 if dtype == torch.float64 else 4e-6
    torch.testing.assert_close(out, hue_roundtrip_ref(x, shift), rtol=0, atol=tol)
    assert out.min() >= 0 and out.max() <= 1
    gray = x[:, :, :5]
    assert torch.equal(out[:, :, :5], gray)  # gray pixels are left exactly as they are


def test_one_channel_brightness_contrast_grayscale() -> None:
    x = torch.tensor([[[0.1, 0.4], [0.6, 0.9]]], dtype=F64)  # (1, 2, 2), mean 0.5
    torch.testing.assert_close(
        TF.adjust_brightness(x, 1.5), torch.tensor([[[0.15, 0.6], [0.9, 1.0]]], dtype=F64)
    )
    # contrast: f x + (1 - f) mean, the mean of the single channel
    torch.testing.assert_close(
        TF.adjust_contrast(x, 2.0), torch.tensor([[[0.0, 0.3], [0.7, 1.0]]], dtype=F64)
    )
    torch.testing.assert_close(
        TF.adjust_contrast(x, 0.5), torch.tensor([[[0.3, 0.45], [0.55, 0.7]]], dtype=F64)
    )
    batch = torch.stack([x, 0.5 * x])  # (2, 1, 2, 2), means 0.5 and 0.25
    out = TF.adjust_contrast(batch, torch.tensor([0.0, 2.0], dtype=F64))
    torch.testing.assert_close(out[0], torch.full((1, 2, 2), 0.5, dtype=F64))
    torch.testing.assert_close(
        out[1], torch.tensor([[[0.0, 0.15], [0.35, 0.65]]], dtype=F64), rtol=0, atol=1e-15
    )
    gray = TF.rgb_to_grayscale(x)  # 1 channel: the identity, a new tensor
    assert torch.equal(gray, x) and gray.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("order", ["random", "fixed"])
def test_one_channel_augmentation(order: str) -> None:
    x = rand_images(6, 5, 7).mean(dim=1, keepdim=True)  # (6, 1, 5, 7)
    aug = Augmentation(
        jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.7, jitter_order=order, grayscale_prob=0.5
    )
    params = aug.sample_params(6, generator=gen(3))
    out = aug.apply_params(x, params)
    assert out.shape == x.shape
    for i in range(6):
        expected = x[i]
        if params.jitter[i]:
            ops = params.order[i].tolist() if order == "random" else [0, 1, 2, 3]
            for op in ops:
                if op in (0, 1):
                    expected = jitter_op_1ch(expected, op, float(params.factors[i, op]))
        # grayscale on a 1-channel image is the identity
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-12)
    only_gray = Augmentation(grayscale_prob=1.0)
    assert torch.equal(only_gray(x), x)


def jitter_op_1ch(img: Tensor, op: int, factor: float) -> Tensor:
    if op == 0:
        return (factor * img).clamp(0, 1)
    return (factor * img + (1 - factor) * img.mean()).clamp(0, 1)


def test_one_channel_multicrop() -> None:
    aug = Augmentation(jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.8, blur_prob=0.5)
    mc = MultiCrop((16, 8), (2, 3), ((0.4, 1.0), (0.1, 0.4)), augmentations=(aug, aug))
    x = torch.randint(0, 256, (4, 1, 24, 24), dtype=torch.uint8)
    crops = mc(x, generator=gen(0))
    assert [tuple(c.shape) for c in crops] == [(4, 1, 16, 16)] * 2 + [(4, 1, 8, 8)] * 3
    assert all(c.dtype == torch.float32 and c.min() >= 0 and c.max() <= 1 for c in crops)
    again = mc(x, generator=gen(0))
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))


def test_solarize_formula() -> None:
    x = torch.tensor([[[0.0, 0.3, 0.5, 0.7, 1.0]]], dtype=F64)
    expected = torch.tensor([[[0.0, 0.3, 0.5, 0.3, 0.0]]], dtype=F64)
    torch.testing.assert_close(TF.solarize(x), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(
        TF.solarize(x, threshold=0.25), torch.tensor([[[0.0, 0.7, 0.5, 0.3, 0.0]]], dtype=F64)
    )


def test_normalize_formula() -> None:
    x = rand_images(2, 3, 3)
    out = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    m = torch.tensor(IMAGENET_MEAN, dtype=F64).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD, dtype=F64).view(3, 1, 1)
    torch.testing.assert_close(out, (x - m) / s, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Gaussian blur
# --------------------------------------------------------------------------------------------
def test_kernels_sum_to_one_and_match_formula() -> None:
    sigma = torch.tensor([0.1, 0.7, 2.0, 5.0], dtype=F64)
    k = TF.gaussian_kernels(sigma, 9)
    torch.testing.assert_close(k.sum(dim=1), torch.ones(4, dtype=F64), rtol=0, atol=1e-15)
    assert torch.equal(k, k.flip(1))  # symmetric
    i = torch.arange(-4, 5, dtype=F64)
    expected = torch.exp(-(i**2) / (2 * 0.7**2))
    torch.testing.assert_close(k[1], expected / expected.sum(), rtol=0, atol=1e-15)
    delta = TF.gaussian_kernels(torch.zeros(1), 5)
    assert torch.equal(delta, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]))


def test_blur_preserves_constants_and_sigma_zero_is_identity() -> None:
    const = torch.full((3, 3, 12, 10), 0.37, dtype=F64)
    out = TF.gaussian_blur(const, torch.tensor([0.3, 1.0, 2.0], dtype=F64), 7)
    torch.testing.assert_close(out, const, rtol=0, atol=1e-15)
    x = rand_images(2, 9, 9)
    assert torch.equal(TF.gaussian_blur(x, 0.0, 5), x)


def test_blur_matches_2d_reference_per_sample() -> None:
    x = rand_images(3, 14, 11)
    sigma = torch.tensor([0.4, 1.3, 2.0], dtype=F64)
    out = TF.gaussian_blur(x, sigma, 7)
    for i in range(3):
        torch.testing.assert_close(out[i], blur_ref(x[i], float(sigma[i]), 7), rtol=0, atol=1e-13)


@pytest.mark.parametrize("max_side", [512, 0])
def test_blur_matmul_and_conv_paths_match_2d_reference(
    monkeypatch: pytest.MonkeyPatch, max_side: int
) -> None:
    """Sides up to _MATMUL_BLUR_MAX_SIDE use a banded matmul, larger ones a conv: both exact."""
    monkeypatch.setattr(_blur, "_MATMUL_BLUR_MAX_SIDE", max_side)
    x = rand_images(2, 13, 10)
    sigma = torch.tensor([0.7, 1.9], dtype=F64)
    out = TF.gaussian_blur(x, sigma, 9)
    for i in range(2):
        torch.testing.assert_close(out[i], blur_ref(x[i], float(sigma[i]), 9), rtol=0, atol=1e-13)


@pytest.mark.parametrize(("h", "w", "kernel"), [(150, 97, 23), (70, 160, 9), (112, 120, 23)])
def test_banded_blur_blocks_match_2d_reference(h: int, w: int, kernel: int) -> None:
    # sides past 2 (_BAND + kernel) run in blocks of _BAND outputs that read only their band
    # of inputs; the reflected edges and the block boundaries must give the 2-D reference
    r = kernel // 2
    assert max(h, w) >= 2 * (_blur._BAND + 2 * r)  # the blocked path really runs
    assert len(_blur._bands(max(h, w), r, torch.device("cpu"))) > 1
    x = rand_images(2, h, w, seed=3)
    sigma = torch.tensor([0.8, 3.5], dtype=F64)
    out = TF.gaussian_blur(x, sigma, kernel)
    for i in range(2):
        ref = blur_ref(x[i], float(sigma[i]), kernel)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-13)


def test_banded_blocks_cover_every_output_with_its_inputs() -> None:
    for side, r in [(224, 11), (100, 3), (97, 4), (64, 0), (300, 40)]:
        blocks = _blur._bands(side, r, torch.device("cpu"))
        assert [s for s, *_ in blocks] == list(range(0, side, blocks[0][1]))  # contiguous
        assert blocks[-1][1] == side
        for s, e, lo, hi in blocks:  # every tap of every output falls inside [lo, hi)
            src = (torch.arange(s, e)[:, None] + torch.arange(-r, r + 1)).abs()
            src = torch.where(src > side - 1, 2 * (side - 1) - src, src)
            assert int(src.min()) >= lo and int(src.max()) < hi
    assert _blur._bands(224, 11, torch.device("meta")) == [(0, 224, 0, 224)]  # one launch


def test_blur_kernel_longer_than_image() -> None:
    x = rand_images(1, 3, 4)
    out = TF.gaussian_blur(x, 1.0, 23)  # radius capped to 2 (height) and 3 (width)
    assert out.shape == x.shape
    assert bool(torch.isfinite(out).all())
    assert float(out.std()) < float(x.std())  # smoother


def test_blur_kernel_size_rule() -> None:
    # SimCLR: kernel_size = height // 10, radius = kernel_size // 2, size 2 radius + 1
    for s in (16, 20, 32, 96, 224, 230, 512):
        assert TF.blur_kernel_size(s) == 2 * ((s // 10) // 2) + 1
    assert TF.blur_kernel_size(224) == 23


# --------------------------------------------------------------------------------------------
# Crop boxes and resampling
# --------------------------------------------------------------------------------------------
@st.composite
def crop_settings(
    draw: st.DrawFn,
) -> tuple[int, int, tuple[float, float], tuple[float, float], int]:
    h = draw(st.integers(1, 80))
    w = draw(st.integers(1, 80))
    lo = draw(st.floats(0.01, 1.0))
    hi = draw(st.floats(lo, 1.0))
    r_lo = draw(st.floats(0.2, 2.0))
    r_hi = draw(st.floats(r_lo, 3.0))
    return h, w, (lo, hi), (r_lo, r_hi), draw(SEEDS)


@given(crop_settings())
def test_boxes_inside_image(
    settings: tuple[int, int, tuple[float, float], tuple[float, float], int],
) -> None:
    h, w, scale, ratio, seed = settings
    boxes = TF.sample_crop_boxes(64, h, w, scale=scale, ratio=ratio, generator=gen(seed))
    top, left, ch, cw = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((ch >= 1).all() and (cw >= 1).all())
    assert bool((top + ch <= h).all() and (left + cw <= w).all())


def test_boxes_follow_scale_and_ratio() -> None:
    h, w, n = 64, 80, 4000
    boxes = TF.sample_crop_boxes(n, h, w, scale=(0.1, 0.6), generator=gen(0))
    ch, cw = boxes[:, 2].double(), boxes[:, 3].double()
    frac = ch * cw / (h * w)
    tol = (ch + cw) / 2 / (h * w) + 0.25 / (h * w)  # rounding w and h to integers
    assert bool((frac >= 0.1 - tol).all() and (frac <= 0.6 + tol).all())
    aspect = cw / ch
    tol_a = (1 / ch + 1 / cw) * aspect
    assert bool((aspect >= 3 / 4 - tol_a).all() and (aspect <= 4 / 3 + tol_a).all())
    # area uniform in the range: mean fraction near 0.35; log aspect symmetric around 0
    assert abs(float(frac.mean()) - 0.35) < 0.01
    assert abs(float(torch.log(aspect).mean())) < 0.01
    # positions uniform: mean offset near half the slack
    slack = h - ch
    assert abs(float((boxes[:, 0] - slack / 2).mean())) < 0.5


def test_boxes_fallback_is_center_crop() -> None:
    # a 10 x 100 image cannot hold any box with area >= 0.9 and aspect <= 4/3:
    # torchvision falls back to the centered box of width round(10 * 4/3) = 13
    boxes = TF.sample_crop_boxes(5, 10, 100, scale=(0.9, 1.0), generator=gen(0))
    assert boxes.tolist() == [[0, 43, 10, 13]] * 5
    tall = TF.sample_crop_boxes(3, 100, 10, scale=(0.9, 1.0), generator=gen(0))
    assert tall.tolist() == [[43, 0, 13, 10]] * 3


def test_boxes_determinism() -> None:
    a = TF.sample_crop_boxes(50, 40, 40, generator=gen(7))
    b = TF.sample_crop_boxes(50, 40, 40, generator=gen(7))
    c = TF.sample_crop_boxes(50, 40, 40, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (30, 20), (5, 17)])
def test_resized_crop_matches_per_sample_loop(size: tuple[int, int], antialias: bool) -> None:
    x = rand_images(5, 21, 17)
    boxes = TF.sample_crop_boxes(15, 21, 17, scale=(0.05, 1.0), generator=gen(1)).view(3, 5, 4)
    flip = torch.rand(3, 5, generator=gen(2)) < 0.5
    out = TF.resized_crop(x, boxes, size, flip=flip, antialias=antialias)
    assert out.shape == (3, 5, 3, *size)
    for v in range(3):
        for i in range(5):
            ref = crop_ref(x[i], boxes[v, i].tolist(), size, bool(flip[v, i]), antialias=antialias)
            torch.testing.assert_close(out[v, i], ref, rtol=0, atol=1e-12)
    single = TF.resized_crop(x, boxes[0], size, flip=flip[0], antialias=antialias)
    torch.testing.assert_close(single, out[0], rtol=0, atol=0)
    unbatched = TF.resized_crop(x[0], boxes[0, :1], size, antialias=antialias)
    torch.testing.assert_close(
        unbatched,
        crop_ref(x[0], boxes[0, 0].tolist(), size, False, antialias=antialias),
        rtol=0,
        atol=1e-12,
    )
    if antialias:  # the default
        torch.testing.assert_close(TF.resized_crop(x, boxes, size, flip=flip), out, rtol=0, atol=0)


def coord_image(n: int, h: int, w: int) -> Tensor:
    """Channel 0: x coordinate of the pixel centre in [0, 1]; channel 1: y; channel 2: 0.5."""
    img = torch.full((n, 3, h, w), 0.5, dtype=F64)
    img[:, 0] = ((torch.arange(w, dtype=F64) + 0.5) / w).view(1, 1, w)
    img[:, 1] = ((torch.arange(h, dtype=F64) + 0.5) / h).view(1, h, 1)
    return img


def recovered_extent(coord: Tensor, full: int, out: int) -> Tensor:
    """Box side from the sampled coordinate span S (pixels): max(S + 1, S * out / (out - 1))."""
    span = (coord.amax(dim=-1) - coord.amin(dim=-1)) * full  # (N,)
    return torch.maximum(span + 1, span * out / (out - 1))


@pytest.mark.parametrize(("size", "scale"), [(12, (0.4, 1.0)), (8, (0.05, 0.4)), (40, (0.1, 0.3))])
def test_crops_come_from_inside_the_image_at_the_requested_scale(
    size: int, scale: tuple[float, float]
) -> None:
    H, W, n = 30, 36, 64
    # the geometry of bilinear point sampling (the antialias filter averages neighbours)
    mc = MultiCrop((size,), (2,), (scale,), antialias=False)
    images = coord_image(n, H, W)
    params = mc.sample_params(n, H, W, generator=gen(3))
    crops = mc.apply_params(images, params)
    boxes, flips = params[0][0]
    for v, crop in enumerate(crops):
        xs, ys = crop[:, 0], crop[:, 1]  # (N, h, w)
        # inside the image
        assert float(xs.min()) >= 0.5 / W - 1e-12 and float(xs.max()) <= 1 - 0.5 / W + 1e-12
        assert float(ys.min()) >= 0.5 / H - 1e-12 and float(ys.max()) <= 1 - 0.5 / H + 1e-12
        torch.testing.assert_close(crop[:, 2], torch.full_like(crop[:, 2], 0.5), rtol=0, atol=1e-12)
        # x depends on the column only, y on the row only
        torch.testing.assert_close(xs, xs[:, :1].expand_as(xs), rtol=0, atol=1e-12)
        torch.testing.assert_close(ys, ys[:, :, :1].expand_as(ys), rtol=0, atol=1e-12)
        row, col = xs[:, 0, :], ys[:, :, 0]  # (N, w), (N, h)
        # flips: reversed x order, exactly where drawn
        flipped = row[:, 0] > row[:, -1]
        assert torch.equal(flipped, flips[v])
        step = row.diff(dim=1)
        assert bool(torch.where(flipped[:, None], step <= 1e-12, step >= -1e-12).all())
        assert bool((col.diff(dim=1) >= -1e-12).all())
        # recovered box size equals the drawn box, and its area is in the scale range
        cw = recovered_extent(row, W, size)
        ch = recovered_extent(col, H, size)
        torch.testing.assert_close(cw, boxes[v, :, 3].double(), rtol=0, atol=1e-9)
        torch.testing.assert_close(ch, boxes[v, :, 2].double(), rtol=0, atol=1e-9)
        frac = cw * ch / (H * W)
        tol = (cw + ch) / 2 / (H * W) + 1e-9
        assert bool(((frac >= scale[0] - tol) & (frac <= scale[1] + tol)).all())


def test_flip_probability() -> None:
    crop = RandomResizedCrop(4, flip_prob=0.5)
    p = crop.sample_params(4000, 10, 10, generator=gen(0))
    assert abs(float(p.flip.double().mean()) - 0.5) < 0.03
    never = RandomResizedCrop(4, flip_prob=0.0).sample_params(100, 10, 10, generator=gen(0))
    assert not bool(never.flip.any())


def test_random_resized_crop_module() -> None:
    crop = RandomResizedCrop((6, 10), scale=(0.3, 1.0))
    x = rand_images(4, 16, 16)
    out = crop(x, generator=gen(5))
    p = crop.sample_params(4, 16, 16, generator=gen(5))
    assert out.shape == (4, 3, 6, 10)
    torch.testing.assert_close(out, crop.apply_params(x, p)[0], rtol=0, atol=0)
    assert crop(x[0], generator=gen(5)).shape == (3, 6, 10)
    assert "size=(6, 10)" in repr(crop)


# --------------------------------------------------------------------------------------------
# Augmentation pipeline: batched == per-sample loop
# --------------------------------------------------------------------------------------------
FULL = {
    "jitter": (0.6, 0.6, 0.6, 0.3),
    "jitter_prob": 0.8,
    "grayscale_prob": 0.3,
    "blur_prob": 0.5,
    "blur_kernel_size": 5,
    "solarize_prob": 0.4,
}


@pytest.mark.parametrize("subset", [True, False], ids=["cpu-subset", "where"])
@pytest.mark.parametrize(
    "kwargs",
    [
        FULL,
        {**FULL, "jitter_order": "fixed"},
        {**FULL, "jitter": (0.4, 0.0, 0.2, 0.0), "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        {"jitter": (0.0, 0.0, 0.0, 0.2), "jitter_prob": 1.0, "blur_prob": 1.0},
    ],
    ids=["random-order", "fixed-order", "partial-jitter-normalized", "hue-only"],
)
def test_augmentation_matches_per_sample_loop(
    kwargs: dict[str, object], subset: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(augment_module, "_subset_rows", lambda device: subset)
    aug = Augmentation(**kwargs)  # type: ignore[arg-type]
    x = rand_images(12, 9, 8, seed=4)
    params = aug.sample_params(12, generator=gen(11))
    out = aug.apply_params(x, params)
    for i in range(12):
        torch.testing.assert_close(out[i], augment_ref(x[i], aug, params, i), rtol=0, atol=1e-12)
    torch.testing.assert_close(aug(x, generator=gen(11)), out, rtol=0, atol=0)


def test_augmentation_params_distribution() -> None:
    aug = Augmentation(
        jitter=(0.4, 0.4, 0.2, 0.1),
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.1,
        solarize_prob=0.2,
    )
    p = aug.sample_params(5000, generator=gen(0))
    for mask, prob in [(p.jitter, 0.8), (p.grayscale, 0.2), (p.blur, 0.1), (p.solarize, 0.2)]:
        assert abs(float(mask.double().mean()) - prob) < 0.03
    lo = torch.tensor([0.6, 0.6, 0.8, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.2, 0.1])
    assert bool(((p.factors >= lo) & (p.factors <= hi)).all())
    assert bool(((p.sigma >= 0.1) & (p.sigma <= 2.0)).all())
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(5000, 4))
    # every order occurs, equally often
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert counts.numel() == 24 and int(counts.min()) > 5000 / 24 * 0.6


def test_augmentation_identity_by_default() -> None:
    x = rand_images(3, 5, 5)
    assert torch.equal(Augmentation()(x, generator=gen(0)), x)


def test_augmentation_ranges_and_dtypes() -> None:
    aug = Augmentation(**FULL)  # type: ignore[arg-type]
    u8 = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8, generator=gen(1))
    out = aug(u8, generator=gen(2))
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out, aug(u8.float() / 255, generator=gen(2)), rtol=0, atol=0)
    assert aug(u8.half(), generator=gen(2)).dtype == torch.float32
    assert aug(u8.double() / 255, generator=gen(2)).dtype == F64
    assert aug(u8[0], generator=gen(2)).shape == (3, 10, 10)


# --------------------------------------------------------------------------------------------
# MultiCrop
# --------------------------------------------------------------------------------------------
def small_multicrop(*, antialias: bool = True) -> MultiCrop:
    return MultiCrop(
        (12, 12, (6, 8)),
        (1, 1, 3),
        ((0.4, 1.0), (0.4, 1.0), (0.05, 0.4)),
        augmentations=(
            Augmentation(**{**FULL, "blur_prob": 1.0}),  # type: ignore[arg-type]
            Augmentation(**{**FULL, "blur_prob": 0.1, "solarize_prob": 0.2}),  # type: ignore[arg-type]
            Augmentation(**FULL, mean=IMAGENET_MEAN, std=IMAGENET_STD),  # type: ignore[arg-type]
        ),
        antialias=antialias,
    )


@pytest.mark.parametrize("antialias", [False, True])
def test_multicrop_matches_per_sample_loop(antialias: bool) -> None:
    mc = small_multicrop(antialias=antialias)
    x = rand_images(5, 20, 18, seed=9)
    params = mc.sample_params(5, 20, 18, generator=gen(4))
    out = mc.apply_params(x, params)
    ref = multicrop_ref(x, mc, params)
    assert len(out) == mc.num_crops == 5
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-12)
    torch.testing.assert_close(mc(x, generator=gen(4)), out, rtol=0, atol=0)


def multicrop_by_public_calls(
    mc: MultiCrop, images: Tensor, generator: torch.Generator
) -> list[Tensor]:
    """``mc(images, generator=generator)`` composed of the public transforms, as it was before
    ``MultiCrop`` checked its input once (issue 27): the same draws, one
    ``functional.resized_crop`` per crop size, then each group's ``Augmentation.apply_params``."""
    x = TF.to_float(images)
    unbatched = x.dim() == 3
    x = x.unsqueeze(0) if unbatched else x
    n, c, h, w = x.shape
    params = mc.sample_params(n, h, w, generator=generator, device=x.device)
    sizes = [crop.size for crop in mc.crops]
    resampled: dict[int, Tensor] = {}
    for size in dict.fromkeys(sizes):
        members = [g for g, s in enumerate(sizes) if s == size]
        boxes = torch.cat([params[g][0].boxes for g in members])
        flip = torch.cat([params[g][0].flip for g in members])
        out = TF.resized_crop(x, boxes, size, flip=flip, antialias=mc.antialias)
        parts = torch.split(out, [mc.crop_counts[g] for g in members])
        resampled.update(zip(members, parts, strict=True))
    crops = []
    for g, (aug, count) in enumerate(zip(mc.augmentations, mc.crop_counts, strict=True)):
        views = resampled[g].reshape(count * n, c, *sizes[g])
        out = aug.apply_params(views, params[g][1]).view(count, n, c, *sizes[g])
        crops.extend(v[0] if unbatched else v for v in out.unbind(0))
    return crops


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("kind", ["float64", "uint8", "unbatched", "shared augmentation"])
def test_multicrop_is_bit_identical_to_the_public_transforms_composed(
    antialias: bool, kind: str
) -> None:
    if kind == "shared augmentation":
        aug = Augmentation(**FULL, mean=IMAGENET_MEAN, std=IMAGENET_STD)  # type: ignore[arg-type]
        mc = MultiCrop((10, 10, 6), (2, 1, 3), ((0.4, 1.0), (0.3, 1.0), (0.05, 0.4)),
                       augmentations=aug, antialias=antialias)  # fmt: skip
    else:
        mc = small_multicrop(antialias=antialias)
    images = rand_images(4, 20, 18, seed=3)
    if kind == "uint8":
        images = (images * 255).round().to(torch.uint8)
    elif kind == "unbatched":
        images = images[0]
    ours, theirs = gen(7), gen(7)
    out = mc(images, generator=ours)
    ref = multicrop_by_public_calls(mc, images, theirs)
    assert len(out) == len(ref) == mc.num_crops
    for o, r in zip(out, ref, strict=True):
        assert o.dtype == r.dtype and o.shape == r.shape
        assert torch.equal(o, r)  # bit for bit
    assert torch.equal(torch.rand(4, generator=ours), torch.rand(4, generator=theirs))


def test_transforms_check_and_batch_their_input_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslosses.transforms._checks as checks

    calls: list[tuple[int, ...]] = []
    check_images = checks.check_images

    def counting(name: str, value: object) -> Tensor:
        calls.append(tuple(value.shape))  # type: ignore[attr-defined]
        return check_images(name, value)

    monkeypatch.setattr(checks, "check_images", counting)
    x = rand_images(3, 20, 18)
    for transform in (
        small_multicrop(),
        RandomResizedCrop(8),
        Augmentation(**FULL),  # type: ignore[arg-type]
    ):
        calls.clear()
        transform(x, generator=gen(0))
        assert calls == [(3, 3, 20, 18)], type(transform).__name__


def test_multicrop_shapes_dtype_range() -> None:
    mc = MultiCrop((16, 8), (2, 4), ((0.4, 1.0), (0.05, 0.4)), augmentations=Augmentation(**FULL))  # type: ignore[arg-type]
    u8 = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=gen(0))
    crops = mc(u8, generator=gen(1))
    assert [tuple(c.shape) for c in crops] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 4
    for c in crops:
        assert c.dtype == torch.float32
        assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    # uint8 input == float input / 255
    for a, b in zip(crops, mc(u8.float() / 255, generator=gen(1)), strict=True):
        assert torch.equal(a, b)


def test_multicrop_determinism() -> None:
    mc = small_multicrop()
    x = rand_images(4, 20, 20)
    a, b, c = mc(x, generator=gen(0)), mc(x, generator=gen(0)), mc(x, generator=gen(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert all(not torch.equal(u, v) for u, v in zip(a, c, strict=True))
    torch.manual_seed(5)
    d = mc(x)
    torch.manual_seed(5)
    e = mc(x)
    assert all(torch.equal(u, v) for u, v in zip(d, e, strict=True))


def test_multicrop_unbatched_input() -> None:
    mc = small_multicrop()
    x = rand_images(1, 20, 20)
    single = mc(x[0], generator=gen(2))
    batched = mc(x, generator=gen(2))
    assert [tuple(c.shape) for c in single] == [(3, 12, 12)] * 2 + [(3, 6, 8)] * 3
    for s, b in zip(single, batched, strict=True):
        assert torch.equal(s, b[0])


def test_multicrop_views_differ_per_image_and_crop() -> None:
    mc = MultiCrop((8,), (3,), ((0.05, 0.5),))
    x = rand_images(1, 32, 32).expand(4, -1, -1, -1)  # the same image 4 times
    crops = mc(x, generator=gen(0))
    flat = torch.stack(crops).reshape(12, -1)
    assert torch.cdist(flat, flat).add(torch.eye(12)).min() > 0  # all 12 crops differ


def test_multicrop_repr_and_shared_augmentation() -> None:
    aug = Augmentation(blur_prob=0.5)
    mc = MultiCrop((8, 4), (2, 2), ((0.5, 1.0), (0.1, 0.5)), augmentations=aug)
    assert mc.augmentations[0] is mc.augmentations[1] is aug
    assert "crop_counts=(2, 2)" in repr(mc) and "blur_prob=0.5" in repr(mc)


# --------------------------------------------------------------------------------------------
# forward_multicrop
# --------------------------------------------------------------------------------------------
class CountingBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        ).double()
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        out: Tensor = self.net(x)
        return out


def test_forward_multicrop_is_defined_model_side_and_exported_by_transforms() -> None:
    assert forward_multicrop.__module__ == "sslosses.multicrop"
    assert forward_multicrop is sslosses.multicrop.forward_multicrop


def test_forward_multicrop_equals_per_crop_forward() -> None:
    crops = [
        rand_images(4, 16, 16, seed=1),
        rand_images(4, 16, 16, seed=2),
        rand_images(4, 8, 8, seed=3),
        rand_images(2, 8, 8, seed=4),
        rand_images(4, 8, 8, seed=5),
        rand_images(4, 16, 16, seed=6),
    ]
    backbone = CountingBackbone()
    outputs = forward_multicrop(backbone, crops)
    assert backbone.calls == [8, 10, 4]  # one forward per run of equal resolution
    assert len(outputs) == len(crops)
    for out, crop in zip(outputs, crops, strict=True):
        torch.testing.assert_close(out, backbone.net(crop), rtol=0, atol=1e-12)


def test_forward_multicrop_with_multicrop_output() -> None:
    crops = dino_transform(16, 8, local_count=3)(rand_images(2, 20, 20).float(), generator=gen(0))
    calls: list[int] = []

    def backbone(x: Tensor) -> Tensor:
        calls.append(x.shape[-1])
        return x.mean(dim=(2, 3))

    outs = forward_multicrop(backbone, crops)
    assert calls == [16, 8]
    for o, c in zip(outs, crops, strict=True):
        torch.testing.assert_close(o, c.mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Presets: the papers' settings
# --------------------------------------------------------------------------------------------
def test_simclr_preset() -> None:
    mc = simclr_transform(32)
    assert mc.crop_counts == (2,)
    crop, aug = mc.crops[0], mc.augmentations[0]
    assert crop.size == (32, 32) and crop.scale == (0.08, 1.0)
    assert crop.ratio == (3 / 4, 4 / 3) and crop.flip_prob == 0.5
    assert aug.jitter == (0.8, 0.8, 0.8, 0.2) and aug.jitter_prob == 0.8
    assert aug.jitter_order == "random" and aug.grayscale_prob == 0.2
    assert aug.blur_prob == 0.5 and aug.blur_sigma == (0.1, 2.0) and aug.blur_kernel_size is None
    assert aug.solarize_prob == 0.0 and aug.mean is None
    assert simclr_transform(strength=0.5).augmentations[0].jitter == (0.4, 0.4, 0.4, 0.1)
    views = mc(torch.rand(3, 3, 40, 40), generator=gen(0))
    assert [tuple(v.shape) for v in views] == [(3, 3, 32, 32)] * 2


def test_byol_preset() -> None:
    mc = byol_transform(16)
    assert mc.crop_counts == (1, 1)
    v1, v2 = mc.augmentations
    for aug in (v1, v2):
        assert aug.jitter == (0.4, 0.4, 0.2, 0.1) and aug.jitter_prob == 0.8
        assert aug.grayscale_prob == 0.2 and aug.blur_sigma == (0.1, 2.0)
        assert aug.mean == IMAGENET_MEAN and aug.std == IMAGENET_STD
    assert (v1.blur_prob, v1.solarize_prob) == (1.0, 0.0)
    assert (v2.blur_prob, v2.solarize_prob) == (0.1, 0.2)
    assert all(c.scale == (0.08, 1.0) and c.size == (16, 16) for c in mc.crops)


def test_swav_preset() -> None:
    mc = swav_transform()
    assert mc.crop_counts == (2, 6)
    assert [c.size for c in mc.crops] == [(224, 224), (96, 96)]
    assert [c.scale for c in mc.crops] == [(0.14, 1.0), (0.05, 0.14)]
    aug = mc.augmentations[0]
    assert aug.jitter == (0.8, 0.8, 0.8, 0.2) and aug.jitter_prob == 0.8
    assert aug.grayscale_prob == 0.2 and aug.blur_prob == 0.5 and aug.blur_kernel_size == 23
    assert aug.std == SWAV_STD == (0.228, 0.224, 0.225)
    small = swav_transform(16, 8, local_count=0, blur_kernel_size=None)
    assert small.crop_counts == (2,)
    assert len(small(torch.rand(2, 3, 20, 20), generator=gen(0))) == 2


def test_dino_preset() -> None:
    mc = dino_transform()
    assert mc.crop_counts == (1, 1, 8)
    assert [c.size for c in mc.crops] == [(224, 224), (224, 224), (96, 96)]
    assert [c.scale for c in mc.crops] == [(0.4, 1.0), (0.4, 1.0), (0.05, 0.4)]
    g1, g2, local = mc.augmentations
    assert [(a.blur_prob, a.solarize_prob) for a in (g1, g2, local)] == [
        (1.0, 0.0),
        (0.1, 0.2),
        (0.5, 0.0),
    ]
    for aug in (g1, g2, local):
        assert aug.jitter == (0.4, 0.4, 0.2, 0.1) and aug.jitter_prob == 0.8
        assert aug.grayscale_prob == 0.2 and aug.mean == IMAGENET_MEAN
    assert dino_transform(16, 8, local_count=0).crop_counts == (1, 1)
    crops = dino_transform(32, 16)(torch.rand(2, 3, 40, 40), generator=gen(0))
    assert [tuple(c.shape) for c in crops] == [(2, 3, 32, 32)] * 2 + [(2, 3, 16, 16)] * 8


# --------------------------------------------------------------------------------------------
# Invalid arguments
# --------------------------------------------------------------------------------------------
X = torch.rand(2, 3, 8, 8)
SCALES = ((0.5, 1.0),)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: MultiCrop((8,), (1,), ((0.0, 1.0),)),
            ValueError,
            r"crop_scales\[0\] must satisfy 0 < min <= max <= 1",
        ),
        (
            lambda: MultiCrop((8,), (1,), ((0.5, 1.5),)),
            ValueError,
            r"0 < min <= max <= 1, got \(0.5, 1.5\)",
        ),
        (
            lambda: MultiCrop((8,), (1,), ((0.8, 0.5),)),
            ValueError,
            r"must have min <= max, got \(0.8, 0.5\)",
        ),
        (lambda: MultiCrop((8,), (1,), (0.5,)), TypeError, r"must be a pair \(min, max\)"),
        (
            lambda: MultiCrop((0,), (1,), SCALES),
            ValueError,
            r"crop_sizes\[0\] must be an int > 0, got 0",
        ),
        (
            lambda: MultiCrop(((8, -2),), (1,), SCALES),
            ValueError,
            r"crop_sizes\[0\]\[1\] must be an int > 0, got -2",
        ),
        (
            lambda: MultiCrop((8.5,), (1,), SCALES),
            TypeError,
            r"crop_sizes\[0\] must be an int, got float",
        ),
        (
            lambda: MultiCrop((8,), (0,), SCALES),
            ValueError,
            r"crop_counts\[0\] must be an int > 0, got 0",
        ),
        (
            lambda: MultiCrop((8, 4), (1,), SCALES),
            ValueError,
            r"must have the same length, got 2, 1 and 1",
        ),
        (lambda: MultiCrop((), (), ()), ValueError, r"crop_sizes must not be empty"),
        (
            lambda: MultiCrop(8, (1,), SCALES),
            TypeError,
            r"crop_sizes must be a list or tuple, got int",
        ),
        (
            lambda: MultiCrop((8,), (1,), SCALES, augmentations=[Augmentation()] * 2),
            ValueError,
            r"one entry per crop group \(1\), got 2",
        ),
        (
            lambda: MultiCrop((8,), (1,), SCALES, augmentations=["blur"]),
            TypeError,
            r"augmentations\[0\] must be an Augmentation, got str",
        ),
        (
            lambda: MultiCrop((8,), (1,), SCALES, flip_prob=1.5),
            ValueError,
            r"flip_prob must be a probability in \[0, 1\], got 1.5",
        ),
        (
            lambda: MultiCrop((8,), (1,), SCALES, ratio=(0.0, 1.0)),
            ValueError,
            r"ratio must satisfy 0 < min <= max",
        ),
        (lambda: RandomResizedCrop(8, scale=(0.3, 0.2)), ValueError, r"scale must have min <= max"),
        (
            lambda: Augmentation(jitter_prob=-0.1),
            ValueError,
            r"jitter_prob must be a probability in \[0, 1\], got -0.1",
        ),
        (
            lambda: Augmentation(grayscale_prob=1.01),
            ValueError,
            r"grayscale_prob must be a probability in \[0, 1\], got 1.01",
        ),
        (
            lambda: Augmentation(blur_prob=2),
            ValueError,
            r"blur_prob must be a probability in \[0, 1\], got 2",
        ),
        (
            lambda: Augmentation(solarize_prob=-1.0),
            ValueError,
            r"solarize_prob must be a probability",
        ),
        (
            lambda: Augmentation(solarize_threshold=1.5),
            ValueError,
            r"solarize_threshold must be a probability",
        ),
        (lambda: Augmentation(blur_prob="0.5"), TypeError, r"blur_prob must be a float, got str"),
        (lambda: Augmentation(jitter=(0.4, 0.4, 0.2)), TypeError, r"jitter must be a 4-tuple"),
        (
            lambda: Augmentation(jitter=(0.4, -0.4, 0.2, 0.1)),
            ValueError,
            r"jitter contrast must be a finite number >= 0, got -0.4",
        ),
        (
            lambda: Augmentation(jitter=(0.4, 0.4, 0.2, 0.6)),
            ValueError,
            r"jitter hue must be in \[0, 0.5\], got 0.6",
        ),
        (
            lambda: Augmentation(jitter_order="shuffled"),
            ValueError,
            r"jitter_order must be one of 'random', 'fixed', got 'shuffled'",
        ),
        (
            lambda: Augmentation(blur_sigma=(2.0, 0.1)),
            ValueError,
            r"blur_sigma must have min <= max",
        ),
        (
            lambda: Augmentation(blur_kernel_size=4),
            ValueError,
            r"blur_kernel_size must be odd, got 4",
        ),
        (
            lambda: Augmentation(blur_kernel_size=0),
            ValueError,
            r"blur_kernel_size must be an int > 0, got 0",
        ),
        (
            lambda: Augmentation(mean=IMAGENET_MEAN),
            ValueError,
            r"mean and std must be given together",
        ),
        (
            lambda: Augmentation(mean=(0.5, 0.5), std=(0.2, 0.2, 0.2)),
            ValueError,
            r"mean and std must have the same length, got 2 and 3",
        ),
        (
            lambda: Augmentation(mean=(0.5,), std=(0.0,)),
            ValueError,
            r"std\[0\] must be > 0, got 0.0",
        ),
        (
            lambda: simclr_transform(strength=-1.0),
            ValueError,
            r"strength must be a finite number >= 0",
        ),
        (
            lambda: dino_transform(local_count=-1),
            ValueError,
            r"local_count must be an int >= 0, got -1",
        ),
        (
            lambda: swav_transform(global_count=0),
            ValueError,
            r"global_count must be an int > 0, got 0",
        ),
    ],
)
def test_invalid_construction(
    build: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: MultiCrop((4,), (1,), SCALES)([X]),
            TypeError,
            r"images must be a torch.Tensor, got list",
        ),
        (
            lambda: MultiCrop((4,), (1,), SCALES)(torch.rand(8, 8)),
            ValueError,
            r"images must be a 4-D \(N, C, H, W\) or 3-D \(C, H, W\) tensor, got 2-D",
        ),
        (
            lambda: MultiCrop((4,), (1,), SCALES)(torch.rand(1, 2, 3, 8, 8)),
            ValueError,
            r"got 5-D with shape \(1, 2, 3, 8, 8\)",
        ),
        (
            lambda: MultiCrop((4,), (1,), SCALES)(X.int()),
            TypeError,
            r"images must have dtype torch.uint8 or a floating dtype, got torch.int32",
        ),
        (
            lambda: MultiCrop((4,), (1,), SCALES)(X, generator=0),
            TypeError,
            r"generator must be a torch.Generator or None, got int",
        ),
        (
            lambda: Augmentation(jitter=(0.4, 0.4, 0.2, 0.0))(torch.rand(2, 1, 4, 4)),
            ValueError,
            r"must have 3 \(RGB\) channels for saturation jitter \(jitter\[2\]=0.2\), got 1 ",
        ),
        (
            lambda: Augmentation(jitter=(0.0, 0.0, 0.0, 0.1))(torch.rand(2, 1, 4, 4)),
            ValueError,
            r"must have 3 \(RGB\) channels for hue jitter \(jitter\[3\]=0.1\), got 1 channels",
        ),
        (
            lambda: Augmentation(jitter=(0.0, 0.3, 0.0, 0.0))(torch.rand(2, 4, 4, 4)),
            ValueError,
            r"3 \(RGB\) or 1 \(grayscale\) channels for contrast jitter \(jitter\[1\]=0.3\), got 4",
        ),
        (
            lambda: Augmentation(grayscale_prob=0.2)(torch.rand(2, 2, 4, 4)),
            ValueError,
            r"3 \(RGB\) or 1 \(grayscale\) channels for grayscale \(grayscale_prob=0.2\), got 2",
        ),
        (
            lambda: TF.adjust_saturation(torch.rand(2, 1, 5, 5), 0.5),
            ValueError,
            r"images must have 3 \(RGB\) channels, got 1 in shape \(2, 1, 5, 5\)",
        ),
        (
            lambda: TF.adjust_contrast(torch.rand(2, 2, 5, 5), 0.5),
            ValueError,
            r"images must have 3 \(RGB\) or 1 \(grayscale\) channels, got 2",
        ),
        (
            lambda: TF.rgb_to_grayscale(torch.rand(4, 5, 5)),
            ValueError,
            r"images must have 3 \(RGB\) or 1 \(grayscale\) channels, got 4",
        ),
        (
            lambda: Augmentation(mean=IMAGENET_MEAN, std=IMAGENET_STD)(torch.rand(2, 1, 4, 4)),
            ValueError,
            r"one entry per channel \(1\), got 3",
        ),
        (
            lambda: Augmentation().apply_params(X, "params"),
            TypeError,
            r"params must be an AugmentationParams, got str",
        ),
        (
            lambda: Augmentation().apply_params(X, Augmentation().sample_params(3)),
            ValueError,
            r"params are for \(3,\) images, images have N=2",
        ),
        (lambda: forward_multicrop(nn.Identity(), []), ValueError, r"crops must not be empty"),
        (
            lambda: forward_multicrop(nn.Identity(), [X, "crop"]),
            TypeError,
            r"crops\[1\] must be a torch.Tensor, got str",
        ),
        (
            lambda: forward_multicrop(lambda t: t[:1], [X]),
            ValueError,
            r"backbone must return one row per input \(2\), got shape \(1, 3, 8, 8\)",
        ),
        (
            lambda: forward_multicrop(lambda t: [t], [X]),
            TypeError,
            r"backbone must return a torch.Tensor, got list",
        ),
        (lambda: forward_multicrop("net", [X]), TypeError, r"backbone must be callable, got str"),
        (
            lambda: TF.adjust_hue(torch.rand(2, 4, 5, 5), 0.1),
            ValueError,
            r"images must have 3 \(RGB\) channels, got 4",
        ),
        (
            lambda: TF.adjust_brightness(X, torch.ones(3)),
            ValueError,
            r"factor must be a number or a tensor of shape \(2,\), got shape \(3,\)",
        ),
        (lambda: TF.gaussian_blur(X, 1.0, 4), ValueError, r"kernel_size must be odd, got 4"),
        (
            lambda: TF.gaussian_kernels(torch.ones(2, 2), 3),
            ValueError,
            r"sigma must be a 1-D tensor",
        ),
        (
            lambda: TF.normalize(X, (0.5,), (0.2,)),
            ValueError,
            r"one entry per channel \(3\), got 1 and 1",
        ),
        (lambda: TF.sample_crop_boxes(4, 0, 8), ValueError, r"height must be an int > 0, got 0"),
        (lambda: TF.sample_crop_boxes(-1, 8, 8), ValueError, r"n must be an int >= 0, got -1"),
        (
            lambda: TF.resized_crop(X, torch.zeros(3, 4), 4),
            ValueError,
            r"boxes must have shape \(2, 4\) or \(V, 2, 4\), got \(3, 4\)",
        ),
        (
            lambda: TF.resized_crop(X, torch.zeros(2, 4), 4, flip=torch.zeros(3, dtype=torch.bool)),
            ValueError,
            r"flip must have shape \(2,\) to match boxes, got \(3,\)",
        ),
        (
            lambda: TF.resized_crop(X, torch.zeros(2, 4), (4, 4, 4)),
            ValueError,
            r"size must be an int or a pair \(height, width\)",
        ),
    ],
)
def test_invalid_call(call: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_scale_bounds_the_area_not_the_side() -> None:
    """torchvision semantics: scale 0.25 of a 100 x 100 image with ratio 1 is a 50 x 50 box."""
    boxes = TF.sample_crop_boxes(
        2000, 100, 100, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=gen(0)
    )
    assert bool((boxes[:, 2] == 50).all() and (boxes[:, 3] == 50).all())


def test_runs_on_another_device_without_data_dependent_ops() -> None:
    """On the meta device any host synchronization or CPU-only step would raise.

    ``antialias=False``: the antialiased resize reads the boxes (documented), so only the
    ``grid_sample`` path runs without a synchronization.
    """
    images = torch.empty(4, 3, 40, 40, dtype=torch.uint8, device="meta")
    for generator in (None, gen(0)):  # the default generator of the device, or a CPU one
        transform = dino_transform(32, 16, local_count=2, antialias=False)
        crops = transform(images, generator=generator)
        assert [c.device.type for c in crops] == ["meta"] * 4
        assert [tuple(c.shape) for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2
        assert all(c.dtype == torch.float32 for c in crops)


@pytest.mark.parametrize("shift", [float("nan"), float("inf"), -float("inf")])
def test_adjust_hue_rejects_a_non_finite_shift(shift: float) -> None:
    with pytest.raises(
        ValueError, match=r"shift must be a finite number \(turns, taken modulo 1\)"
    ):
        TF.adjust_hue(torch.rand(2, 3, 4, 4), shift)
