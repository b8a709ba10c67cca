"""The per-view pixel pipeline: colour jitter, grayscale, blur, solarization, normalization."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, get_args

import torch
from torch import Tensor, nn

from sslosses._validation import (
    check_choice,
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    check_probability,
    check_range,
    check_real,
    check_reals,
)
from sslosses.transforms import _blur, _color, _kernels
from sslosses.transforms._checks import as_batch, random_devices
from sslosses.typing import JitterOrder

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Augmentation", "AugmentationParams"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""ImageNet channel means, as in torchvision, DINO and BYOL (``byol/utils/dataset.py``)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet channel standard deviations, as in torchvision, DINO and BYOL."""

_JITTER_ORDERS: tuple[JitterOrder, ...] = get_args(JitterOrder)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
_JITTER_CHUNK_PIXELS = 1 << 16  # pixels per chunk of random-order colour jitter on CPU
_DRAWS = 13  # uniforms per sample: jitter?, 4 factors, 4 order keys, gray?, blur?, sigma, solarize?


def _check_strengths(value: object) -> tuple[float, float, float, float]:
    """Check colour-jitter strengths ``(brightness, contrast, saturation, hue)``."""
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise TypeError(
            f"jitter must be a 4-tuple (brightness, contrast, saturation, hue), got {value!r}"
        )
    return (
        check_non_negative("jitter brightness", value[0]),
        check_non_negative("jitter contrast", value[1]),
        check_non_negative("jitter saturation", value[2]),
        check_real("jitter hue", value[3], low=0, high=0.5),
    )


def _subset_rows(device: torch.device) -> bool:
    """Whether :func:`_where_rows` computes only the selected rows (on CPU: no sync to avoid)."""
    return device.type == "cpu"


def _rows(t: Tensor, index: Tensor | None) -> Tensor:
    return t if index is None else t[index]


def _where_rows(
    mask: Tensor, fn: Callable[[Tensor | None], Tensor], base: Tensor, *, inplace: bool = False
) -> Tensor:
    """``base`` with the rows where ``mask`` holds replaced by ``fn(index)``.

    ``fn(index)`` computes those rows from the inputs' rows ``index`` (all rows for ``None``).
    On CPU only the selected rows are computed (indexing); elsewhere all rows are computed and
    selected with :func:`torch.where`, which avoids a host synchronization. The operations are
    per image, so both give the same values. With ``inplace`` (``base`` is a private buffer)
    the rows are written into ``base`` itself instead of a copy.
    """
    if _subset_rows(base.device):
        index = mask.nonzero().squeeze(1)
        if index.numel() == 0:
            return base
        if index.numel() == base.shape[0]:
            return fn(None)
        rows = fn(index)
        out = base if inplace else base.clone()
        out[index] = rows
        return out
    return torch.where(mask.view(-1, 1, 1, 1), fn(None), base)


def _blur_rows(x: Tensor, mask: Tensor, sigma: Tensor, size: int, *, inplace: bool) -> Tensor:
    """``x`` with the images where ``mask`` holds blurred (CPU: only those are computed).

    The selected images are blurred a few at a time and written back, into ``x`` itself with
    ``inplace``; the values are those of :func:`~sslosses.transforms.functional.gaussian_blur`.
    """
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return x
    out = x if inplace else x.clone()
    step = _kernels.chunk_rows(index.numel(), 3 * x[0].numel() * x.element_size(), x.device)
    for rows in torch.split(index, step):
        out[rows] = _blur.blur_batch(x[rows], sigma[rows], size)
    return out


def _jitter_ops(y: Tensor, f: Tensor, ops: Iterable[int], enabled: Sequence[bool]) -> Tensor:
    """Apply the enabled jitter operations ``ops`` in that order; ``f`` is ``(M, 4, 1, 1, 1)``."""
    for op in ops:
        if not enabled[op]:
            continue
        if op == _BRIGHTNESS:
            y = _color.blend(y, f[:, _BRIGHTNESS], 0.0)
        elif op == _CONTRAST:
            y = _color.blend(y, f[:, _CONTRAST], _color.mean_gray(y))
        elif op == _SATURATION:
            y = _color.blend(y, f[:, _SATURATION], _color.gray(y))
        else:
            y = _color.rotate_hue(y, f[:, _HUE])
    return y


