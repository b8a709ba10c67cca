"""Colour operations of :mod:`sslosses.transforms.functional` (private; import from there).

Brightness, contrast, saturation, hue, grayscale, solarization, normalization and ``uint8`` to
float conversion, plus the batch kernels :class:`~sslosses.transforms.Augmentation` reuses
(:func:`gray`, :func:`mean_gray`, :func:`blend`, :func:`rotate_hue`, :func:`normalize_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sslosses._validation import check_real, check_reals, is_real
from sslosses.transforms import _kernels
from sslosses.transforms._checks import as_batch

# ITU-R BT.601 luma weights (documented where they are public: transforms.functional)
GRAYSCALE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


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
    return _kernels.own(_kernels.unbatch(x, unbatched), images)


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
    return _kernels.unbatch(gray(x), unbatched)


def gray(x: Tensor) -> Tensor:
    """The luma of ``(N, 3, H, W)`` images; a copy of ``(N, 1, H, W)`` images."""
    if x.shape[1] == 1:
        return x.clone()
    wr, wg, wb = GRAYSCALE_WEIGHTS
    gray = wr * x[:, 0:1]
    gray.add_(wg * x[:, 1:2]).add_(wb * x[:, 2:3])
    return gray.clamp_(0.0, 1.0)  # (N, 1, H, W)


def mean_gray(x: Tensor) -> Tensor:
    """Mean luma of each ``(N, 3, H, W)`` image, mean of each ``(N, 1, H, W)`` image."""
    return (x if x.shape[1] == 1 else gray(x)).mean(dim=(1, 2, 3), keepdim=True)


def blend(x: Tensor, factor: Tensor, reference: Tensor | float) -> Tensor:
    """``clamp(f x + (1 - f) ref, 0, 1)``, torchvision's ``blend`` (in place on one buffer)."""
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
    f = _kernels.per_sample("factor", factor, x, low=0.0)
    return _kernels.unbatch(blend(x, f, 0.0), unbatched)


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
    f = _kernels.per_sample("factor", factor, x, low=0.0)
    mean = mean_gray(x)  # (N, 1, 1, 1)
    return _kernels.unbatch(blend(x, f, mean), unbatched)


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
    f = _kernels.per_sample("factor", factor, x, low=0.0)
    return _kernels.unbatch(blend(x, f, gray(x)), unbatched)


def rotate_hue(x: Tensor, shift: Tensor) -> Tensor:
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
    s = _kernels.per_sample("shift", shift, x)
    return _kernels.unbatch(rotate_hue(x, s), unbatched)


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
    return _kernels.unbatch(torch.where(x >= t, 1.0 - x, x), unbatched)


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
    return _kernels.unbatch(normalize_batch(x, m, s, inplace=False), unbatched)


def normalize_batch(
    x: Tensor, mean: Sequence[float], std: Sequence[float], *, inplace: bool
) -> Tensor:
    """:func:`normalize` of a float batch with checked statistics, in place with ``inplace``."""
    mt = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    st = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x.sub_(mt) if inplace else torch.sub(x, mt)).div_(st)
