r"""Deterministic, batched image operations with per-sample parameters.

Every function takes images as ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` (read as
``value / 255``) or floating point, on any device, and returns floating-point images: float32
for ``uint8``/float16/bfloat16/float32 input, float64 for float64 input. Colour operations
expect RGB values in ``[0, 1]`` and keep them there. A per-sample parameter is a Python or
NumPy number (the same for every image, checked) or a tensor of shape ``(N,)`` (not read, so
that no device synchronization is needed). The result is always a new tensor.

The random parts (which crop, which factor, whether to apply) live in
:class:`~sslosses.transforms.RandomResizedCrop` and :class:`~sslosses.transforms.Augmentation`;
these functions only compute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sslosses._validation import (
    Size,
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_range,
    check_real,
    check_reals,
    check_size,
    is_real,
)
from sslosses.transforms._checks import as_batch, random_devices

__all__ = [
    "GRAYSCALE_WEIGHTS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "gaussian_blur",
    "gaussian_kernels",
    "normalize",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
    "to_float",
]

GRAYSCALE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B (PIL's ``convert("L")``; torchvision uses 0.2989)."""

_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params tries 10 times before falling back


def _unbatch(images: Tensor, unbatched: bool) -> Tensor:
    return images.squeeze(0) if unbatched else images


_CHUNK_BYTES = 4 << 20  # temporaries of a batched op are kept below this size, when possible


def _cache_tuned(device: torch.device) -> bool:
    """Whether to work in cache-sized pieces (CPU) rather than one launch per operation."""
    return device.type == "cpu"