class AugmentationParams(NamedTuple):
    """The random draws of :class:`Augmentation` for a batch of ``N`` images."""

    jitter: Tensor
    """``(N,)`` bool: whether colour jitter is applied."""
    factors: Tensor
    """``(N, 4)``: brightness, contrast and saturation factors, then the hue shift."""
    order: Tensor
    """``(N, 4)`` int64: the order of the jitter operations (0 brightness, 1 contrast,
    2 saturation, 3 hue) for each image."""
    grayscale: Tensor
    """``(N,)`` bool: whether the image is converted to grayscale."""
    blur: Tensor
    """``(N,)`` bool: whether the image is blurred."""
    sigma: Tensor
    """``(N,)``: blur standard deviation in pixels."""
    solarize: Tensor
    """``(N,)`` bool: whether the image is solarized."""


class Augmentation(nn.Module):
    r"""Batched photometric augmentation of one view, each image with its own random parameters.

    Applied in this order (the order of SimCLR, BYOL, SwAV and DINO):

    1. colour jitter with probability ``jitter_prob``: brightness, contrast and saturation
       factors :math:`f \sim U(\max(0, 1 - s), 1 + s)` and a hue shift
       :math:`\delta \sim U(-s_h, s_h)` (see :mod:`sslosses.transforms.functional` for the
       formulas, torchvision's), each followed by clamping to ``[0, 1]``. With
       ``jitter_order="random"`` every image gets its own random order of the four operations,
       as torchvision's ``ColorJitter`` and SimCLR's ``color_jitter_rand`` do (on CPU the
       images are grouped by order, at most 24 groups, so each operation runs once per image;
       elsewhere, vectorized without a host synchronization, each of the four steps applies
       the operation chosen per image, the hue conversion on all images at every step);
       ``"fixed"`` applies brightness, contrast, saturation, hue in that order, once each
       (faster on accelerators). Operations with strength 0 are skipped, as in torchvision.
       On CPU, images that skip jitter, grayscale or blur are not computed at all.
    2. grayscale with probability ``grayscale_prob`` (luma :math:`0.299R + 0.587G + 0.114B`
       copied to the three channels; 1-channel images are already gray and left unchanged).
    3. Gaussian blur with probability ``blur_prob``, :math:`\sigma \sim U(\sigma_{min},
       \sigma_{max})` pixels, one separable pass per direction for the whole batch on
       accelerators (on CPU a few images at a time, only those drawn for the blur).
    4. solarization with probability ``solarize_prob``: values :math:`\ge` ``solarize_threshold``
       become :math:`1 - x`.
    5. normalization :math:`(x - \mu) / \sigma` when ``mean`` and ``std`` are given.

    Before normalization the output is float32 (float64 for float64 input) in ``[0, 1]``
    (``uint8`` input is divided by 255). The defaults switch everything off except the
    parameters shared by all four papers (``jitter_prob=0.8``, ``blur_sigma=(0.1, 2.0)``,
    ``solarize_threshold=0.5``); the presets (:func:`~sslosses.transforms.simclr_transform`,
    ...) set the rest.

    Args:
        jitter: strengths ``(brightness, contrast, saturation, hue)``, ``hue <= 0.5``.
            Default: ``(0.0, 0.0, 0.0, 0.0)`` (off).
        jitter_prob: probability of colour jitter per image. Default: ``0.8``.
        jitter_order: ``"random"`` (per image) or ``"fixed"``. Default: ``"random"``.
        grayscale_prob: probability of grayscale conversion per image. Default: ``0.0``.
        blur_prob: probability of Gaussian blur per image. Default: ``0.0``.
        blur_sigma: range of the blur standard deviation in pixels. Default: ``(0.1, 2.0)``.
        blur_kernel_size: odd kernel size, or ``None`` for SimCLR's/BYOL's 10% of the image
            height (:func:`~sslosses.transforms.functional.blur_kernel_size`). Default: ``None``.
        solarize_prob: probability of solarization per image. Default: ``0.0``.
        solarize_threshold: solarization threshold in ``[0, 1]``. Default: ``0.5``.
        mean: per-channel mean for normalization, or ``None``. Default: ``None``.
        std: per-channel standard deviation for normalization, or ``None``. Default: ``None``.

    Brightness is applied to every channel alike; contrast uses the mean luma of RGB images
    and the mean of the channel of 1-channel (grayscale) images; saturation and hue need RGB.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`: :math:`C = 3` (RGB) for saturation
          or hue jitter, :math:`C \in \{1, 3\}` for contrast jitter or grayscale, any
          :math:`C` otherwise; output: the same shape.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if a probability is outside ``[0, 1]``, a range is invalid, exactly one of
            ``mean``/``std`` is given, or (when called) the images do not have the channels
            an enabled operation needs (above), or ``mean``/``std`` do not have one entry per
            channel.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import Augmentation
        >>> aug = Augmentation(jitter=(0.4, 0.4, 0.2, 0.1), grayscale_prob=0.2, blur_prob=0.5)
        >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> y = aug(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape, y.dtype, bool(0 <= y.min() and y.max() <= 1)
        (torch.Size([4, 3, 32, 32]), torch.float32, True)
        >>> z = aug(x, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(y, z))
        True

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
        (SimCLR), ICML 2020, arXiv:2002.05709; google-research/simclr ``data_util.py``.
        torchvision ``transforms/_functional_tensor.py`` (``adjust_*``, ``_rgb2hsv``).
    """

    def __init__(
        self,
        *,
        jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        jitter_prob: float = 0.8,
        jitter_order: JitterOrder = "random",
        grayscale_prob: float = 0.0,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        solarize_prob: float = 0.0,
        solarize_threshold: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.jitter = _check_strengths(jitter)
        self.jitter_prob = check_probability("jitter_prob", jitter_prob)
        self.jitter_order = check_choice("jitter_order", jitter_order, _JITTER_ORDERS)
        self.grayscale_prob = check_probability("grayscale_prob", grayscale_prob)
        self.blur_prob = check_probability("blur_prob", blur_prob)
        self.blur_sigma = check_range("blur_sigma", blur_sigma, low_open=False)
        if blur_kernel_size is not None:
            blur_kernel_size = check_positive_int("blur_kernel_size", blur_kernel_size)
            if blur_kernel_size % 2 == 0:
                raise ValueError(f"blur_kernel_size must be odd, got {blur_kernel_size}")
        self.blur_kernel_size = blur_kernel_size
        self.solarize_prob = check_probability("solarize_prob", solarize_prob)
        self.solarize_threshold = check_probability("solarize_threshold", solarize_threshold)
        if (mean is None) != (std is None):
            raise ValueError(
                f"mean and std must be given together, got mean={mean!r} and std={std!r}"
            )
        self.mean = None if mean is None else check_reals("mean", mean)
        self.std = None if std is None else check_reals("std", std, positive=True)
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}"
            )

    @property
    def _jitter_on(self) -> bool:
        return self.jitter_prob > 0 and any(s > 0 for s in self.jitter)

    def sample_params(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> AugmentationParams:
        """Draw the random parameters for ``n`` images (one ``torch.rand`` call).

        Args:
            n: number of images.
            generator: source of randomness; the numbers are drawn on its device and moved to
                ``device``. Default: ``None`` (the global generator of ``device``).
            device: device of the returned tensors. Default: ``None`` (the generator's, else
                CPU).

        Returns:
            The parameters, see :class:`AugmentationParams`.
        """
        n = check_non_negative_int("n", n)
        gen, out, draw = random_devices(generator, device)
        u = torch.rand(n, _DRAWS, generator=gen, device=draw).to(out)  # (n, 13)
        b, c, s, h = self.jitter
        low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], device=out)
        high = torch.tensor([1 + b, 1 + c, 1 + s, h], device=out)
        lo_sigma, hi_sigma = self.blur_sigma
        return AugmentationParams(
            jitter=u[:, 0] < self.jitter_prob,
            factors=low + (high - low) * u[:, 1:5],
            order=torch.argsort(u[:, 5:9], dim=1),
            grayscale=u[:, 9] < self.grayscale_prob,
            blur=u[:, 10] < self.blur_prob,
            sigma=lo_sigma + (hi_sigma - lo_sigma) * u[:, 11],
            solarize=u[:, 12] < self.solarize_prob,
        )

    def apply_params(self, images: Tensor, params: AugmentationParams) -> Tensor:
        """Apply the pipeline with given parameters (deterministic).

        Args:
            images: images, ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` or float in ``[0, 1]``.
            params: parameters for ``N`` images, e.g. from :meth:`sample_params`.

        Returns:
            The augmented images, float32 (float64 for float64 input).
        """
        x, unbatched = as_batch("images", images)
        # a converted (uint8 / half) input is a new buffer, which may be modified
        owned = x.data_ptr() != images.data_ptr()
        self._check_params(params, x.shape[0])
        self._check_input(x.shape[1])
        out = self._apply_batch(x, params, owned=owned)
        return out.squeeze(0) if unbatched else out

    def _check_params(self, params: object, n: int) -> None:
        """Raise unless ``params`` is an :class:`AugmentationParams` for ``n`` images."""
        if not isinstance(params, AugmentationParams):
            raise TypeError(f"params must be an AugmentationParams, got {type(params).__name__}")
        if params.jitter.shape != (n,):
            raise ValueError(
                f"params are for {tuple(params.jitter.shape)} images, images have N={n}"
            )

    def _check_input(self, c: int) -> None:
        """Raise unless the pipeline can run on ``c``-channel images (colour operations, mean)."""
        self._check_channels(c)
        if self.mean is not None and len(self.mean) != c:
            raise ValueError(
                f"mean and std must have one entry per channel ({c}), got {len(self.mean)}"
            )

    def _apply_batch(self, x: Tensor, params: AugmentationParams, *, owned: bool) -> Tensor:
        """The pipeline on a checked batch: no checks, the callers' path.

        ``x`` is a float ``(N, C, H, W)`` batch (from ``as_batch``) that passed
        :meth:`_check_input`, ``params`` passed :meth:`_check_params`; ``owned``: ``x`` is a
        private buffer that may be modified in place. :meth:`forward`, :meth:`apply_params` and
        :class:`MultiCrop` (on its resampled crops) check once and call this.
        """
        n, c = x.shape[:2]
        p = AugmentationParams(*(t.to(x.device) for t in params))
        if self._jitter_on:
            if self.jitter_order == "random" and _subset_rows(x.device):
                y = self._color_jitter_groups(x, p, owned)
            else:
                y = _where_rows(
                    p.jitter, lambda index: self._color_jitter(x, p, index), x, inplace=owned
                )
            owned, x = owned or y is not x, y
        if self.grayscale_prob > 0 and c == 3:  # 1-channel images are gray already
            y = _where_rows(
                p.grayscale,
                lambda index: _color.gray(_rows(x, index)).repeat(1, 3, 1, 1),
                x,
                inplace=owned,
            )
            owned, x = owned or y is not x, y
        if self.blur_prob > 0:
            size = self.blur_kernel_size or _blur.blur_kernel_size(x.shape[2])
            sigma = p.sigma.to(x.dtype)
            if _subset_rows(x.device):
                y = _blur_rows(x, p.blur, sigma, size, inplace=owned)
            else:
                y = torch.where(p.blur.view(n, 1, 1, 1), _blur.blur_batch(x, sigma, size), x)
            owned, x = owned or y is not x, y
        if self.solarize_prob > 0:
            mask = p.solarize.view(n, 1, 1, 1) & (x >= self.solarize_threshold)
            x = torch.where(mask, 1.0 - x, x)
        if self.mean is not None and self.std is not None:
            x = _color.normalize_batch(x, self.mean, self.std, inplace=owned)
        return x

    def _check_channels(self, c: int) -> None:
        """Raise if the enabled colour operations cannot run on ``c``-channel images."""
        if c == 3:
            return
        jitter_on = self._jitter_on
        for index, name in ((_SATURATION, "saturation"), (_HUE, "hue")):
            if jitter_on and self.jitter[index] > 0:
                raise ValueError(
                    f"images must have 3 (RGB) channels for {name} jitter "
                    f"(jitter[{index}]={self.jitter[index]}), got {c} channels"
                )
        if c == 1:
            return
        if jitter_on and self.jitter[_CONTRAST] > 0:
            raise ValueError(
                f"images must have 3 (RGB) or 1 (grayscale) channels for contrast jitter "
                f"(jitter[1]={self.jitter[1]}), got {c} channels"
            )
        if self.grayscale_prob > 0:
            raise ValueError(
                f"images must have 3 (RGB) or 1 (grayscale) channels for grayscale "
                f"(grayscale_prob={self.grayscale_prob}), got {c} channels"
            )

    def _color_jitter_groups(self, x: Tensor, p: AugmentationParams, owned: bool) -> Tensor:
        """Random-order colour jitter on CPU, computing only the jittered images.

        The images are grouped by their order (at most 24 groups); each group's operations
        run in sequence on its rows, a few images at a time, so every image runs each
        operation once.
        """
        jittered = p.jitter.nonzero().squeeze(1)
        if jittered.numel() == 0:
            return x
        f = p.factors.to(x.dtype).view(-1, 4, 1, 1, 1)
        enabled = [s > 0 for s in self.jitter]
        order = p.order[jittered]  # (M, 4)
        code = ((order[:, 0] * 4 + order[:, 1]) * 4 + order[:, 2]) * 4 + order[:, 3]
        out = x if owned else x.clone()
        # a few images at a time, so that the operations' temporaries stay in the CPU cache
        step = max(1, _JITTER_CHUNK_PIXELS // (x.shape[2] * x.shape[3]))
        for value in torch.unique(code).tolist():
            ops = [(value >> (2 * (3 - t))) & 3 for t in range(4)]
            for rows in torch.split(jittered[code == value], step):
                out[rows] = _jitter_ops(x[rows], f[rows], ops, enabled)
        return out

    def _color_jitter(self, x: Tensor, p: AugmentationParams, index: Tensor | None) -> Tensor:
        """Colour jitter of the images ``index`` (all when ``None``) of ``x``."""
        y = _rows(x, index)
        m = y.shape[0]
        factors = _rows(p.factors, index).to(x.dtype)  # (M, 4)
        f = factors.view(m, 4, 1, 1, 1)
        enabled = [s > 0 for s in self.jitter]
        if self.jitter_order == "fixed":
            return _jitter_ops(y, f, range(4), enabled)
        order = _rows(p.order, index)  # (M, 4)
        # Step t applies operation order[:, t] to each image. The three blends share one
        # formula clamp(f y + (1 - f) ref) with ref = 0 (brightness), the mean luma (contrast)
        # or the luma (saturation), with f = 1 (the identity) where the step is hue; hue is
        # then computed for the images whose step it is. A disabled operation has factor 1
        # (or shift 0) and is skipped.
        shift = f[:, _HUE]  # (M, 1, 1, 1)
        linear = enabled[_BRIGHTNESS] or enabled[_CONTRAST] or enabled[_SATURATION]
        for t in range(4):
            op = order[:, t : t + 1]  # (M, 1)
            op4 = op.view(m, 1, 1, 1)
            y_lin = y
            if linear:
                factor = torch.where(op4 == _HUE, 1.0, factors.gather(1, op).view(m, 1, 1, 1))
                gray = _color.gray(y)  # (M, 1, H, W)
                mean = gray.mean(dim=(1, 2, 3), keepdim=True)  # (M, 1, 1, 1)
                ref = torch.where(
                    op4 == _BRIGHTNESS, 0.0, torch.where(op4 == _CONTRAST, mean, gray)
                )
                y_lin = _color.blend(y, factor, ref)
            if enabled[_HUE]:

                def hue(index: Tensor | None, y: Tensor = y) -> Tensor:
                    return _color.rotate_hue(_rows(y, index), _rows(shift, index))

                y = _where_rows(op[:, 0] == _HUE, hue, y_lin)
            else:
                y = y_lin
        return y

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw parameters for every image and apply the pipeline.

        Args:
            images: ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` or float in ``[0, 1]``.
            generator: source of randomness. Default: ``None`` (the global generator).

        Returns:
            The augmented images.
        """
        x, unbatched = as_batch("images", images)
        params = self.sample_params(x.shape[0], generator=generator, device=x.device)
        self._check_input(x.shape[1])
        out = self._apply_batch(x, params, owned=False)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return (
            f"jitter={self.jitter}, jitter_prob={self.jitter_prob}, "
            f"jitter_order={self.jitter_order!r}, grayscale_prob={self.grayscale_prob}, "
            f"blur_prob={self.blur_prob}, blur_sigma={self.blur_sigma}, "
            f"blur_kernel_size={self.blur_kernel_size}, solarize_prob={self.solarize_prob}, "
            f"solarize_threshold={self.solarize_threshold}, mean={self.mean}, std={self.std}"
        )
