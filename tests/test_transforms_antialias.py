"""Antialiased random resized crop: ``resized_crop(..., antialias=True)`` against a per-crop loop.

The oracle is ``F.interpolate(crop[None], size, mode="bilinear", align_corners=False,
antialias=True)`` on each sliced box, then the flip, one crop at a time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import sslosses.transforms._geometry as _geometry
import sslosses.transforms._kernels as _kernels
from sslosses.transforms import (
    MultiCrop,
    RandomResizedCrop,
    byol_transform,
    dino_transform,
    simclr_transform,
    swav_transform,
)
from sslosses.transforms.functional import resized_crop, sample_crop_boxes

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def crop_ref(
    images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None, *, antialias: bool
) -> Tensor:
    """``(V, N, C, h, w)`` crops, one ``F.interpolate`` call per crop."""
    v, n = boxes.shape[:2]
    out = torch.empty(v, n, images.shape[1], *size, dtype=images.dtype)
    for a in range(v):
        for i in range(n):
            top, left, h, w = boxes[a, i].tolist()
            patch = images[i : i + 1, :, top : top + h, left : left + w]
            y = F.interpolate(
                patch, size=size, mode="bilinear", align_corners=False, antialias=antialias
            )[0]
            out[a, i] = y.flip(-1) if flip is not None and bool(flip[a, i]) else y
    return out


def boxes_for(
    v: int, n: int, height: int, width: int, scale: tuple[float, float], seed: int
) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return sample_crop_boxes(v * n, height, width, scale=scale, generator=g).view(v, n, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("size", "scale"),
    [
        ((16, 16), (0.3, 1.0)),  # downscale up to ~4x
        ((12, 20), (0.05, 1.0)),  # non-square output, mixed
        ((48, 40), (0.05, 0.5)),  # mostly upscaling, some downscaling
        ((7, 33), (0.1, 1.0)),  # very different factors per axis
    ],
)
def test_matches_interpolate_antialias(
    dtype: torch.dtype, size: tuple[int, int], scale: tuple[float, float]
) -> None:
    torch.manual_seed(0)
    x = torch.rand(5, 3, 60, 72, dtype=dtype)
    boxes = boxes_for(3, 5, 60, 72, scale, seed=1)
    flip = torch.rand(3, 5) < 0.5
    out = resized_crop(x, boxes, size, flip=flip, antialias=True)
    ref = crop_ref(x, boxes, size, flip, antialias=True)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=TOL[dtype])


def test_fixed_boxes_downscale_and_upscale() -> None:
    """Hand-picked boxes: factor 4 down, 1 (identity), upscale, one row/column, full image."""
    x = torch.rand(1, 2, 64, 64, dtype=torch.float64)
    boxes = torch.tensor(
        [[[0, 0, 64, 64]], [[3, 5, 16, 16]], [[10, 20, 5, 7]], [[0, 7, 1, 40]], [[2, 0, 50, 1]]]
    )
    flip = torch.tensor([[True], [False], [True], [False], [True]])
    out = resized_crop(x, boxes, 16, flip=flip, antialias=True)
    ref = crop_ref(x, boxes, (16, 16), flip, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # a 16x16 box to 16x16 is the crop itself
    torch.testing.assert_close(out[1, 0], x[0, :, 3:19, 5:21], rtol=0, atol=1e-12)


def test_differs_from_plain_bilinear_when_downscaling() -> None:
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 64, 64], [4, 4, 48, 60]])
    plain = resized_crop(x, boxes, 12, antialias=False)
    aa = resized_crop(x, boxes, 12, antialias=True)
    assert (plain - aa).abs().max() > 1e-3
    # antialiasing smooths: less variance than point sampling of the same noise
    assert aa.var() < plain.var()


def test_all_upscaling_equals_bilinear() -> None:
    """Boxes no larger than the output on both axes: the filter is the bilinear one."""
    x = torch.rand(4, 3, 40, 40, dtype=torch.float64)
    boxes = boxes_for(2, 4, 40, 40, (0.02, 0.1), seed=3)
    assert bool((boxes[..., 2:] <= 24).all())
    flip = torch.rand(2, 4) < 0.5
    out = resized_crop(x, boxes, 24, flip=flip, antialias=True)
    ref = crop_ref(x, boxes, (24, 24), flip, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, resized_crop(x, boxes, 24, flip=flip), rtol=0, atol=1e-12)


def test_upscaling_on_one_axis_downscaling_on_the_other() -> None:
    x = torch.rand(3, 1, 50, 50, dtype=torch.float64)
    boxes = torch.tensor([[[0, 0, 10, 50], [5, 3, 40, 8], [1, 1, 49, 49]]])
    out = resized_crop(x, boxes, (20, 20), antialias=True)
    ref = crop_ref(x, boxes, (20, 20), None, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_uint8_is_read_as_value_over_255() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 48, 56), dtype=torch.uint8)
    boxes = boxes_for(2, 4, 48, 56, (0.2, 1.0), seed=5)
    flip = torch.rand(2, 4) < 0.5
    out = resized_crop(x, boxes, (12, 14), flip=flip, antialias=True)
    assert out.dtype == torch.float32
    ref = crop_ref(x.float() / 255.0, boxes, (12, 14), flip, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_single_image_and_single_box_forms() -> None:
    x = torch.rand(3, 40, 30, dtype=torch.float64)
    box = torch.tensor([[2, 3, 36, 25]])
    out = resized_crop(x, box, 9, flip=torch.tensor([True]), antialias=True)
    assert out.shape == (3, 9, 9)
    ref = crop_ref(x[None], box[None], (9, 9), torch.tensor([[True]]), antialias=True)
    torch.testing.assert_close(out, ref[0, 0], rtol=0, atol=1e-12)
    # V boxes for the single image: (V, C, h, w)
    boxes = torch.tensor([[[2, 3, 36, 25]], [[0, 0, 40, 30]], [[5, 5, 4, 4]]])
    out_v = resized_crop(x, boxes, 9, antialias=True)
    assert out_v.shape == (3, 3, 9, 9)
    ref_v = crop_ref(x[None], boxes, (9, 9), None, antialias=True)
    torch.testing.assert_close(out_v, ref_v[:, 0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 500_000, 4 << 20])
def test_v_crops_per_image_and_chunks(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """V crops per image, with 1, a few or all 9 images per chunk (a ragged last chunk too)."""
    monkeypatch.setattr(_kernels, "CHUNK_BYTES", chunk_bytes)
    x = torch.rand(9, 3, 96, 80)
    boxes = boxes_for(4, 9, 96, 80, (0.05, 1.0), seed=7)
    flip = torch.rand(4, 9) < 0.5
    out = resized_crop(x, boxes, (24, 20), flip=flip, antialias=True)
    ref = crop_ref(x, boxes, (24, 20), flip, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_non_contiguous_input() -> None:
    x = torch.rand(3, 40, 44, 3, dtype=torch.float64).permute(0, 3, 1, 2)  # channels last
    boxes = boxes_for(2, 3, 40, 44, (0.3, 1.0), seed=9)
    out = resized_crop(x, boxes, 10, antialias=True)
    ref = crop_ref(x.contiguous(), boxes, (10, 10), None, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_default_is_antialiased_and_false_is_plain_bilinear() -> None:
    """The default filters as interpolate(antialias=True); antialias=False does not filter."""
    x = torch.rand(5, 3, 60, 72)
    boxes = boxes_for(3, 5, 60, 72, (0.05, 1.0), seed=11)
    flip = torch.rand(3, 5) < 0.5
    out = resized_crop(x, boxes, (16, 20), flip=flip)
    torch.testing.assert_close(
        out, crop_ref(x, boxes, (16, 20), flip, antialias=True), rtol=0, atol=1e-5
    )
    assert torch.equal(out, resized_crop(x, boxes, (16, 20), flip=flip, antialias=True))
    plain = resized_crop(x, boxes, (16, 20), flip=flip, antialias=False)
    torch.testing.assert_close(
        plain, crop_ref(x, boxes, (16, 20), flip, antialias=False), rtol=0, atol=1e-5
    )
    assert float((out - plain).abs().max()) > 1e-2
    assert RandomResizedCrop(16).antialias
    assert MultiCrop((8,), (1,), ((0.5, 1.0),)).antialias


def test_random_resized_crop_module() -> None:
    x = torch.rand(6, 3, 64, 64)
    crop = RandomResizedCrop(16, antialias=True)
    assert "antialias=True" in repr(crop)
    params = crop.sample_params(6, 64, 64, count=2, generator=torch.Generator().manual_seed(0))
    out = crop.apply_params(x, params)
    ref = crop_ref(x, params.boxes, (16, 16), params.flip, antialias=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    a = crop(x, generator=torch.Generator().manual_seed(1))
    b = crop(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)


def test_multicrop_antialias_shapes_determinism_and_values() -> None:
    x = torch.rand(4, 3, 64, 64)
    mc = MultiCrop((32, 12), (2, 3), ((0.4, 1.0), (0.05, 0.4)), antialias=True)
    assert "antialias=True" in repr(mc)
    crops = mc(x, generator=torch.Generator().manual_seed(0))
    again = mc(x, generator=torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 3
    for c, d in zip(crops, again, strict=True):
        assert torch.equal(c, d)
    # no augmentation: the crops are exactly the antialiased resizes
    params = mc.sample_params(4, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = [
        view
        for (cp, _), crop in zip(params, mc.crops, strict=True)
        for view in crop_ref(x, cp.boxes, crop.size, cp.flip, antialias=True)
    ]
    for c, e in zip(crops, expected, strict=True):
        torch.testing.assert_close(c, e, rtol=0, atol=1e-5)
    plain = MultiCrop((32, 12), (2, 3), ((0.4, 1.0), (0.05, 0.4)), antialias=False)(
        x, generator=torch.Generator().manual_seed(0)
    )
    assert any((c - p).abs().max() > 1e-3 for c, p in zip(crops, plain, strict=True))


def test_presets_accept_antialias() -> None:
    x = torch.rand(2, 3, 48, 48)
    mc = swav_transform(24, 12, blur_kernel_size=None, antialias=False)
    assert not mc.antialias and not any(c.antialias for c in mc.crops)
    crops = mc(x, generator=torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(2, 3, 24, 24)] * 2 + [(2, 3, 12, 12)] * 6
    assert simclr_transform(24, antialias=True).antialias
    assert byol_transform(24, antialias=True).antialias
    assert not dino_transform(24, 12, antialias=False).antialias


def test_preset_defaults_follow_the_originals() -> None:
    """PyTorch originals (PIL resize) antialias; the TF ones (tf.image.resize) do not."""
    for mc in (swav_transform(24, 12), dino_transform(24, 12)):
        assert mc.antialias and all(c.antialias for c in mc.crops)
    for mc in (simclr_transform(24), byol_transform(24)):
        assert not mc.antialias and not any(c.antialias for c in mc.crops)


@pytest.mark.parametrize("bad", [1, 0, "yes", None, torch.tensor(True)])
def test_bad_antialias_raises_type_error(bad: object) -> None:
    x = torch.rand(2, 3, 16, 16)
    boxes = torch.tensor([[0, 0, 16, 16], [0, 0, 8, 8]])
    with pytest.raises(TypeError, match=r"antialias must be a bool, got"):
        resized_crop(x, boxes, 8, antialias=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"antialias must be a bool, got"):
        RandomResizedCrop(8, antialias=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"antialias must be a bool, got"):
        MultiCrop((8,), (1,), ((0.5, 1.0),), antialias=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"antialias must be a bool, got"):
        swav_transform(8, 4, antialias=bad)  # type: ignore[arg-type]


def test_float32_is_close_to_the_float64_filter_on_large_crops() -> None:
    """Weights are computed in float64: float32 output is within a few ulp of the exact filter.

    (torch's own float32 antialiased kernel differs from its float64 result by up to ~2e-5 at
    these sizes, so the float32 comparison with it above uses small images.)
    """
    x = torch.rand(2, 3, 256, 256)
    boxes = boxes_for(2, 2, 256, 256, (0.14, 1.0), seed=13)
    out = resized_crop(x, boxes, 224, antialias=True)
    ref = crop_ref(x.double(), boxes, (224, 224), None, antialias=True)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "box",
    [
        (6, 0, 8, 8),  # runs 4 rows past the bottom (would read the next channel's rows)
        (0, 0, 0, 5),  # zero height
        (-1, 0, 4, 4),  # negative top
        (20, 20, 24, 24),  # far outside
    ],
)
def test_antialias_rejects_boxes_outside_the_image(box: tuple[int, int, int, int]) -> None:
    x = torch.zeros(2, 3, 10, 12)
    boxes = torch.tensor([box, (0, 0, 10, 12)])
    with pytest.raises(ValueError, match=r"boxes must lie inside the 10x12 images .* got"):
        resized_crop(x, boxes, 4, antialias=True)


def checkerboard(height: int, width: int, cell: int) -> Tensor:
    """``(1, 3, H, W)`` float64 checkerboard of ``cell`` x ``cell`` squares of 0 and 1."""
    rows = torch.arange(height).view(height, 1) // cell
    cols = torch.arange(width).view(1, width) // cell
    board = ((rows + cols) % 2).to(torch.float64)
    return board.expand(1, 3, height, width).contiguous()


def alias_energy(images: Tensor) -> Tensor:
    """Energy of everything but the mean, per image and channel: the sum of ``|FFT|^2`` over
    the non-zero frequencies divided by ``(h w)^2`` (the variance, by Parseval). A pattern
    whose frequencies all lie above the output's Nyquist limit has none after an ideal
    low-pass resize, so what is left is aliasing."""
    h, w = images.shape[-2:]
    power = torch.fft.fft2(images).abs().square()
    power[..., 0, 0] = 0.0
    return power.sum(dim=(-2, -1)) / (h * w) ** 2


@pytest.mark.parametrize("cell", [2, 3])
def test_default_path_does_not_alias_a_downscaled_checkerboard(cell: int) -> None:
    """A fine checkerboard (period 4 or 6 pixels, above the Nyquist limit of a 4x downscale)
    cropped and resized 4x smaller: the default keeps its mean and leaves no more aliasing
    energy than ``F.interpolate(..., antialias=True)``; unfiltered sampling (``antialias=False``)
    breaks one or the other, so the test sees aliasing where it happens."""
    x = checkerboard(140, 140, cell)
    top, left, side, out = 5, 7, 128, 32  # a 128 x 128 box, 4x smaller
    crop = x[:, :, top : top + side, left : left + side]
    true_mean = float(crop.mean())
    ref = F.interpolate(crop, size=(out, out), mode="bilinear", antialias=True)
    ref_energy = alias_energy(ref)
    # every default path: the function, the module, multi-crop (full-image box, no flip)
    box = torch.tensor([[top, left, side, side]])
    full = x[:, :, top : top + side, left : left + side].contiguous()
    g = torch.Generator().manual_seed(0)
    outputs = {
        "resized_crop": resized_crop(x, box, out),
        "RandomResizedCrop": RandomResizedCrop(
            out, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0
        )(full, generator=g),
        "MultiCrop": MultiCrop((out,), (2,), ((1.0, 1.0),), ratio=(1.0, 1.0), flip_prob=0.0)(
            full, generator=g
        )[1],
    }
    for name, y in outputs.items():
        assert y.shape == (1, 3, out, out), name
        assert abs(float(y.mean()) - true_mean) < 1e-3, name
        energy = alias_energy(y)
        assert bool((energy <= ref_energy * (1 + 1e-9) + 1e-15).all()), (name, energy, ref_energy)
        assert float(ref_energy.max()) < 1e-2 * float(crop.var())  # little is left at all
    plain = resized_crop(x, box, out, antialias=False)
    aliased_mean = abs(float(plain.mean()) - true_mean) > 0.1
    aliased_energy = bool((alias_energy(plain) > 100 * ref_energy).all())
    assert aliased_mean or aliased_energy


# The banded block products against the full-width formulation --------------------------------
def filter_matrix(start: int, length: int, out: int, full: int, flip: bool = False) -> Tensor:
    """``(out, full)`` float64 weights of the antialiased bilinear resize of the box
    ``[start, start + length)`` of a side of ``full`` pixels to ``out`` samples, written out
    plainly over the whole side: PIL's triangle filter of support ``max(length / out, 1)``,
    centred at ``(i + 1/2) length / out`` in the box, over the box's pixels, normalized."""
    scale = length / out
    support = max(scale, 1.0)
    centre = scale * (torch.arange(out, dtype=torch.float64) + 0.5)  # (out,)
    pixel = torch.arange(full, dtype=torch.float64) - start + 0.5  # (full,), in the box
    weight = (1.0 - (pixel - centre[:, None]).abs() / support).clamp(min=0.0)
    weight = weight * ((pixel > 0) & (pixel < length))  # only the box's pixels
    weight = weight / weight.sum(dim=1, keepdim=True)
    return weight.flip(0) if flip else weight