def _chunk_rows(n: int, row_bytes: int, device: torch.device) -> int:
    """Rows per chunk so that a chunk's temporaries (``row_bytes`` per row) fit _CHUNK_BYTES.

    Only where :func:`_cache_tuned`; on other devices one chunk of all ``n`` rows, so that the
    batch stays one kernel launch per operation.
    """
    if not _cache_tuned(device):
        return max(1, n)
    return max(1, min(n, _CHUNK_BYTES // max(1, row_bytes)))


def _per_sample(
    name: str, value: float | Tensor, images: Tensor, *, low: float | None = None
) -> Tensor:
    """A scalar or ``(N,)`` parameter as an ``(N, 1, 1, 1)`` tensor in ``images``' dtype/device.

    A number must be finite (and ``>= low`` when given); a tensor is not read (no device
    synchronization).
    """
    n = images.shape[0]
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.shape[0] != n:
            raise ValueError(
                f"{name} must be a number or a tensor of shape ({n},), got shape "
                f"{tuple(value.shape)}"
            )
        return value.to(device=images.device, dtype=images.dtype).view(n, 1, 1, 1)
    if not is_real(value):
        raise TypeError(f"{name} must be a float or a Tensor, got {type(value).__name__}")
    number = check_real(name, value, low=low)
    return torch.full((n, 1, 1, 1), number, dtype=images.dtype, device=images.device)


def _own(out: Tensor, images: Tensor) -> Tensor:
    """``out``, copied if it shares memory with the caller's ``images`` (outputs never alias)."""
    shared = out.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
    return out.clone() if shared else out


def _check_rgb(name: str, images: Tensor) -> None:
    if images.shape[1] != 3:
        raise ValueError(
            f"{name} must have 3 (RGB) channels, got {images.shape[1]} in shape "
            f"{tuple(images.shape)}"
        )


def _check_rgb_or_gray(name: str, images: Tensor) -> None:
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must have 3 (RGB) or 1 (grayscale) channels, got {images.shape[1]} in "
            f"shape {tuple(images.shape)}"
        )


def to_float(images: Tensor) -> Tensor:
    r"""Convert images to floating point: ``uint8`` to float32 in ``[0, 1]``, halves to float32.

    Args:
        images: ``uint8`` or floating-point images.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; output: the same.

    Returns:
        float32 images (float64 stays float64), always a new tensor (a float32 or float64
        input is copied, unlike ``Tensor.to``).

    Raises:
        TypeError: if ``images`` is not a ``uint8`` or floating-point tensor.
        ValueError: if ``images`` is not 3-D or 4-D.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import to_float
        >>> to_float(torch.tensor([[[0, 51, 255]]], dtype=torch.uint8))
        tensor([[[0.0000, 0.2000, 1.0000]]])
    """
    x, unbatched = as_batch("images", images)
    return _own(_unbatch(x, unbatched), images)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    r"""Luma of RGB images, :math:`0.299 R + 0.587 G + 0.114 B`, with one channel.

    A 1-channel image is already grayscale: it is returned unchanged (as a new
    floating-point tensor).

    Args:
        images: RGB or 1-channel images.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)` with :math:`C \in \{1, 3\}`;
          output: :math:`(N, 1, H, W)` or :math:`(1, H, W)`.

    Returns:
        The grayscale images (expand to 3 channels with ``.expand(-1, 3, -1, -1)``).

    Raises:
        TypeError: if ``images`` is not a ``uint8`` or floating-point tensor.
        ValueError: if ``images`` is not 3-D or 4-D or does not have 3 or 1 channels.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import rgb_to_grayscale
        >>> rgb_to_grayscale(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1))
        tensor([[[0.2990]]])
    """
    x, unbatched = as_batch("images", images)
    _check_rgb_or_gray("images", x)
    return _unbatch(_gray(x), unbatched)


def _gray(x: Tensor) -> Tensor:
    """The luma of ``(N, 3, H, W)`` images; a copy of ``(N, 1, H, W)`` images."""
    if x.shape[1] == 1:
        return x.clone()
    wr, wg, wb = GRAYSCALE_WEIGHTS
    gray = wr * x[:, 0:1]
    gray.add_(wg * x[:, 1:2]).add_(wb * x[:, 2:3])
    return gray.clamp_(0.0, 1.0)  # (N, 1, H, W)


def _mean_gray(x: Tensor) -> Tensor:
    """Mean luma of each ``(N, 3, H, W)`` image, mean of each ``(N, 1, H, W)`` image."""
    return (x if x.shape[1] == 1 else _gray(x)).mean(dim=(1, 2, 3), keepdim=True)


def _blend(x: Tensor, factor: Tensor, reference: Tensor | float) -> Tensor:
    """``clamp(f x + (1 - f) ref, 0, 1)``, torchvision's ``_blend`` (in place on one buffer)."""
    out = factor * x
    if isinstance(reference, Tensor) or reference != 0.0:
        out.add_((1.0 - factor) * reference)
    return out.clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: float | Tensor) -> Tensor:
    r"""Scale brightness: :math:`\operatorname{clamp}(f\,x, 0, 1)` (torchvision semantics).

    Args:
        images: images with values in ``[0, 1]`` (any number of channels).
        factor: :math:`f \ge 0`, per image or shared; ``1`` leaves the image unchanged.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; factor: scalar or :math:`(N,)`.
        - output: like ``images``.

    Returns:
        The adjusted images.

    Raises:
        TypeError: if ``images`` or ``factor`` has the wrong type.
        ValueError: if ``images`` is not 3-D or 4-D, ``factor`` has the wrong shape, or a number
            ``factor`` is negative or not finite (tensor factors are not read, to avoid a
            device synchronization).

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import adjust_brightness
        >>> adjust_brightness(torch.full((3, 1, 2), 0.4), torch.tensor([2.0])).flatten()
        tensor([0.8000, 0.8000, 0.8000, 0.8000, 0.8000, 0.8000])
    """
    x, unbatched = as_batch("images", images)
    f = _per_sample("factor", factor, x, low=0.0)
    return _unbatch(_blend(x, f, 0.0), unbatched)


