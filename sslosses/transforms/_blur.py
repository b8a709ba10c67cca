"""Gaussian blur of :mod:`sslosses.transforms.functional` (private; import from there).

Kernels, the separable batched passes, and :func:`blur_batch`, the checked-input kernel that
:class:`~sslosses.transforms.Augmentation` reuses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslosses._validation import check_positive_int
from sslosses.transforms import _kernels
from sslosses.transforms._checks import as_batch


def blur_kernel_size(size: int) -> int:
    r"""SimCLR's and BYOL's blur kernel size for side :math:`s`: :math:`2\lfloor s/20 \rfloor + 1`.

    Both use a kernel of 10% of the image side, made odd: ``radius = int(size / 10 / 2)``
    (23 for 224, 9 for 96, 3 for 32, 1 -- no blur -- below 20).

    Examples:
        >>> from sslosses.transforms.functional import blur_kernel_size
        >>> blur_kernel_size(224), blur_kernel_size(96), blur_kernel_size(16)
        (23, 9, 1)
    """
    check_positive_int("size", size)
    return 2 * (size // 20) + 1


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    r"""Normalized 1-D Gaussian kernels, one per entry of ``sigma``.

    .. math::
        k_i \propto \exp\!\left(-\frac{i^2}{2\sigma^2}\right), \quad i = -r, \dots, r, \qquad
        \textstyle\sum_i k_i = 1

    A ``sigma`` of 0 (or below ``1e-3``) gives the identity kernel (a single 1 in the middle).

    Args:
        sigma: standard deviations in pixels.
        kernel_size: odd kernel length :math:`2r + 1`.

    Shape:
        - sigma: :math:`(N,)`; output: :math:`(N, 2r + 1)`.

    Returns:
        The kernels, in ``sigma``'s dtype (float32 for non-float ``sigma``).

    Raises:
        TypeError: if ``sigma`` is not a tensor or ``kernel_size`` not an int.
        ValueError: if ``sigma`` is not 1-D or ``kernel_size`` is not a positive odd int.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import gaussian_kernels
        >>> k = gaussian_kernels(torch.tensor([0.0, 1.0]), 5)
        >>> k[0]
        tensor([0., 0., 1., 0., 0.])
        >>> bool(torch.allclose(k.sum(dim=1), torch.ones(2)))
        True
    """
    if not isinstance(sigma, Tensor):
        raise TypeError(f"sigma must be a torch.Tensor, got {type(sigma).__name__}")
    if sigma.dim() != 1:
        raise ValueError(f"sigma must be a 1-D tensor, got shape {tuple(sigma.shape)}")
    check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
    radius = kernel_size // 2
    i = torch.arange(-radius, radius + 1, dtype=dtype, device=sigma.device)  # (k,)
    s = sigma.to(dtype).clamp_min(1e-3).unsqueeze(1)  # (N, 1)
    k = torch.exp(-(i * i) / (2.0 * s * s))  # (N, k)
    return k / k.sum(dim=1, keepdim=True)


_MATMUL_BLUR_MAX_SIDE = 512  # up to this side a blur pass is a batched matmul, else a conv


def _blur_matrices(kernels: Tensor, side: int) -> Tensor:
    """``(N, side, side)`` matrices ``M`` with ``(M @ v)_i = sum_j k_j v_reflect(i + j - r)``."""
    n, k = kernels.shape
    r = k // 2
    i = torch.arange(side, device=kernels.device).unsqueeze(1)  # (side, 1)
    j = torch.arange(-r, r + 1, device=kernels.device)  # (k,)
    src = (i + j).abs()  # reflect below 0
    src = torch.where(src > side - 1, 2 * (side - 1) - src, src)  # reflect above side - 1
    m = torch.zeros(n, side, side, dtype=kernels.dtype, device=kernels.device)
    return m.scatter_add_(2, src.expand(n, side, k), kernels.unsqueeze(1).expand(n, side, k))


_BAND = 32  # outputs per block of the banded blur on CPU


def _bands(side: int, radius: int, device: torch.device) -> list[tuple[int, int, int, int]]:
    """Blocks ``(s, e, lo, hi)`` of a blur pass: outputs ``[s, e)`` need inputs ``[lo, hi)``.

    On CPU, blocks of ``_BAND`` outputs each read ``_BAND + 2 radius`` inputs, so a pass costs
    about ``side (_BAND + 2 radius)`` multiply-adds per row instead of ``side ** 2`` (4x less
    for 224-px crops and a 23-tap kernel); one block (the whole matrix) when that saves little,
    and on accelerators (one launch).
    """
    if _kernels.cache_tuned(device) and side >= 2 * (_BAND + 2 * radius):
        return [
            (s, min(side, s + _BAND), max(0, s - radius), min(side, s + _BAND + radius))
            for s in range(0, side, _BAND)
        ]
    return [(0, side, 0, side)]


def _conv_1d(x: Tensor, kernels: Tensor, dim: int, out: Tensor | None = None) -> Tensor:
    """One separable pass of ``(N, C, H, W)`` along W (``dim=3``) or H (``dim=2``), reflected.

    Written into ``out`` (contiguous, not overlapping ``x``) when given, else a new tensor.
    """
    n, c, h, w = x.shape
    side = w if dim == 3 else h
    if out is None:
        out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    if side <= _MATMUL_BLUR_MAX_SIDE:
        # a banded matrix per image (reflection folded in): batched matmuls, much faster than a
        # depthwise convolution on CPU
        m = _blur_matrices(kernels.to(x.dtype), side)  # (N, side, side)
        r = kernels.shape[1] // 2
        for s, e, lo, hi in _bands(side, r, x.device):
            # outputs [s, e) read only the inputs [lo, hi) (reflected sources included)
            band = m[:, s:e, lo:hi]  # (N, e - s, hi - lo)
            if dim == 3:
                flat_out = out.view(n, c * h, w)[:, :, s:e]
                torch.bmm(x.reshape(n, c * h, w)[:, :, lo:hi], band.transpose(1, 2), out=flat_out)
            elif _kernels.cache_tuned(x.device):  # one product per channel: no matrix copies
                for ch in range(c):
                    torch.bmm(band, x[:, ch, lo:hi], out=out[:, ch, s:e])
            else:  # one broadcast product: a single launch on accelerators
                torch.matmul(band.unsqueeze(1), x[:, :, lo:hi], out=out[:, :, s:e])
        return out
    k = kernels.shape[1]
    r = k // 2
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)  # (N*C, k)
    flat = x.reshape(1, n * c, h, w)
    if dim == 3:  # along W
        flat = F.pad(flat, (r, r, 0, 0), mode="reflect")
        conv = F.conv2d(flat, weight.view(n * c, 1, 1, k), groups=n * c)
    else:  # along H
        flat = F.pad(flat, (0, 0, r, r), mode="reflect")
        conv = F.conv2d(flat, weight.view(n * c, 1, k, 1), groups=n * c)
    return out.copy_(conv.view(n, c, h, w))


def blur_batch(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """:func:`gaussian_blur` of a float ``(N, C, H, W)`` batch, ``sigma`` ``(N,)``, checked.

    Returns a new tensor (``x`` itself when the kernel reduces to one pixel). The images are
    blurred a few at a time, so that the intermediate pass stays small.
    """
    n, c, h, w = x.shape
    radius = kernel_size // 2
    rw, rh = min(radius, w - 1), min(radius, h - 1)
    if rw == 0 and rh == 0:
        return x
    kw = gaussian_kernels(sigma, 2 * rw + 1) if rw > 0 else None
    kh = gaussian_kernels(sigma, 2 * rh + 1) if rh > 0 else None
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    step = _kernels.chunk_rows(n, 3 * c * h * w * x.element_size(), x.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        src, dst = x[start:stop], out[start:stop]
        if kw is not None and kh is not None:
            _conv_1d(_conv_1d(src, kw[start:stop], dim=3), kh[start:stop], dim=2, out=dst)
        elif kw is not None:
            _conv_1d(src, kw[start:stop], dim=3, out=dst)
        elif kh is not None:
            _conv_1d(src, kh[start:stop], dim=2, out=dst)
    return out


def gaussian_blur(images: Tensor, sigma: float | Tensor, kernel_size: int) -> Tensor:
    r"""Gaussian blur with a per-image ``sigma``, as two separable batched passes.

    Each image is convolved with its own normalized 1-D kernel
    (:func:`gaussian_kernels`) along the width, then along the height, with reflection padding
    (so constant images stay constant). For sides up to 512 pixels a pass is a batched
    matrix product with a banded matrix per image (the reflection folded in), which is much
    faster on CPU than a depthwise convolution; longer sides use a grouped convolution. The
    images are processed a few at a time, so that the intermediate pass stays small.
    A kernel longer than the image along a direction is shortened to ``2 * (side - 1) + 1``
    there (and renormalized). ``sigma = 0`` is the identity. The result is always a new
    tensor, also where the blur is the identity.

    Args:
        images: images (any number of channels).
        sigma: standard deviation in pixels (:math:`\ge 0`), per image or shared.
        kernel_size: odd kernel length; see :func:`blur_kernel_size` for SimCLR's rule.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; sigma: scalar or :math:`(N,)`.
        - output: like ``images``.

    Returns:
        The blurred images.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``images`` is not 3-D or 4-D, ``sigma`` has the wrong shape, a number
            ``sigma`` is negative or not finite (tensor sigmas are not read, to avoid a device
            synchronization), or ``kernel_size`` is not a positive odd int.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import gaussian_blur
        >>> x = torch.full((2, 3, 8, 8), 0.25)
        >>> bool(torch.allclose(gaussian_blur(x, torch.tensor([0.5, 2.0]), 5), x))
        True
    """
    x, unbatched = as_batch("images", images)
    check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    s = _kernels.per_sample("sigma", sigma, x, low=0.0).view(-1)  # (N,)
    return _kernels.own(_kernels.unbatch(blur_batch(x, s, kernel_size), unbatched), images)
