"""Crop geometry of :mod:`sslosses.transforms.functional` (private; import from there).

Crop box sampling and the batched resized crop, with its antialiased path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sslosses._validation import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_range,
    check_size,
)
from sslosses.transforms import _kernels
from sslosses.transforms._checks import as_batch, random_devices
from sslosses.typing import Size

_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params tries 10 times before falling back


def _geometry_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Draw ``n`` crop boxes as torchvision's ``RandomResizedCrop.get_params`` does, vectorized.

    For each box, 10 candidates are drawn at once: an area fraction :math:`s \sim U(s_{min},
    s_{max})` and an aspect ratio :math:`a = e^{u}`, :math:`u \sim U(\log a_{min}, \log a_{max})`,
    giving :math:`w = \operatorname{round}\sqrt{s H W a}` and
    :math:`h = \operatorname{round}\sqrt{s H W / a}`. The first candidate with
    :math:`0 < w \le W` and :math:`0 < h \le H` is kept, at a uniform integer position; when
    none fits, the fallback is torchvision's: the largest centered box whose aspect ratio is
    clamped into ``ratio`` (at least one pixel wide, where torchvision can round to zero).

    Random numbers are drawn on ``generator.device`` (on ``device`` with the default generator
    when ``generator`` is ``None``) and the boxes moved to ``device``: a CPU generator with the
    same seed gives the same boxes on every device.

    Args:
        n: number of boxes.
        height: image height :math:`H`.
        width: image width :math:`W`.
        scale: area fraction range :math:`(s_{min}, s_{max})`, ``0 < min <= max <= 1``.
            Default: ``(0.08, 1.0)``.
        ratio: aspect ratio (width / height) range. Default: ``(3/4, 4/3)``.
        generator: source of randomness. Default: ``None`` (the global generator).
        device: device of the returned boxes. Default: ``None`` (the generator's, else CPU).

    Shape:
        - output: :math:`(n, 4)` int64 columns ``(top, left, height, width)``.

    Returns:
        The boxes; each lies inside the image.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if a size is not positive or a range is invalid.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import sample_crop_boxes
        >>> g = torch.Generator().manual_seed(0)
        >>> boxes = sample_crop_boxes(5, 32, 48, scale=(0.2, 0.5), generator=g)
        >>> boxes.shape, boxes.dtype
        (torch.Size([5, 4]), torch.int64)
        >>> top, left, h, w = boxes.unbind(1)
        >>> bool(((top + h <= 32) & (left + w <= 48)).all())
        True

    References:
        Szegedy et al., "Going deeper with convolutions", CVPR 2015 (the crop). torchvision
        ``transforms/transforms.py``, ``RandomResizedCrop.get_params``.
    """
    n = check_non_negative_int("n", n)
    H = check_positive_int("height", height)
    W = check_positive_int("width", width)
    s_lo, s_hi = check_range("scale", scale, low=0, high=1, low_open=True)
    r_lo, r_hi = check_range("ratio", ratio, low_open=True)
    gen, out_device, draw_device = random_devices(generator, device)
    dtype = _geometry_dtype(draw_device)
    u = torch.rand(n, 2 * _CROP_ATTEMPTS + 2, generator=gen, device=draw_device).to(dtype)
    area = float(H * W)
    target = area * (s_lo + (s_hi - s_lo) * u[:, :_CROP_ATTEMPTS])  # (n, 10)
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, _CROP_ATTEMPTS : 2 * _CROP_ATTEMPTS])
    cw = torch.round(torch.sqrt(target * aspect))  # (n, 10)
    ch = torch.round(torch.sqrt(target / aspect))  # (n, 10)
    valid = (cw > 0) & (cw <= W) & (ch > 0) & (ch <= H)  # (n, 10)
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True)  # first valid (0 when none)
    found = valid.any(dim=1)  # (n,)
    # torchvision's fallback: center crop with the aspect ratio clamped into ratio
    in_ratio = W / H
    if in_ratio < r_lo:
        fw, fh = W, max(1, round(W / r_lo))
    elif in_ratio > r_hi:
        fw, fh = max(1, round(H * r_hi)), H
    else:
        fw, fh = W, H
    cw = torch.where(found, cw.gather(1, first).squeeze(1), float(fw))  # (n,)
    ch = torch.where(found, ch.gather(1, first).squeeze(1), float(fh))  # (n,)
    top = torch.minimum(torch.floor(u[:, -2] * (H - ch + 1)), H - ch)
    left = torch.minimum(torch.floor(u[:, -1] * (W - cw + 1)), W - cw)
    top = torch.where(found, top, float((H - fh) // 2))
    left = torch.where(found, left, float((W - fw) // 2))
    boxes = torch.stack([top, left, ch, cw], dim=1).to(torch.int64)  # (n, 4)
    return boxes.to(out_device)


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: Size,
    *,
    flip: Tensor | None = None,
    antialias: bool = True,
) -> Tensor:
    r"""Crop each image to its box, resize bilinearly to ``size`` and optionally flip it.

    By default (``antialias=True``) the result equals, for each crop,
    ``F.interpolate(image[:, top:top+h, left:left+w][None], size, mode="bilinear",
    align_corners=False, antialias=True)`` followed by a horizontal flip where ``flip`` is
    true, up to rounding: the separable triangle filter of PyTorch's and PIL's antialiased
    bilinear resize, of support :math:`\max(b / s, 1)` input pixels on each side for a box side
    :math:`b` and an output side :math:`s`, centred at :math:`(i + 1/2)\,b / s` in the box,
    restricted to the box and normalized per output pixel. This is how the PyTorch originals
    resize (torchvision's ``RandomResizedCrop`` on PIL images, whose filters widen their support
    with the downscale factor since Pillow 2.7.0; torchvision's v2 transforms default to
    ``antialias=True`` on tensors). It is applied as a banded weighted sum of the box's rows (a
    few gathered rows per output row) followed by a batched matrix product with the per-crop
    column weights (on CPU a few images at a time). It reads the boxes (a few device
    synchronizations: the boxes are checked to lie inside the images, and the filter length is
    taken from them). Where every crop upscales (box no larger than ``size`` on both axes) the
    filter is the bilinear one and the ``grid_sample`` path below is used.

    With ``antialias=False`` (the fast path, as ``tf.image.resize``, whose ``antialias``
    defaults to ``False``) the crops are produced by :func:`torch.nn.functional.grid_sample`
    (bilinear, ``align_corners=False``), one call per chunk of a few images (so that the
    sampling grid and the intermediate result stay small): the sampling grid of every crop is
    built from its box, and the ``V`` crops of an image are laid side by side along the grid's
    width so the images are never copied. The result equals, for each crop, the same
    ``F.interpolate`` call with ``antialias=False``, then the flip: sampling positions are
    clamped to the box, as interpolation clamps them to the cropped image. Strong downscaling
    then aliases.

    Args:
        images: images.
        boxes: integer boxes ``(top, left, height, width)`` inside the image (as from
            :func:`sample_crop_boxes`; checked only with ``antialias=True``, as the
            ``antialias=False`` path avoids a device synchronization), one per image or ``V``
            per image.
        size: output size ``s`` or ``(h, w)``.
        flip: a bool tensor, whether to flip each crop horizontally. Default: ``None`` (no
            flips).
        antialias: filter before downscaling, as ``F.interpolate(..., antialias=True)``;
            ``False`` samples bilinearly without filtering (faster, aliases). Default:
            ``True``.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)` (then :math:`N = 1`).
        - boxes: :math:`(N, 4)` or :math:`(V, N, 4)`; flip: :math:`(N,)` or :math:`(V, N)`.
        - output: :math:`(N, C, h, w)`, or :math:`(V, N, C, h, w)` for 3-D ``boxes``
          (the leading :math:`N` dropped for 3-D ``images``).

    Returns:
        The crops (float32; float64 for float64 images).

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if a shape does not match, ``size`` is not positive, or (with
            ``antialias=True``, which reads the boxes) a box is not inside the image.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import resized_crop
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> resized_crop(x, torch.tensor([[1, 1, 2, 2]]), 2, flip=torch.tensor([True]))
        tensor([[[[ 6.,  5.],
                  [10.,  9.]]]])

    References:
        torchvision ``transforms/v2/functional/_geometry.py`` (``resized_crop``,
        ``antialias=True`` by default); Pillow 2.7.0 release notes, "Bicubic and bilinear
        downscaling" (convolution with a support scaled by the downscale factor); TensorFlow
        ``tf.image.resize`` (``antialias=False`` by default).
    """
    x, unbatched = as_batch("images", images)
    size = check_size("size", size)
    check_bool("antialias", antialias)
    check_crop_params(boxes, flip, x.shape[0])
    single = boxes.dim() == 2
    out = resize_crops(
        x, boxes.unsqueeze(0) if single else boxes, size, flip=flip, antialias=antialias
    )  # (V, N, C, h, w)
    if single:
        out = out.squeeze(0)
        return out.squeeze(0) if unbatched else out
    return out.squeeze(1) if unbatched else out


def check_crop_params(boxes: object, flip: object, n: int) -> None:
    """Check the types and shapes of ``boxes`` and ``flip`` (:func:`resized_crop`), ``n`` images."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() not in (2, 3) or tuple(boxes.shape[-2:]) != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) or (V, {n}, 4), got {tuple(boxes.shape)}")
    if flip is not None:
        if not isinstance(flip, Tensor):
            raise TypeError(f"flip must be a torch.Tensor or None, got {type(flip).__name__}")
        if flip.dtype != torch.bool:
            raise TypeError(f"flip must be a bool tensor, got dtype {flip.dtype}")
        if flip.shape != boxes.shape[:-1]:
            raise ValueError(
                f"flip must have shape {tuple(boxes.shape[:-1])} to match boxes, "
                f"got {tuple(flip.shape)}"
            )


def resize_crops(
    x: Tensor, boxes: Tensor, size: tuple[int, int], *, flip: Tensor | None, antialias: bool
) -> Tensor:
    """:func:`resized_crop` of a checked batch: the ``(V, N, C, h, w)`` crops of ``x``.

    ``x`` is a float ``(N, C, H, W)`` batch (from ``as_batch``), ``boxes`` ``(V, N, 4)`` and
    ``flip`` ``V * N`` flags or ``None`` have passed ``check_crop_params`` and ``size`` is
    checked; only the boxes' values are checked here (inside the image, with ``antialias``).
    The transforms call it on a batch they have checked once.
    """
    n, c, H, W = x.shape
    h_out, w_out = size
    b = boxes.to(device=x.device, dtype=x.dtype)  # (V, N, 4)
    v = b.shape[0]
    top, left, ch, cw = b.unbind(dim=-1)  # (V, N) each
    if antialias:
        _check_boxes_inside(b, H, W)  # the antialias path indexes rows directly
    if antialias and n > 0 and bool(((ch > h_out) | (cw > w_out)).any()):
        return _resized_crop_antialias(x, boxes.reshape(v, n, 4), (h_out, w_out), flip)
    gx = _sample_positions(left, cw, w_out, W)  # (V, N, w)
    gy = _sample_positions(top, ch, h_out, H)  # (V, N, h)
    if flip is not None:
        f = flip.reshape(v, n, 1).to(x.device)
        gx = torch.where(f, gx.flip(-1), gx)
    # grid[n, i, v * w + j] = (gx[v, n, j], gy[v, n, i]): the V crops side by side. A few
    # images at a time, so that the grid and the resampled chunk stay small (reused memory, no
    # fresh pages per call) and each chunk is copied straight into the (V, N, C, h, w) output.
    gx_n = gx.permute(1, 0, 2).unsqueeze(1)  # (N, 1, V, w)
    gy_n = gy.permute(1, 2, 0).unsqueeze(3)  # (N, h, V, 1)
    out = torch.empty(v, n, c, h_out, w_out, dtype=x.dtype, device=x.device)
    step = _kernels.chunk_rows(n, (c + 2) * h_out * v * w_out * x.element_size(), x.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        grid = torch.empty(stop - start, h_out, v, w_out, 2, dtype=x.dtype, device=x.device)
        grid[..., 0].copy_(gx_n[start:stop])
        grid[..., 1].copy_(gy_n[start:stop])
        part = F.grid_sample(
            x[start:stop],
            grid.view(stop - start, h_out, v * w_out, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (n', C, h, V*w)
        out[:, start:stop].copy_(part.view(-1, c, h_out, v, w_out).permute(3, 0, 1, 2, 4))
    return out


def _sample_positions(start: Tensor, length: Tensor, out: int, full: int) -> Tensor:
    """Normalized ``grid_sample`` coordinates of ``out`` samples across ``[start, start+length)``.

    Pixel-centre mapping of ``F.interpolate(align_corners=False)`` on the crop, clamped to the
    crop's first and last pixel, then mapped to ``[-1, 1]`` over the ``full`` image side.
    """
    k = torch.arange(out, dtype=start.dtype, device=start.device) + 0.5  # (out,)
    src = (start.unsqueeze(-1) - 0.5) + k * (length / out).unsqueeze(-1)  # (V, N, out)
    src = torch.minimum(torch.maximum(src, start.unsqueeze(-1)), (start + length - 1).unsqueeze(-1))
    return (2.0 * src + 1.0) / full - 1.0


def _check_boxes_inside(boxes: Tensor, H: int, W: int) -> None:
    """Raise unless every ``(top, left, height, width)`` box of ``(V, N, 4)`` lies in the image."""
    top, left, h, w = boxes.unbind(dim=-1)
    bad = (top < 0) | (left < 0) | (h < 1) | (w < 1) | (top + h > H) | (left + w > W)
    if bool(bad.any()):
        first = boxes[bad][0].tolist()
        raise ValueError(
            f"boxes must lie inside the {H}x{W} images with height and width >= 1 "
            f"(0 <= top, top + height <= {H}, 0 <= left, left + width <= {W}), got "
            f"(top, left, height, width) = {tuple(int(v) for v in first)}"
        )


def _antialias_taps(start: Tensor, length: Tensor, out: int) -> tuple[Tensor, Tensor]:
    """Taps of the antialiased bilinear resize of ``[start, start+length)`` to ``out`` samples.

    PyTorch's ``_upsample_bilinear2d_aa`` / PIL's convention: with ``scale = length / out`` and
    ``support = max(scale, 1)``, output ``i`` is centred at ``c = scale (i + 1/2)`` in the box and
    weighs pixel ``j`` (centre ``j + 1/2``) by ``max(0, 1 - |j + 1/2 - c| / support)``, over the
    pixels of the box, normalized to sum 1. Each output has ``K = max ceil(2 support) + 1``
    consecutive taps (those outside the box or the support have weight 0).

    Returns the absolute pixel indices and the weights, both ``(V, N, out, K)`` (int64 and
    ``start``'s dtype).
    """
    scale = length / out  # (V, N)
    support = torch.clamp(scale, min=1.0)  # (V, N)
    k = int(torch.ceil(2.0 * support).max()) + 1  # reads the boxes (a device synchronization)
    i = torch.arange(out, dtype=start.dtype, device=start.device) + 0.5  # (out,)
    centre = scale.unsqueeze(-1) * i  # (V, N, out), in the box
    first = torch.floor(centre - support.unsqueeze(-1) + 0.5)  # (V, N, out)
    j = first.unsqueeze(-1) + torch.arange(k, dtype=start.dtype, device=start.device)  # (V,N,out,K)
    dist = (j + 0.5 - centre.unsqueeze(-1)).abs_().div_(support[..., None, None])
    weight = dist.neg_().add_(1.0).clamp_(min=0.0)  # triangle filter
    inside = (j >= 0) & (j < length[..., None, None])
    weight = torch.where(inside, weight, 0.0)
    weight = weight / weight.sum(dim=-1, keepdim=True)  # (V, N, out, K)
    j = torch.minimum(j.clamp_(min=0.0), (length - 1.0)[..., None, None])
    return (j + start[..., None, None]).to(torch.int64), weight


def _resized_crop_antialias(
    x: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None
) -> Tensor:
    """Antialiased :func:`resized_crop` of ``(N, C, H, W)`` float images, ``(V, N, C, h, w)`` out.

    Rows first, as a banded sum: for each of the ``K`` vertical taps, the needed image rows of
    every crop are gathered (``index_select``, whole rows) into a reused buffer and accumulated
    with their weights, giving ``(C, h, W)`` per crop; then columns, by one batched matrix
    product with each crop's dense ``(W, w)`` column weights (flips folded in). A few images
    per step, so that the buffers stay small and are reused.
    """
    n, c, H, W = x.shape
    h_out, w_out = size
    v = boxes.shape[0]
    geometry = _geometry_dtype(x.device)
    b = boxes.to(device=x.device, dtype=geometry)
    top, left, ch, cw = b.unbind(dim=-1)  # (V, N) each
    iy, wy = _antialias_taps(top, ch, h_out)  # (V, N, h, Ky)
    ix, wx = _antialias_taps(left, cw, w_out)  # (V, N, w, Kx)
    if flip is not None:
        f = flip.reshape(v, n, 1, 1).to(x.device)
        ix = torch.where(f, ix.flip(2), ix)
        wx = torch.where(f, wx.flip(2), wx)
    ky, kx = iy.shape[-1], ix.shape[-1]
    wy = wy.to(x.dtype)
    wx = wx.to(x.dtype)
    # row index into x viewed as (N * C * H, W): (n * C + c) * H + row
    image = torch.arange(n, device=x.device).view(1, n, 1, 1) * c
    channel = torch.arange(c, device=x.device).view(1, 1, c, 1)
    rows = x.contiguous().view(n * c * H, W)
    out = torch.empty(v, n, c, h_out, w_out, dtype=x.dtype, device=x.device)
    step = _kernels.chunk_rows(n, v * c * h_out * (2 * W + w_out) * x.element_size(), x.device)
    gathered = torch.empty(v * step * c * h_out, W, dtype=x.dtype, device=x.device)
    acc = torch.empty(v * step * c * h_out, W, dtype=x.dtype, device=x.device)
    columns = torch.empty(v * step, W, w_out, dtype=x.dtype, device=x.device)
    result = torch.empty(v * step, c * h_out, w_out, dtype=x.dtype, device=x.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        m = stop - start
        g, a = gathered[: v * m * c * h_out], acc[: v * m * c * h_out]
        # rows: a[v, n, c, i, :] = sum_k wy[v, n, i, k] * x[n, c, iy[v, n, i, k], :]
        base = (image[:, start:stop] + channel) * H  # (1, m, C, 1)
        for k in range(ky):
            index = base + iy[:, start:stop, :, k].unsqueeze(2)  # (V, m, C, h)
            torch.index_select(rows, 0, index.reshape(-1), out=g)
            weight = wy[:, start:stop, :, k].reshape(v, m, 1, h_out, 1)
            g5, a5 = g.view(v, m, c, h_out, W), a.view(v, m, c, h_out, W)
            if k == 0:
                torch.mul(g5, weight, out=a5)
            else:
                a5.addcmul_(g5, weight)
        # columns: one (W, w) weight matrix per crop, taps scattered into it
        cols = columns[: v * m].zero_()
        cols.scatter_add_(
            1,
            ix[:, start:stop].reshape(v * m, w_out, kx).transpose(1, 2),
            wx[:, start:stop].reshape(v * m, w_out, kx).transpose(1, 2),
        )  # (V*m, W, w)
        res = torch.bmm(a.view(v * m, c * h_out, W), cols, out=result[: v * m])
        out[:, start:stop].copy_(res.view(v, m, c, h_out, w_out))
    return out