def adjust_contrast(images: Tensor, factor: float | Tensor) -> Tensor:
    r"""Scale contrast around the mean luma :math:`m` of each image (torchvision semantics).

    .. math::
        x' = \operatorname{clamp}\big(f\,x + (1 - f)\,m, 0, 1\big), \qquad
        m = \operatorname{mean}_{h,w}\big(0.299 R + 0.587 G + 0.114 B\big)

    For 1-channel (grayscale) images :math:`m` is the mean of the channel.

    Args:
        images: RGB or 1-channel images with values in ``[0, 1]``.
        factor: :math:`f \ge 0`; ``0`` gives a uniform gray image, ``1`` the identity.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)` with :math:`C \in \{1, 3\}`;
          factor: scalar or :math:`(N,)`.
        - output: like ``images``.

    Returns:
        The adjusted images.

    Raises:
        TypeError: if ``images`` or ``factor`` has the wrong type.
        ValueError: if ``images`` does not have 3 or 1 channels, ``factor`` has the wrong
            shape, or a number ``factor`` is negative or not finite (tensor factors are not
            read, to avoid a device synchronization).

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import adjust_contrast
        >>> x = torch.rand(2, 3, 4, 4)
        >>> bool(torch.equal(adjust_contrast(x, 1.0), x))
        True
    """
    x, unbatched = as_batch("images", images)
    _check_rgb_or_gray("images", x)
    f = _per_sample("factor", factor, x, low=0.0)
    mean = _mean_gray(x)  # (N, 1, 1, 1)
    return _unbatch(_blend(x, f, mean), unbatched)