def full_width_ref(
    images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None
) -> Tensor:
    """``(V, N, C, h, w)`` float64 crops as ``R_y X R_x^T`` with dense full-height and full-width
    filter matrices per crop (the formulation the banded path replaced)."""
    v, n = boxes.shape[:2]
    H, W = images.shape[-2:]
    x = images.double()
    out = torch.empty(v, n, images.shape[1], *size, dtype=torch.float64)
    for a in range(v):
        for i in range(n):
            top, left, h, w = boxes[a, i].tolist()
            f = flip is not None and bool(flip[a, i])
            ry = filter_matrix(top, h, size[0], H)  # (h_out, H)
            rx = filter_matrix(left, w, size[1], W, flip=f)  # (w_out, W)
            out[a, i] = ry @ x[i] @ rx.T
    return out


EDGE_BOXES = torch.tensor(
    [
        [[0, 0, 64, 80], [0, 0, 64, 80]],  # the full image
        [[63, 79, 1, 1], [0, 79, 64, 1]],  # the last pixel; the last column
        [[63, 0, 1, 80], [0, 0, 1, 1]],  # the last row; the first pixel
        [[10, 60, 54, 20], [0, 70, 30, 10]],  # touching the bottom right; the top right
        [[32, 40, 32, 40], [60, 0, 4, 80]],  # the bottom right quarter; a thin bottom strip
        [[0, 0, 3, 77], [5, 2, 59, 3]],  # wide and short; tall and narrow
    ]
)  # (V, N=2, 4) in 64x80 images


