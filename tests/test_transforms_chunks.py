"""``sslosses.transforms``: the chunked CPU paths give the same values as one-shot formulas.

``resized_crop``, ``gaussian_blur`` and the random-order colour jitter process a few images at a
time (``_kernels.CHUNK_BYTES``, ``augment._JITTER_CHUNK_PIXELS``); here the chunks are forced
down to one image and the results compared with the unchunked code paths and with
straightforward references (one ``grid_sample`` call with the grid built by ``torch.stack``, a
dense band matrix applied with ``torch.matmul``: the formulas used before chunking).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import sslosses.transforms.augment as augment_module
from sslosses.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    MultiCrop,
    _blur,
    _geometry,
    _kernels,
    swav_transform,
)
from sslosses.transforms import functional as TF

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def resized_crop_one_call(x: Tensor, boxes: Tensor, size: int, flip: Tensor) -> Tensor:
    """All crops with one grid_sample call on a stacked grid, output (V, N, C, h, w)."""
    v, n = boxes.shape[:2]
    c = x.shape[1]
    H, W = x.shape[-2:]
    top, left, ch, cw = boxes.to(x.dtype).unbind(-1)
    gx = _geometry._sample_positions(left, cw, size, W)
    gy = _geometry._sample_positions(top, ch, size, H)
    gx = torch.where(flip.view(v, n, 1), gx.flip(-1), gx)
    grid = torch.stack(
        [
            gx.permute(1, 0, 2).unsqueeze(1).expand(n, size, v, size),
            gy.permute(1, 2, 0).unsqueeze(3).expand(n, size, v, size),
        ],
        dim=-1,
    ).reshape(n, size, v * size, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(n, c, size, v, size).permute(3, 0, 1, 2, 4)


def blur_dense(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Both passes as dense band-matrix products on the whole batch (broadcast matmul)."""
    n, c, h, w = x.shape
    r = kernel_size // 2
    mw = _blur._blur_matrices(TF.gaussian_kernels(sigma, 2 * min(r, w - 1) + 1), w)
    mh = _blur._blur_matrices(TF.gaussian_kernels(sigma, 2 * min(r, h - 1) + 1), h)
    y = torch.bmm(x.reshape(n, c * h, w), mw.transpose(1, 2)).view(n, c, h, w)
    return torch.matmul(mh.unsqueeze(1), y)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_resized_crop_chunks_match_one_call(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    x = torch.rand(5, 3, 23, 19, generator=gen(0), dtype=dtype)
    boxes = torch.stack(
        [TF.sample_crop_boxes(5, 23, 19, scale=(0.1, 1.0), generator=gen(v)) for v in range(3)]
    )
    flip = torch.rand(3, 5, generator=gen(9)) < 0.5
    ref = resized_crop_one_call(x, boxes, 7, flip)
    out = TF.resized_crop(x, boxes, 7, flip=flip, antialias=False)  # the grid_sample path
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    default = TF.resized_crop(x, boxes, 7, flip=flip)  # antialiased
    monkeypatch.setattr(_kernels, "CHUNK_BYTES", 1)  # one image per chunk
    out = TF.resized_crop(x, boxes, 7, flip=flip, antialias=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # antialiased: the same filter; the batched matrix product may round differently per chunk
    atol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(TF.resized_crop(x, boxes, 7, flip=flip), default, rtol=0, atol=atol)


@pytest.mark.parametrize("shape", [(6, 3, 17, 13), (4, 2, 1, 9), (4, 2, 9, 1)])
def test_blur_chunks_match_dense_band_matmul(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int, int, int]
) -> None:
    x = torch.rand(*shape, generator=gen(1), dtype=F64)
    sigma = 0.1 + 1.9 * torch.rand(shape[0], generator=gen(2), dtype=F64)
    if shape[2] > 1 and shape[3] > 1:
        ref = blur_dense(x, sigma, 7)
        torch.testing.assert_close(TF.gaussian_blur(x, sigma, 7), ref, rtol=0, atol=1e-15)
    else:
        ref = TF.gaussian_blur(x, sigma, 7)
    monkeypatch.setattr(_kernels, "CHUNK_BYTES", 1)
    torch.testing.assert_close(TF.gaussian_blur(x, sigma, 7), ref, rtol=0, atol=1e-15)
    assert TF.gaussian_blur(x, sigma, 7).data_ptr() != x.data_ptr()  # never aliases x


def test_multicrop_chunked_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    aug = Augmentation(
        jitter=(0.6, 0.6, 0.6, 0.3),
        grayscale_prob=0.3,
        blur_prob=0.5,
        blur_kernel_size=5,
        solarize_prob=0.3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    mc = MultiCrop((16, 8), (2, 4), ((0.3, 1.0), (0.05, 0.3)), augmentations=aug)
    x = torch.rand(12, 3, 24, 20, generator=gen(3))
    whole = mc(x, generator=gen(4))
    monkeypatch.setattr(_kernels, "CHUNK_BYTES", 1)
    monkeypatch.setattr(augment_module, "_JITTER_CHUNK_PIXELS", 1)
    chunked = mc(x, generator=gen(4))
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    u8 = (x * 255).round().to(torch.uint8)
    for a, b in zip(mc(u8, generator=gen(5)), mc(u8.float() / 255, generator=gen(5)), strict=True):
        assert torch.equal(a, b)


def test_accelerator_layout_takes_the_whole_batch_in_one_piece() -> None:
    assert _kernels.chunk_rows(64, 10**9, torch.device("meta")) == 64
    assert _kernels.chunk_rows(64, 10**9, torch.device("cpu")) == 1
    assert _kernels.chunk_rows(0, 10**9, torch.device("meta")) == 1


def test_accelerator_paths_compute_the_same_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    # the non-CPU code paths (one chunk, one broadcast blur product), run here on CPU
    x = torch.rand(6, 3, 40, 36, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    multicrop = swav_transform(24, 12, local_count=2, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    want = multicrop(x, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(_kernels, "cache_tuned", lambda device: False)
    calls: list[tuple[int, int]] = []
    original = _kernels.chunk_rows

    def spy(n: int, row_bytes: int, device: torch.device) -> int:
        calls.append((n, original(n, row_bytes, device)))
        return calls[-1][1]

    monkeypatch.setattr(_kernels, "chunk_rows", spy)
    got = multicrop(x, generator=torch.Generator().manual_seed(7))
    assert calls and all(step == max(1, n) for n, step in calls)  # one piece each time
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