def adjust_saturation(images: Tensor, factor: float | Tensor) -> Tensor:
    r"""Scale saturation by blending with the luma image (torchvision semantics).

    .. math::
        x' = \operatorname{clamp}\big(f\,x + (1 - f)\,(0.299 R + 0.587 G + 0.114 B), 0, 1\big)

    Args:
        images: RGB images with values in ``[0, 1]``.
        factor: :math:`f \ge 0`; ``0`` gives the grayscale image, ``1`` the identity.

    Shape:
        - images: :math:`(N, 3, H, W)` or :math:`(3, H, W)`; factor: scalar or :math:`(N,)`.
        - output: like ``images``.

    Returns:
        The adjusted images.

    Raises:
        TypeError: if ``images`` or ``factor`` has the wrong type.
        ValueError: if ``images`` does not have 3 (RGB) channels (a 1-channel image has no
            saturation), ``factor`` has the wrong shape, or a number ``factor`` is negative or
            not finite (tensor factors are not read, to avoid a device synchronization).

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import adjust_saturation, rgb_to_grayscale
        >>> x = torch.rand(2, 3, 4, 4)
        >>> gray = adjust_saturation(x, 0.0)
        >>> bool(torch.allclose(gray, rgb_to_grayscale(x).expand(-1, 3, -1, -1)))
        True
    """
    x, unbatched = as_batch("images", images)
    _check_rgb("images", x)
    f = _per_sample("factor", factor, x, low=0.0)
    return _unbatch(_blend(x, f, _gray(x)), unbatched)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` turns on ``(N, 3, H, W)`` RGB; ``shift`` is ``(N, 1, 1, 1)``.

    The hexcone HSV round trip of :mod:`colorsys` / torchvision, written with few elementwise
    passes and no ``torch.where`` / ``torch.remainder`` on the pixels (both are several times
    slower than arithmetic on CPU): the case split is a selection by ``torch.lerp`` with 0/1
    float weights (exact), and the hue is never wrapped into ``[0, 6)`` per pixel; the shift
    is folded, wrapped, into a per-image, per-channel offset instead. The values equal the
    plain formulas up to rounding.
    """
    r, g, b = x.unbind(dim=1)  # (N, H, W) each
    v = torch.maximum(r, g)
    v = torch.maximum(v, b, out=v)  # value = max
    chroma = torch.minimum(r, g)
    chroma = torch.minimum(chroma, b, out=chroma)
    chroma = torch.sub(v, chroma, out=chroma)  # max - min
    # 0/1 masks as floats (comparisons and selections on bool tensors are slow on CPU)
    is_r = torch.eq(v, r, out=torch.empty_like(v))
    is_g = torch.eq(v, g, out=torch.empty_like(v))
    # hue in sextants, the colorsys / torchvision case split (red first, then green):
    # H6 = (g - b) / C, (b - r) / C + 2 or (r - g) / C + 4, in [-1, 5] (red not wrapped)
    num = torch.sub(r, g)
    other = torch.sub(b, r)
    num = torch.lerp(num, other, is_g, out=num)  # lerp with weight 0 / 1 selects exactly
    num = torch.lerp(num, torch.sub(g, b, out=other), is_r, out=num)
    offset = is_g.mul_(-2.0).add_(4.0)  # 4 - 2 [max is g]
    offset = torch.addcmul(offset, offset, is_r, value=-1.0, out=offset)  # 0 where max is r
    safe = torch.eq(chroma, 0.0, out=is_r).add_(chroma)  # chroma, 1 for gray (numerator 0)
    h6 = torch.addcdiv(offset, num, safe, out=offset)  # (N, H, W)
    # HSV -> RGB with the hue shifted: channel = V - C * clamp(2 - d, 0, 1), d the distance on
    # the hue circle (length 6) from H6 + 6 shift to 3, 5, 1 for R, G, B: d = 3 - ||u| - 3|
    # with u = H6 - q, q = (p - 6 shift) wrapped into [-1, 5) per image, so that |u| <= 6
    p = torch.tensor([3.0, 5.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    q = torch.sub(p, shift, alpha=6.0).add_(1.0).remainder_(6.0).sub_(1.0)  # (N, 3, 1, 1)
    u = torch.sub(h6.unsqueeze(1), q)  # (N, 3, H, W)
    u = u.abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)  # 2 - d, clamped
    return torch.addcmul(v.unsqueeze(1), chroma.unsqueeze(1), u, value=-1.0, out=u)


def adjust_hue(images: Tensor, shift: float | Tensor) -> Tensor:
    r"""Rotate the hue in HSV space by ``shift`` turns, keeping saturation and value.

    .. math::
        (H, S, V) = \operatorname{hsv}(x), \qquad
        x' = \operatorname{rgb}\big((H + \text{shift}) \bmod 1,\; S,\; V\big)

    with the hexcone HSV model of Python's :mod:`colorsys` and torchvision.

    Args:
        images: RGB images with values in ``[0, 1]``.
        shift: hue shift in turns, taken modulo 1 (colour jitter draws it from
            ``[-0.5, 0.5]``); ``0`` is the identity (up to rounding).

    Shape:
        - images: :math:`(N, 3, H, W)` or :math:`(3, H, W)`; shift: scalar or :math:`(N,)`.
        - output: like ``images``.

    Returns:
        The adjusted images.

    Raises:
        TypeError: if ``images`` or ``shift`` has the wrong type.
        ValueError: if ``images`` does not have 3 (RGB) channels (a 1-channel image has no
            hue), ``shift`` has the wrong shape, or a number ``shift`` is not finite
            (tensor shifts are not read, to avoid a device synchronization).

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import adjust_hue
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        >>> adjust_hue(red, 1 / 3).flatten()  # red -> green
        tensor([0., 1., 0.])
    """
    x, unbatched = as_batch("images", images)
    _check_rgb("images", x)
    if is_real(shift) and not math.isfinite(shift):
        raise ValueError(f"shift must be a finite number (turns, taken modulo 1), got {shift}")
    s = _per_sample("shift", shift, x)
    return _unbatch(_hue(x, s), unbatched)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    r"""Invert every value at or above ``threshold``: :math:`x' = 1 - x` if :math:`x \ge t`.

    As ``PIL.ImageOps.solarize`` (``threshold=128`` on 8-bit data) and BYOL's ``solarize``.

    Args:
        images: images with values in ``[0, 1]``.
        threshold: :math:`t`, a finite number. Default: ``0.5``.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; output: the same.

    Returns:
        The solarized images.

    Raises:
        TypeError: if ``images`` is not a ``uint8`` or floating-point tensor or ``threshold``
            is not a real number.
        ValueError: if ``images`` is not 3-D or 4-D or ``threshold`` is not finite.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import solarize
        >>> solarize(torch.tensor([[[0.2, 0.5, 0.9]]]))
        tensor([[[0.2000, 0.5000, 0.1000]]])
    """
    x, unbatched = as_batch("images", images)
    t = check_real("threshold", threshold)
    return _unbatch(torch.where(x >= t, 1.0 - x, x), unbatched)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    r"""Per-channel standardization :math:`(x_c - \mu_c) / \sigma_c`.

    Args:
        images: images.
        mean: :math:`\mu`, one value per channel.
        std: :math:`\sigma > 0`, one value per channel.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; output: the same.

    Returns:
        The normalized images.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``std`` has a non-positive entry or the lengths do not match ``C``.

    Examples:
        >>> import torch
        >>> from sslosses.transforms.functional import normalize
        >>> normalize(torch.ones(2, 1, 1), mean=[0.5, 0.0], std=[0.25, 2.0]).flatten()
        tensor([2.0000, 0.5000])
    """
    x, unbatched = as_batch("images", images)
    m = check_reals("mean", mean)
    s = check_reals("std", std, positive=True)
    if not len(m) == len(s) == x.shape[1]:
        raise ValueError(
            f"mean and std must have one entry per channel ({x.shape[1]}), "
            f"got {len(m)} and {len(s)}"
        )
    return _unbatch(_normalize(x, m, s, inplace=False), unbatched)


def _normalize(x: Tensor, mean: Sequence[float], std: Sequence[float], *, inplace: bool) -> Tensor:
    """:func:`normalize` of a float batch with checked statistics, in place with ``inplace``."""
    mt = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    st = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x.sub_(mt) if inplace else torch.sub(x, mt)).div_(st)


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
        if dim == 3:
            torch.bmm(x.reshape(n, c * h, w), m.transpose(1, 2), out=out.view(n, c * h, w))
        elif _cache_tuned(x.device):  # one product per channel: no copies of the matrices
            for ch in range(c):
                torch.bmm(m, x[:, ch], out=out[:, ch])
        else:  # one broadcast product: a single launch on accelerators
            torch.matmul(m.unsqueeze(1), x, out=out)
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


def _gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
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
    step = _chunk_rows(n, 3 * c * h * w * x.element_size(), x.device)
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
    s = _per_sample("sigma", sigma, x, low=0.0).view(-1)  # (N,)
    return _own(_unbatch(_gaussian_blur(x, s, kernel_size), unbatched), images)


# --------------------------------------------------------------------------------------------
# Random resized crop
# --------------------------------------------------------------------------------------------
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
    n, c, H, W = x.shape
    h_out, w_out = check_size("size", size)
    check_bool("antialias", antialias)
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() not in (2, 3) or tuple(boxes.shape[-2:]) != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) or (V, {n}, 4), got {tuple(boxes.shape)}")
    single = boxes.dim() == 2
    b = (boxes.unsqueeze(0) if single else boxes).to(device=x.device, dtype=x.dtype)  # (V, N, 4)
    v = b.shape[0]
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
    top, left, ch, cw = b.unbind(dim=-1)  # (V, N) each
    if antialias:
        _check_boxes_inside(b, H, W)  # the antialias path indexes rows directly
    if antialias and n > 0 and bool(((ch > h_out) | (cw > w_out)).any()):
        out = _resized_crop_antialias(x, boxes.reshape(v, n, 4), (h_out, w_out), flip)
        if single:
            out = out.squeeze(0)
            return out.squeeze(0) if unbatched else out
        return out.squeeze(1) if unbatched else out
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
    step = _chunk_rows(n, (c + 2) * h_out * v * w_out * x.element_size(), x.device)
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
    if single:
        out = out.squeeze(0)
        return out.squeeze(0) if unbatched else out
    return out.squeeze(1) if unbatched else out


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
    step = _chunk_rows(n, v * c * h_out * (2 * W + w_out) * x.element_size(), x.device)
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
