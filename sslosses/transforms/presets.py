"""The augmentation recipes of SimCLR, BYOL, SwAV and DINO as :class:`MultiCrop` instances.

Every default names its source, the resize filter included: the PyTorch originals (SwAV,
DINO) crop with torchvision's ``RandomResizedCrop`` on PIL images, whose resize filters widen
with the downscale factor (Pillow 2.7.0 and later), so :func:`swav_transform` and
:func:`dino_transform` antialias by default; the TF originals (SimCLR, BYOL) resize with
``tf.image.resize``, whose ``antialias`` defaults to ``False``, so :func:`simclr_transform` and
:func:`byol_transform` do not. Deliberate differences from the original pipelines, which
transform one PIL or TF image at a time: crops are resized bilinearly (DINO resizes
bicubically with PIL, SimCLR and BYOL bicubically in TF); colour jitter uses
torchvision's formulas (BYOL's JAX code adds a brightness delta, and it and SimCLR's TF code
take per-channel contrast means and scale saturation in HSV); blur uses a truncated,
renormalized Gaussian kernel with reflection padding (SimCLR and BYOL pad with zeros, DINO uses
PIL's ``GaussianBlur(radius=sigma)``); grayscale uses the weights 0.299, 0.587, 0.114.
"""

from __future__ import annotations

from collections.abc import Sequence

from sslosses._validation import (
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    check_probability,
)
from sslosses.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, Augmentation
from sslosses.transforms.multicrop import MultiCrop
from sslosses.typing import Size

__all__ = ["SWAV_STD", "byol_transform", "dino_transform", "simclr_transform", "swav_transform"]

SWAV_STD: tuple[float, float, float] = (0.228, 0.224, 0.225)
"""The channel standard deviations in facebookresearch/swav ``src/multicropdataset.py``
(0.228 for red, where torchvision uses 0.229)."""

_BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # BYOL augmentations.py; DINO main_dino.py
_BLUR_SIGMA = (0.1, 2.0)  # SimCLR random_blur; BYOL sigma_min/max; SwAV; DINO radius_min/max


def simclr_transform(
    size: Size = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    strength: float = 1.0,
    blur_prob: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    antialias: bool = False,
) -> MultiCrop:
    r"""SimCLR's two views: the same random pipeline applied twice.

    Random resized crop (area in ``scale``, aspect ratio in ``[3/4, 4/3]``), flip with
    probability 0.5, colour jitter of strength :math:`s` (brightness, contrast, saturation
    :math:`0.8s`, hue :math:`0.2s`, random order) with probability 0.8, grayscale with
    probability 0.2, Gaussian blur with :math:`\sigma \in [0.1, 2]` and a kernel of 10% of the
    crop size with probability ``blur_prob``.

    Sources: Chen et al. 2020, appendix A; google-research/simclr ``data_util.py``:
    ``crop_and_resize`` (``area_range=(0.08, 1.0)``, ``aspect_ratio_range=(3/4, 4/3)``),
    ``color_jitter`` (``0.8 * strength``, ``0.2 * strength``, ``random_order=True``),
    ``random_color_jitter`` (``p=0.8`` then grayscale ``p=0.2``), ``random_blur``
    (``kernel_size=height // 10``, ``sigma`` in ``[0.1, 2.0]``), ``batch_random_blur``
    (``blur_probability=0.5``). SimCLR feeds ``[0, 1]`` images to the network without
    normalization, hence ``mean=std=None``; its CIFAR-10 recipe drops the blur
    (``blur_prob=0.0``) and uses strength 0.5. ``crop_and_resize`` resizes with
    ``tf.image.resize(..., method=BICUBIC)``, whose ``antialias`` argument defaults to
    ``False``, hence ``antialias=False`` here.

    Args:
        size: crop size (e.g. 32 for CIFAR-sized data). Default: ``224``.
        scale: crop area fraction range. Default: ``(0.08, 1.0)``.
        strength: colour jitter strength :math:`s`. Default: ``1.0``.
        blur_prob: probability of blur. Default: ``0.5``.
        mean: normalization mean, or ``None``. Default: ``None``.
        std: normalization standard deviation, or ``None``. Default: ``None``.
        antialias: resize the crops with antialiasing (see :class:`MultiCrop`). Default:
            ``False`` (as SimCLR's ``tf.image.resize``).

    Returns:
        A :class:`MultiCrop` making 2 views.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import simclr_transform
        >>> views = simclr_transform(32)(torch.rand(4, 3, 40, 40))
        >>> [tuple(v.shape) for v in views]
        [(4, 3, 32, 32), (4, 3, 32, 32)]

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
        ICML 2020, arXiv:2002.05709; google-research/simclr ``data_util.py``.
    """
    s = check_non_negative("strength", strength)
    aug = Augmentation(
        jitter=(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5)),
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=check_probability("blur_prob", blur_prob),
        blur_sigma=_BLUR_SIGMA,
        mean=mean,
        std=std,
    )
    return MultiCrop((size,), (2,), (scale,), augmentations=aug, antialias=antialias)


