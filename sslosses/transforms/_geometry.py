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
    ``antialias=True`` on tensors). It is applied as two banded matrix products, rows then
    columns, each cut into small dense blocks of a few outputs and the few inputs they read,
    and computed only over the pixels near each box, so its cost follows the crops, not the
    images (on CPU a few crops at a time). It reads the boxes (a few device synchronizations:
    the boxes are checked to lie inside the images, and the filter lengths and block shapes are
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


def _antialias_taps(
    start: Tensor, length: Tensor, out: int, flip: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Taps of the antialiased bilinear resize of ``[start, start+length)`` to ``out`` samples.

    PyTorch's ``_upsample_bilinear2d_aa`` / PIL's convention: with ``scale = length / out`` and
    ``support = max(scale, 1)``, output ``i`` is centred at ``c = scale (i + 1/2)`` in the box and
    weighs pixel ``j`` (centre ``j + 1/2``) by ``max(0, 1 - |j + 1/2 - c| / support)``, over the
    pixels of the box, normalized to sum 1. Each output has ``K = max ceil(2 support) + 1``
    consecutive taps (those outside the box or the support have weight 0). Where ``flip`` is
    true, output ``i`` takes the taps of output ``out - 1 - i`` (the flipped crop).

    Returns the absolute pixel indices, the weights and whether each weight is nonzero, all
    ``(Q, out, K)`` (int64, ``start``'s dtype and bool); the index of a tap of weight 0 may lie
    outside the box.
    """
    scale = length / out  # (Q,)
    support = torch.clamp(scale, min=1.0)  # (Q,)
    k = int(torch.ceil(2.0 * support).max()) + 1  # reads the boxes (a device synchronization)
    i = torch.arange(out, dtype=start.dtype, device=start.device) + 0.5  # (out,)
    if flip is not None:
        i = torch.where(flip.unsqueeze(-1), out - i, i)  # (Q, out)
    centre = scale.unsqueeze(-1) * i  # (Q, out), in the box
    first = torch.floor(centre - support.unsqueeze(-1) + 0.5)  # (Q, out)
    j = first.unsqueeze(-1) + torch.arange(k, dtype=start.dtype, device=start.device)  # (Q,out,K)
    # in place from here: fresh (Q, out, K) temporaries cost more than the arithmetic
    weight = (j + 0.5).sub_(centre.unsqueeze(-1)).abs_().div_(support[:, None, None])
    weight.neg_().add_(1.0).clamp_(min=0.0)  # triangle filter
    weight.mul_((j >= 0) & (j < length[:, None, None]))  # only the box's pixels
    weight.div_(weight.sum(dim=-1, keepdim=True))  # (Q, out, K)
    return j.add_(start[:, None, None]).to(torch.int64), weight, weight > 0


_ROW_BLOCK = 8  # output rows per dense block of the row pass
_COLUMN_BLOCK = 16  # output columns per dense block of the column pass
_SIZE_STEP = 16  # box sides are rounded up to a multiple of this to pick a crop's shapes
_FAR = 1 << 40  # an index past every image side (exact as the float that F.pad takes)


def _block_starts(index: Tensor, live: Tensor, block: int) -> Tensor:
    """First input that the outputs of each block of ``block`` outputs read.

    ``index``, ``live``: ``(Q, out, K)`` taps and whether their weights are nonzero (as from
    :func:`_antialias_taps`). Returns ``(Q, nb)`` int64, ``nb = ceil(out / block)`` (the last
    block may be partial).
    """
    q, out, k = index.shape
    nb = -(-out // block)
    low = index.masked_fill(~live, _FAR)  # (Q, out, K)
    if nb * block > out:
        low = F.pad(low, (0, 0, 0, nb * block - out), value=_FAR)
    return low.view(q, nb, block * k).amin(-1)


def _span_bound(side: Tensor, out: int, block: int) -> Tensor:
    r"""Inputs that a block of ``block`` outputs can read, for every box side up to ``side``.

    With ``s = side / out`` and support :math:`S = \max(s, 1)`, the outputs of a block are
    centred ``s (block - 1)`` apart and each reads the pixels whose centres lie within ``S`` of
    its own, so a block reads at most :math:`\lfloor s (block - 1) + 2 S \rfloor + 1` pixels
    (and at most ``side``). It grows with ``side``, so it bounds every smaller box too.
    """
    s = side / out
    slack = 1e-9 if side.dtype == torch.float64 else 1e-3  # rounding of the float32 geometry
    bound = torch.floor(s * (block - 1) + 2.0 * torch.clamp(s, min=1.0) + slack) + 1.0
    return torch.minimum(bound, side).to(torch.int64)


def _tap_blocks(
    index: Tensor,
    weight: Tensor,
    live: Tensor,
    offset: Tensor,
    block: int,
    span: Tensor,
    dtype: torch.dtype,
) -> Tensor:
    """The banded tap matrix of each crop as dense ``(block, span)`` blocks.

    Block ``b`` of crop ``q`` holds the weights of outputs ``b * block ...`` over the
    ``span[q]`` inputs ``offset[q, b] ...``: ``blocks[q, b, i, t] = sum_k weight[q, b * block +
    i, k] [index[q, b * block + i, k] == offset[q, b] + t]``, zero past the last output and past
    ``span[q]`` (up to the largest span).

    Shape:
        - index, weight, live: :math:`(Q, out, K)`; offset: :math:`(Q, nb)`; span: :math:`(Q,)`.
        - output: :math:`(Q, nb, block, max(span))` in ``dtype``.
    """
    q, out, k = index.shape
    nb = offset.shape[1]
    rel = index - offset.repeat_interleave(block, dim=1)[:, :out, None]  # (Q, out, K)
    rel.mul_(live)  # dead taps (weight 0) may lie outside the window: put them at 0
    # every tap of nonzero weight lies in its block's window (_span_bound, offsets <= taps)
    assert not bool((rel.lt(0) | rel.ge(span[:, None, None])).any()), "tap outside its window"
    w = weight.to(dtype)
    if nb * block > out:
        rel = F.pad(rel, (0, 0, 0, nb * block - out))
        w = F.pad(w, (0, 0, 0, nb * block - out))
    blocks = torch.zeros(q, nb, block, int(span.max()), dtype=dtype, device=index.device)
    # scatter_add_: a dead tap can share a position with a live one (it adds 0)
    return blocks.scatter_add_(3, rel.view(q, nb, block, k), w.view(q, nb, block, k))


def _resized_crop_antialias(
    x: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None
) -> Tensor:
    """Antialiased :func:`resized_crop` of ``(N, C, H, W)`` float images, ``(V, N, C, h, w)`` out.

    Only the pixels near each box are read, so the cost follows the crops, not the images.
    Both passes are banded matrix products written as dense blocks: the outputs of one axis are
    cut into blocks of a few, each of which reads a short run of consecutive inputs (its taps),
    so a block is a small dense ``(block, span)`` matrix (:func:`_tap_blocks`).

    Rows first: for each crop, channel and block of output rows, the ``span`` image rows the
    block reads are gathered, restricted to a window of columns that holds the box
    (``index_select`` on a sliding-window view of the images), and one batched product with the
    block's weights gives ``(C, h, window)`` per crop. Then columns: for each block of output
    columns, the ``span`` columns it reads are gathered from that result and one batched product
    gives the block's columns (flips folded into the column taps). A crop's spans and window
    depend only on its own box (its sides rounded up to a multiple of ``_SIZE_STEP``), so on CPU
    the crops go a few at a time in runs of equal shapes (buffers that stay small and are
    reused, windows about as wide as the boxes), and a crop's values do not depend on how the
    crops are chunked; elsewhere all crops go at once, with the largest box's shapes.
    """
    n, c, H, W = x.shape
    h_out, w_out = size
    v = boxes.shape[0]
    q_all = v * n
    device = x.device
    b = boxes.to(device=device, dtype=_geometry_dtype(device)).reshape(q_all, 4)  # q = a*N + i
    tiled = _kernels.cache_tuned(device)
    if tiled:
        # each crop's shapes from its own box, sides rounded up: few distinct shapes, taken in
        # runs (the crops sorted by shape)
        step = float(_SIZE_STEP)
        tall = torch.clamp(torch.ceil(b[:, 2] / step) * step, max=float(H))  # (Q,)
        wide = torch.clamp(torch.ceil(b[:, 3] / step) * step, max=float(W))  # (Q,)
        order = torch.argsort(tall * (W + 1) + wide, stable=True)
        tall, wide = tall[order], wide[order]
    else:
        order = torch.arange(q_all, device=device)
        tall = b[:, 2].max().expand(q_all)
        wide = b[:, 3].max().expand(q_all)
    # from here on, the crops in `order`
    top, left, ch, cw = b[order].unbind(dim=-1)  # (Q,) each
    flips = None if flip is None else flip.reshape(q_all).to(device)[order]
    image = torch.arange(n, device=device).repeat(v)[order]  # (Q,)
    iy, wy, live_y = _antialias_taps(top, ch, h_out)  # (Q, h, Ky)
    ix, wx, live_x = _antialias_taps(left, cw, w_out, flips)  # (Q, w, Kx)
    by, bx = _ROW_BLOCK, _COLUMN_BLOCK
    nby, nbx = -(-h_out // by), -(-w_out // bx)
    # each crop's row span, column span and window width (>= its column span and box width)
    ly = _span_bound(tall, h_out, by)  # (Q,) int64
    lx = _span_bound(wide, w_out, bx)
    wwin = wide.to(torch.int64)
    # windows: image rows [y_off, y_off + ly) for each row block; image columns [sx, sx + wwin)
    # for each crop; columns [x_off, x_off + lx) of that window for each column block
    y_off = torch.minimum(_block_starts(iy, live_y, by), (H - ly)[:, None])  # (Q, nby)
    sx = torch.minimum(left.to(torch.int64), W - wwin)  # (Q,)
    ix.sub_(sx[:, None, None])  # column taps relative to the window
    x_off = torch.minimum(_block_starts(ix, live_x, bx), (wwin - lx)[:, None])  # (Q, nbx)
    shapes = torch.stack([ly, lx, wwin], dim=1).tolist()  # reads the boxes
    my = _tap_blocks(iy, wy, live_y, y_off, by, ly, x.dtype)  # (Q, nby, by, max ly)
    mx = _tap_blocks(ix, wx, live_x, x_off, bx, lx, x.dtype)  # (Q, nbx, bx, max lx)
    channel = torch.arange(c, device=device)
    row_base = ((image[:, None] * c + channel) * H)[:, :, None] + y_off[:, None, :]  # (Q,C,nby)
    item = x.element_size()

    def crop_bytes(row_span: int, column_span: int, width: int) -> int:
        """Bytes of one crop's temporaries: the row pass's gathered rows and result, and the
        column pass's windows and result."""
        rows = nby * (row_span + by) * width
        columns = h_out * nbx * (column_span + bx)
        return item * c * (rows + columns)

    chunks: list[tuple[int, int, int, int, int]] = []  # (start, stop, ly, lx, wwin)
    start = 0
    while start < q_all:
        shape = shapes[start]
        stop = start + 1
        while stop < q_all and shapes[stop] == shape:
            stop += 1
        step_rows = _kernels.chunk_rows(stop - start, crop_bytes(*shape), device)
        chunks.extend(
            (first, min(stop, first + step_rows), *shape) for first in range(start, stop, step_rows)
        )
        start = stop
    # two buffers for the largest chunk, reused by every chunk (views of their first elements):
    # one holds the gathered rows, then the gathered column windows; the other the row pass's
    # result, then the column pass's
    gather_buf = x.new_empty(
        max(
            max((e - s) * c * nby * ly_ * ww, (e - s) * nbx * c * h_out * lx_)
            for s, e, ly_, lx_, ww in chunks
        )
    )
    result_buf = x.new_empty(
        max((e - s) * c * max(nby * by * ww, nbx * h_out * bx) for s, e, _, _, ww in chunks)
    )
    flat = x.contiguous().view(-1)
    out = x.new_empty(q_all, c, h_out, w_out)
    direct = nbx * bx == w_out  # the column blocks tile the output rows exactly
    dest = out.view(q_all, c, h_out, nbx, bx) if direct else out
    targets = order.tolist() if tiled else None
    r = (channel[:, None] * (nby * by) + torch.arange(h_out, device=device)).view(-1)  # (C*h,)
    for start, stop, ly_, lx_, ww in chunks:
        m = stop - start
        # rows: a[q, c, i, u] = sum_t my[q, i // by, i % by, t] x[img, c, y_off + t, sx + u]
        rows = row_base[start:stop, :, :, None] + torch.arange(ly_, device=device)
        starts = rows.mul_(W).add_(sx[start:stop, None, None, None])  # (m, C, nby, ly)
        gathered = gather_buf[: m * c * nby * ly_ * ww].view(-1, ww)  # (m*C*nby*ly, ww)
        torch.index_select(flat.unfold(0, ww, 1), 0, starts.view(-1), out=gathered)
        weights = my[start:stop, :, :, :ly_].unsqueeze(1).expand(m, c, nby, by, ly_)
        a = result_buf[: m * c * nby * by * ww].view(m * c * nby, by, ww)
        torch.bmm(weights.reshape(m * c * nby, by, ly_), gathered.view(-1, ly_, ww), out=a)
        # columns: p[q, b, r, j] = sum_t mx[q, b, j, t] a[q, r, x_off[q, b] + t], r = (c, i)
        crop = torch.arange(m, device=device)[:, None, None] * (c * nby * by)
        starts = x_off[start:stop, :, None] + (crop + r).mul_(ww)  # (m, nbx, C*h)
        windows = gather_buf[: m * nbx * c * h_out * lx_].view(-1, lx_)  # (m*nbx*C*h, lx)
        torch.index_select(a.view(-1).unfold(0, lx_, 1), 0, starts.view(-1), out=windows)
        p = result_buf[: m * nbx * c * h_out * bx].view(m * nbx, c * h_out, bx)
        column_weights = mx[start:stop, :, :, :lx_].reshape(m * nbx, bx, lx_).transpose(1, 2)
        torch.bmm(windows.view(m * nbx, c * h_out, lx_), column_weights, out=p)
        blocks = p.view(m, nbx, c, h_out, bx).permute(0, 2, 3, 1, 4)  # (m, C, h, nbx, bx)
        if not direct:  # the last column block runs past the output: drop its extra columns
            blocks = blocks.reshape(m, c, h_out, nbx * bx)[..., :w_out]
        if targets is None:
            dest.index_copy_(0, order[start:stop], blocks)
        else:  # one copy per crop (on CPU cheaper than index_copy_ from the permuted blocks)
            for i, q in enumerate(targets[start:stop]):
                dest[q].copy_(blocks[i])
    return out.view(v, n, c, h_out, w_out)
