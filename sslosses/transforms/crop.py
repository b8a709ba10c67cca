"""Random resized crop with horizontal flip, batched resampling of all crops of a batch.

One resample per crop size on accelerators; on CPU a few images at a time (cache-sized).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from sslosses._validation import (
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_probability,
    check_range,
    check_size,
)
from sslosses.transforms import functional as TF
from sslosses.transforms._checks import as_batch, random_devices
from sslosses.transforms._geometry import resize_crops
from sslosses.typing import Size

__all__ = ["CropParams", "RandomResizedCrop"]


class CropParams(NamedTuple):
    """The random draws of :class:`RandomResizedCrop` for ``V`` crops of ``N`` images."""

    boxes: Tensor
    """``(V, N, 4)`` int64 ``(top, left, height, width)`` in pixels of the input."""
    flip: Tensor
    """``(V, N)`` bool: whether the crop is flipped horizontally."""


class RandomResizedCrop(nn.Module):
    r"""Batched random resized crop and horizontal flip, per image and per crop.

    Boxes follow torchvision's ``RandomResizedCrop`` (area fraction uniform in ``scale``,
    log-uniform aspect ratio in ``ratio``, 10 candidates and a centered fallback; see
    :func:`~sslosses.transforms.functional.sample_crop_boxes`); all crops are then resized,
    batched, flips included (:func:`~sslosses.transforms.functional.resized_crop`),
    antialiased by default: each crop as ``F.interpolate(..., mode="bilinear",
    antialias=True)``, like torchvision's ``RandomResizedCrop`` (PIL's filters on PIL images;
    ``antialias=True``, the default of its v2 transforms, on tensors). ``antialias=False`` is
    the faster, unfiltered bilinear sampling by :func:`torch.nn.functional.grid_sample`.
    Output is float32 in ``[0, 1]`` for ``uint8`` input (float64 stays float64).

    Args:
        size: output size ``s`` or ``(h, w)``.
        scale: area fraction range ``(min, max)``, ``0 < min <= max <= 1``.
            Default: ``(0.08, 1.0)`` (Inception / torchvision).
        ratio: aspect ratio (width / height) range. Default: ``(3/4, 4/3)``.
        flip_prob: probability of a horizontal flip. Default: ``0.5``.
        antialias: filter before downscaling (antialiased bilinear resize); ``False`` for
            plain bilinear sampling. Default: ``True``.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`; output: :math:`(N, C, h, w)` or
          :math:`(C, h, w)`.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``size`` is not positive, a range is invalid or ``flip_prob`` is
            outside ``[0, 1]``.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import RandomResizedCrop
        >>> crop = RandomResizedCrop(16, scale=(0.2, 1.0))
        >>> crop
        RandomResizedCrop(size=(16, 16), scale=(0.2, 1.0), ratio=(0.75, 1.33...), flip_prob=0.5,
                          antialias=True)
        >>> crop(torch.rand(8, 3, 32, 32), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 16, 16])

    References:
        torchvision ``transforms/transforms.py`` (``RandomResizedCrop``,
        ``RandomHorizontalFlip``).
    """

    def __init__(
        self,
        size: Size,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        self.size: tuple[int, int] = check_size("size", size)
        self.scale = check_range("scale", scale, low=0, high=1, low_open=True)
        self.ratio = check_range("ratio", ratio, low_open=True)
        self.flip_prob = check_probability("flip_prob", flip_prob)
        self.antialias = check_bool("antialias", antialias)

    def sample_params(
        self,
        n: int,
        height: int,
        width: int,
        *,
        count: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CropParams:
        """Draw ``count`` crops for each of ``n`` images of size ``height x width``.

        Args:
            n: number of images.
            height: image height.
            width: image width.
            count: crops per image, :math:`V`. Default: ``1``.
            generator: source of randomness (numbers are drawn on its device). Default:
                ``None`` (the global generator of ``device``).
            device: device of the returned tensors. Default: ``None`` (the generator's, else
                CPU).

        Returns:
            :class:`CropParams` with ``boxes`` ``(V, N, 4)`` and ``flip`` ``(V, N)``, crop-major.
        """
        n = check_non_negative_int("n", n)
        v = check_positive_int("count", count)
        gen, out, draw = random_devices(generator, device)
        boxes = TF.sample_crop_boxes(
            v * n, height, width, scale=self.scale, ratio=self.ratio, generator=gen, device=out
        )
        flip = torch.rand(v * n, generator=gen, device=draw).to(out) < self.flip_prob
        return CropParams(boxes=boxes.view(v, n, 4), flip=flip.view(v, n))

    def apply_params(self, images: Tensor, params: CropParams) -> Tensor:
        """Resample the crops described by ``params``: ``(V, N, C, h, w)`` (or ``(V, C, h, w)``)."""
        if not isinstance(params, CropParams):
            raise TypeError(f"params must be a CropParams, got {type(params).__name__}")
        return TF.resized_crop(
            images, params.boxes, self.size, flip=params.flip, antialias=self.antialias
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Crop, resize and flip every image once.

        Args:
            images: ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` or float.
            generator: source of randomness. Default: ``None`` (the global generator).

        Returns:
            The crops, ``(N, C, h, w)`` or ``(C, h, w)``.
        """
        x, unbatched = as_batch("images", images)
        n, _, h, w = x.shape
        params = self.sample_params(n, h, w, generator=generator, device=x.device)
        out = resize_crops(x, params.boxes, self.size, flip=params.flip, antialias=self.antialias)
        return out[0, 0] if unbatched else out[0]  # (V = 1, N, C, h, w)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"flip_prob={self.flip_prob}, antialias={self.antialias}"
        )