def banded(images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None) -> Tensor:
    """The banded path itself (``resized_crop`` sends batches that only upscale to
    ``grid_sample``): ``(V, N, C, h, w)`` from float images."""
    return _geometry._resized_crop_antialias(images, boxes, size, flip)


@pytest.mark.parametrize(
    "size",
    [
        (16, 16),  # downscaling up to 5x, tiny boxes upscaling
        (40, 100),  # the full box: rows down, columns up; the others mostly up
        (64, 80),  # the full image at its own size (identity), the others upscale
        (100, 120),  # upscaling everything
        (3, 200),  # strong downscaling on one axis, upscaling on the other
        (17, 5),
        (1, 1),  # one pixel: the mean under the filter
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_banded_blocks_equal_the_full_width_formulation_at_edges(
    size: tuple[int, int], channels: int
) -> None:
    """Boxes at every image edge, tiny, thin and full-image boxes, upscaling and downscaling:
    float32 within 1e-6 of the dense full-width float64 formulation, float64 within 1e-12,
    with and without flips (``resized_crop`` where it takes this path, else the path itself)."""
    g = torch.Generator().manual_seed(21)
    x = torch.rand(2, channels, 64, 80, generator=g, dtype=torch.float64)
    for flip in (None, torch.rand(6, 2, generator=g) < 0.5):
        ref = full_width_ref(x, EDGE_BOXES, size, flip)
        torch.testing.assert_close(banded(x, EDGE_BOXES, size, flip), ref, rtol=0, atol=1e-12)
        out32 = banded(x.float(), EDGE_BOXES, size, flip)
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), ref, rtol=0, atol=1e-6)
        if size[0] < 64 or size[1] < 80:  # some box downscales: resized_crop bands too
            out = resized_crop(x.float(), EDGE_BOXES, size, flip=flip, antialias=True)
            assert torch.equal(out, out32)