def byol_transform(
    size: Size = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    antialias: bool = False,
) -> MultiCrop:
    r"""BYOL's asymmetric pair of views.

    Both views: random resized crop (area in ``scale``, aspect ratio ``[3/4, 4/3]``), flip
    with probability 0.5, colour jitter ``(0.4, 0.4, 0.2, 0.1)`` in random order with
    probability 0.8, grayscale with probability 0.2, blur with :math:`\sigma \in [0.1, 2]` and
    a kernel of 10% of the crop size, normalization with ImageNet statistics. View 1: blur
    probability 1.0, no solarization. View 2: blur probability 0.1, solarization with
    probability 0.2 (threshold 0.5).

    Sources: Grill et al. 2020, table 6; google-deepmind/deepmind-research
    ``byol/utils/augmentations.py`` (``augment_config``: ``view1``/``view2``,
    ``blur_divider=10``), ``byol/utils/dataset.py`` (``_decode_and_random_crop``: area
    ``(0.08, 1.0)``, log-uniform ratio ``(3/4, 4/3)``; ``normalize_images``: ImageNet mean and
    std; ``_preprocess_image``: ``tf.image.resize(image, [224, 224], BICUBIC)``, whose
    ``antialias`` argument defaults to ``False``, hence ``antialias=False`` here).

    Args:
        size: crop size. Default: ``224``.
        scale: crop area fraction range. Default: ``(0.08, 1.0)``.
        mean: normalization mean, or ``None``. Default: ``IMAGENET_MEAN``.
        std: normalization standard deviation, or ``None``. Default: ``IMAGENET_STD``.
        antialias: resize the crops with antialiasing (see :class:`MultiCrop`). Default:
            ``False`` (as BYOL's ``tf.image.resize``).

    Returns:
        A :class:`MultiCrop` making 2 views (view 1, view 2).

    Examples:
        >>> import torch
        >>> from sslosses.transforms import byol_transform
        >>> view1, view2 = byol_transform(32)(torch.rand(4, 3, 40, 40))
        >>> view1.shape, view2.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 3, 32, 32]))

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733;
        google-deepmind/deepmind-research ``byol/utils/augmentations.py``.
    """

    view1 = _byol_view(1.0, 0.0, mean, std)
    view2 = _byol_view(0.1, 0.2, mean, std)
    return MultiCrop(
        (size, size),
        (1, 1),
        (scale, scale),
        augmentations=(view1, view2),
        antialias=antialias,
    )