@pytest.mark.parametrize(
    ("side", "size", "scale", "ratio"),
    [
        (256, 224, (0.14, 1.0), (3 / 4, 4 / 3)),  # SwAV's global crops
        (256, 96, (0.05, 0.14), (3 / 4, 4 / 3)),  # and local crops
        (512, 96, (0.05, 0.4), (3 / 4, 4 / 3)),  # downscaling up to ~5x
        (200, 24, (0.001, 1.0), (0.1, 10.0)),  # from tiny to whole, extreme aspect ratios
    ],
)
def test_banded_blocks_equal_the_full_width_formulation_on_random_boxes(
    side: int, size: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    g = torch.Generator().manual_seed(side + size)
    x = torch.rand(3, 3, side, side, generator=g)
    boxes = sample_crop_boxes(12, side, side, scale=scale, ratio=ratio, generator=g).view(4, 3, 4)
    flip = torch.rand(4, 3, generator=g) < 0.5
    out = banded(x, boxes, (size, size), flip)
    ref = full_width_ref(x, boxes, (size, size), flip)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    assert bool((boxes[..., 2:] > size).any())  # so resized_crop takes the banded path too
    assert torch.equal(resized_crop(x, boxes, size, flip=flip, antialias=True), out)


def test_uint8_edge_boxes_equal_the_full_width_formulation() -> None:
    g = torch.Generator().manual_seed(22)
    x = torch.randint(0, 256, (2, 3, 64, 80), generator=g, dtype=torch.uint8)
    out = resized_crop(x, EDGE_BOXES, (12, 20), antialias=True)
    ref = full_width_ref(x.double() / 255.0, EDGE_BOXES, (12, 20), None)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [1, 200_000])
def test_crop_values_do_not_depend_on_the_chunking(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """A crop's block shapes come from its own box, so how the crops are chunked (and which
    other crops share a chunk or a call) leaves every value bit for bit the same."""
    g = torch.Generator().manual_seed(23)
    x = torch.rand(7, 3, 90, 70, generator=g)
    boxes = sample_crop_boxes(28, 90, 70, scale=(0.02, 1.0), generator=g).view(4, 7, 4)
    flip = torch.rand(4, 7, generator=g) < 0.5
    whole = banded(x, boxes, (20, 24), flip)
    alone = [
        banded(x[i : i + 1], boxes[a : a + 1, i : i + 1], (20, 24), flip[a : a + 1, i : i + 1])
        for a in range(4)
        for i in range(7)
    ]  # one crop per call
    assert torch.equal(torch.cat(alone).view(4, 7, 3, 20, 24), whole)
    monkeypatch.setattr(_kernels, "CHUNK_BYTES", chunk_bytes)
    assert torch.equal(banded(x, boxes, (20, 24), flip), whole)


def test_one_chunk_path_equals_the_chunked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accelerator layout (all crops at once, shapes of the largest box), run on CPU."""
    g = torch.Generator().manual_seed(24)
    x = torch.rand(5, 2, 120, 100, generator=g, dtype=torch.float64)
    boxes = sample_crop_boxes(15, 120, 100, scale=(0.01, 1.0), generator=g).view(3, 5, 4)
    flip = torch.rand(3, 5, generator=g) < 0.5
    chunked = banded(x, boxes, (30, 36), flip)
    monkeypatch.setattr(_kernels, "cache_tuned", lambda device: False)
    whole = banded(x, boxes, (30, 36), flip)
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-13)
    torch.testing.assert_close(whole, full_width_ref(x, boxes, (30, 36), flip), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: MPS's geometry
@pytest.mark.parametrize(("out", "block"), [(7, 8), (96, 8), (224, 16), (5, 16)])
def test_span_bound_holds_for_every_box_side(out: int, block: int, dtype: torch.dtype) -> None:
    """The block span that shapes the buffers bounds the taps every box side up to it reads."""
    sides = torch.arange(1, 600, dtype=dtype)
    start = torch.zeros_like(sides)
    for flip in (None, torch.ones(len(sides), dtype=torch.bool)):
        index, _, live = _geometry._antialias_taps(start, sides, out, flip)
        low = index.masked_fill(~live, 1 << 40).amin(-1)  # (sides, out)
        high = index.masked_fill(~live, -1).amax(-1)
        pad = -out % block
        low = F.pad(low, (0, pad), value=1 << 40).view(len(sides), -1, block)
        high = F.pad(high, (0, pad), value=-1).view(len(sides), -1, block)
        span = (high.amax(-1) - low.amin(-1) + 1).amax(-1)  # (sides,)
        bound = _geometry._span_bound(sides, out, block)
        assert bool((span <= bound).all())
        assert bool((bound <= sides).all())
        # the bound of a larger side bounds every smaller one: it never decreases
        assert bool((bound[1:] >= bound[:-1]).all())


def test_float32_geometry_as_on_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPS has no float64: boxes, taps and block shapes in float32 still hold every tap (the
    span bound's slack) and give the filter to float32 rounding."""
    monkeypatch.setattr(_geometry, "_geometry_dtype", lambda device: torch.float32)
    g = torch.Generator().manual_seed(25)
    x = torch.rand(4, 3, 300, 260, generator=g)
    boxes = sample_crop_boxes(16, 300, 260, scale=(0.001, 1.0), ratio=(0.2, 5.0), generator=g)
    boxes = boxes.view(4, 4, 4)
    flip = torch.rand(4, 4, generator=g) < 0.5
    for size in ((224, 224), (96, 96), (7, 33)):
        out = banded(x, boxes, size, flip)
        torch.testing.assert_close(
            out.double(), full_width_ref(x, boxes, size, flip), rtol=0, atol=2e-5
        )
    edge = banded(x[:2, :, :64, :80].contiguous(), EDGE_BOXES, (16, 16), None)
    ref = full_width_ref(x[:2, :, :64, :80], EDGE_BOXES, (16, 16), None)
    torch.testing.assert_close(edge.double(), ref, rtol=0, atol=2e-5)