def _byol_view(
    blur_prob: float,
    solarize_prob: float,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Augmentation:
    """BYOL's colour and blur pipeline (also DINO's) with one view's blur/solarize chances."""
    return Augmentation(
        jitter=_BYOL_JITTER,
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=blur_prob,
        blur_sigma=_BLUR_SIGMA,
        solarize_prob=solarize_prob,
        mean=mean,
        std=std,
    )


def swav_transform(
    global_size: Size = 224,
    local_size: Size = 96,
    *,
    global_count: int = 2,
    local_count: int = 6,
    global_scale: tuple[float, float] = (0.14, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.14),
    blur_kernel_size: int | None = 23,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = SWAV_STD,
    antialias: bool = True,
) -> MultiCrop:
    r"""SwAV's multi-crop: 2 x 224 (area 0.14-1) + 6 x 96 (area 0.05-0.14).

    Every crop: flip with probability 0.5, colour distortion of strength 1 (jitter
    ``(0.8, 0.8, 0.8, 0.2)`` with probability 0.8, grayscale with probability 0.2), Gaussian
    blur with probability 0.5, :math:`\sigma \in [0.1, 2]`, a 23 x 23 kernel, normalization.

    Sources: Caron et al. 2020, section 4; facebookresearch/swav ``src/multicropdataset.py``
    (``get_color_distortion(s=1.0)``, ``RandomGaussianBlur``: ``p=0.5``,
    ``cv2.GaussianBlur(img, (23, 23), sigma)``, ``sigma = 0.1 + 1.9 u``;
    ``mean=[0.485, 0.456, 0.406]``, ``std=[0.228, 0.224, 0.225]``;
    ``transforms.RandomResizedCrop(size_crops[i], scale=...)`` on PIL images, whose bilinear
    filter antialiases, hence ``antialias=True``) and the README's
    multi-crop command (``--nmb_crops 2 6 --size_crops 224 96 --min_scale_crops 0.14 0.05
    --max_scale_crops 1. 0.14``). For small images pass ``blur_kernel_size=None`` (10% of
    the crop size) or smaller sizes' kernels.

    Args:
        global_size: size of the global crops. Default: ``224``.
        local_size: size of the local crops. Default: ``96``.
        global_count: number of global crops. Default: ``2``.
        local_count: number of local crops (0 for none). Default: ``6``.
        global_scale: area fraction range of the global crops. Default: ``(0.14, 1.0)``.
        local_scale: area fraction range of the local crops. Default: ``(0.05, 0.14)``.
        blur_kernel_size: odd blur kernel size, or ``None`` for 10% of the crop size.
            Default: ``23``.
        mean: normalization mean, or ``None``. Default: ``IMAGENET_MEAN``.
        std: normalization standard deviation, or ``None``. Default: ``SWAV_STD``.
        antialias: resize the crops with antialiasing (see :class:`MultiCrop`); ``False`` is
            the faster unfiltered path. Default: ``True`` (as SwAV's PIL resize).

    Returns:
        A :class:`MultiCrop` making ``global_count + local_count`` crops, global first.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import swav_transform
        >>> crops = swav_transform(32, 16, blur_kernel_size=None)(torch.rand(4, 3, 40, 40))
        >>> len(crops), tuple(crops[0].shape), tuple(crops[-1].shape)
        (8, (4, 3, 32, 32), (4, 3, 16, 16))

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882; facebookresearch/swav
        ``src/multicropdataset.py``.
    """
    aug = Augmentation(
        jitter=(0.8, 0.8, 0.8, 0.2),
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.5,
        blur_sigma=_BLUR_SIGMA,
        blur_kernel_size=blur_kernel_size,
        mean=mean,
        std=std,
    )
    counts = [check_positive_int("global_count", global_count)]
    sizes: list[Size] = [global_size]
    scales = [global_scale]
    if check_non_negative_int("local_count", local_count) > 0:
        counts.append(local_count)
        sizes.append(local_size)
        scales.append(local_scale)
    return MultiCrop(sizes, counts, scales, augmentations=aug, antialias=antialias)


def dino_transform(
    global_size: Size = 224,
    local_size: Size = 96,
    *,
    local_count: int = 8,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    antialias: bool = True,
) -> MultiCrop:
    r"""DINO's multi-crop: 2 x 224 global crops (area 0.4-1) + 8 x 96 local crops (0.05-0.4).

    Every crop: flip with probability 0.5, colour jitter ``(0.4, 0.4, 0.2, 0.1)`` with
    probability 0.8, grayscale with probability 0.2, normalization with ImageNet statistics.
    Global crop 1: blur with probability 1.0. Global crop 2: blur with probability 0.1 and
    solarization with probability 0.2. Local crops: blur with probability 0.5. Blur
    :math:`\sigma \in [0.1, 2]`, kernel 10% of the crop size.

    Sources: Caron et al. 2021, appendix; facebookresearch/dino ``main_dino.py``
    (``DataAugmentationDINO``: ``transforms.RandomResizedCrop(...,
    interpolation=Image.BICUBIC)`` on PIL images, whose filter antialiases, hence
    ``antialias=True``; ``--global_crops_scale 0.4 1.``, ``--local_crops_number 8``,
    ``--local_crops_scale 0.05 0.4``) and ``utils.py`` (``GaussianBlur``:
    ``radius_min=0.1``, ``radius_max=2.``; ``Solarization``: ``ImageOps.solarize``, threshold
    128 of 255).

    Args:
        global_size: size of the two global crops. Default: ``224``.
        local_size: size of the local crops. Default: ``96``.
        local_count: number of local crops (0 for none). Default: ``8``.
        global_scale: area fraction range of the global crops. Default: ``(0.4, 1.0)``.
        local_scale: area fraction range of the local crops. Default: ``(0.05, 0.4)``.
        mean: normalization mean, or ``None``. Default: ``IMAGENET_MEAN``.
        std: normalization standard deviation, or ``None``. Default: ``IMAGENET_STD``.
        antialias: resize the crops with antialiasing (see :class:`MultiCrop`); ``False`` is
            the faster unfiltered path. Default: ``True`` (as DINO's PIL resize).

    Returns:
        A :class:`MultiCrop` making ``2 + local_count`` crops: global 1, global 2, locals.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import dino_transform
        >>> crops = dino_transform(32, 16)(torch.rand(4, 3, 40, 40))
        >>> len(crops), tuple(crops[1].shape), tuple(crops[2].shape)
        (10, (4, 3, 32, 32), (4, 3, 16, 16))

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
        arXiv:2104.14294; facebookresearch/dino ``main_dino.py``.
    """

    sizes: list[Size] = [global_size, global_size]
    counts = [1, 1]
    scales = [global_scale, global_scale]
    augs = [_byol_view(1.0, 0.0, mean, std), _byol_view(0.1, 0.2, mean, std)]
    if check_non_negative_int("local_count", local_count) > 0:
        sizes.append(local_size)
        counts.append(local_count)
        scales.append(local_scale)
        augs.append(_byol_view(0.5, 0.0, mean, std))
    return MultiCrop(sizes, counts, scales, augmentations=augs, antialias=antialias)
