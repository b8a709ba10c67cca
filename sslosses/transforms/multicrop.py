"""Multi-crop: several groups of random resized crops, each with its own augmentation pipeline.

The model side, running a backbone once per crop resolution, is
:func:`~sslosses.transforms.forward_multicrop` (defined in ``sslosses/multicrop.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sslosses._validation import (
    check_bool,
    check_generator,
    check_positive_int,
    check_range,
    check_sequence,
    check_size,
)
from sslosses.transforms._checks import as_batch
from sslosses.transforms._geometry import check_crop_params, resize_crops
from sslosses.transforms.augment import Augmentation, AugmentationParams
from sslosses.transforms.crop import CropParams, RandomResizedCrop
from sslosses.typing import Size

__all__ = ["MultiCrop"]


class MultiCrop(nn.Module):
    r"""Groups of random resized crops of a batch, each group with its own augmentation.

    Group :math:`g` makes ``crop_counts[g]`` crops of size ``crop_sizes[g]`` per image, with
    area fraction in ``crop_scales[g]``, a random horizontal flip, and the pipeline
    ``augmentations[g]`` (:class:`Augmentation`). Every crop of every image has its own random
    box, flip and augmentation parameters. Groups with the same output size are resampled
    together (:func:`~sslosses.transforms.functional.resized_crop`, batched
    antialiased resize by default, or :func:`torch.nn.functional.grid_sample` calls over chunks
    of images with ``antialias=False``); each group's pixel
    pipeline runs once on all its crops, in place on the resampled buffer. The images are
    checked and converted to floating point once per call, not again per group. Called on
    ``(N, C, H, W)`` images it returns a list of :math:`V = \sum_g` ``crop_counts[g]``
    tensors ``(N, C, h_g, w_g)``, in group order (put the global crops first, as the losses
    expect); on ``(C, H, W)`` it returns ``(C, h_g, w_g)`` crops, so it also works as a
    per-image dataset transform.

    Randomness comes from ``generator`` (drawn on its device, so a seeded CPU generator gives
    the same crops on every device): the same seed gives identical crops. Output dtype:
    float32 (float64 for float64 input), in ``[0, 1]`` unless the augmentation normalizes.

    Args:
        crop_sizes: output size of each group, ``s`` or ``(h, w)``.
        crop_counts: number of crops of each group.
        crop_scales: area fraction range ``(min, max)`` of each group.
        augmentations: one :class:`Augmentation` per group, a single one shared by all groups,
            or ``None`` (crops only). Default: ``None``.
        ratio: aspect ratio range of every crop. Default: ``(3/4, 4/3)``.
        flip_prob: probability of a horizontal flip of every crop. Default: ``0.5``.
        antialias: resize every crop with the antialiased bilinear filter of
            ``F.interpolate(..., antialias=True)``, as torchvision's ``RandomResizedCrop`` does
            in the PyTorch originals; ``False`` for the faster unfiltered sampling (see
            :func:`~sslosses.transforms.functional.resized_crop`). Default: ``True``.

    Shape:
        - images: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - output: a list of :math:`V` tensors :math:`(N, C, h_g, w_g)` (or :math:`(C, h_g, w_g)`).

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if the per-group lists are empty or differ in length, or a size, count,
            scale or probability is invalid.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import Augmentation, MultiCrop
        >>> multicrop = MultiCrop(
        ...     crop_sizes=(32, 16), crop_counts=(2, 4), crop_scales=((0.4, 1.0), (0.05, 0.4)),
        ...     augmentations=Augmentation(jitter=(0.4, 0.4, 0.2, 0.1), grayscale_prob=0.2),
        ... )
        >>> crops = multicrop(torch.rand(8, 3, 48, 48), generator=torch.Generator().manual_seed(0))
        >>> [tuple(c.shape) for c in crops]  # doctest: +NORMALIZE_WHITESPACE
        [(8, 3, 32, 32), (8, 3, 32, 32), (8, 3, 16, 16), (8, 3, 16, 16), (8, 3, 16, 16),
         (8, 3, 16, 16)]

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments" (SwAV), NeurIPS 2020, arXiv:2006.09882; facebookresearch/swav
        ``src/multicropdataset.py`` (``MultiCropDataset``).
    """

    def __init__(
        self,
        crop_sizes: Sequence[Size],
        crop_counts: Sequence[int],
        crop_scales: Sequence[tuple[float, float]],
        *,
        augmentations: Augmentation | Sequence[Augmentation] | None = None,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        sizes = check_sequence("crop_sizes", crop_sizes)
        counts = check_sequence("crop_counts", crop_counts)
        scales = check_sequence("crop_scales", crop_scales)
        if not len(sizes) == len(counts) == len(scales):
            raise ValueError(
                "crop_sizes, crop_counts and crop_scales must have the same length, got "
                f"{len(sizes)}, {len(counts)} and {len(scales)}"
            )
        groups = len(sizes)
        self.antialias = check_bool("antialias", antialias)
        if augmentations is None:
            augs: list[Augmentation] = [Augmentation() for _ in range(groups)]
        elif isinstance(augmentations, Augmentation):
            augs = [augmentations] * groups
        else:
            seq = check_sequence("augmentations", augmentations)
            if len(seq) != groups:
                raise ValueError(
                    f"augmentations must have one entry per crop group ({groups}), got {len(seq)}"
                )
            for i, a in enumerate(seq):
                if not isinstance(a, Augmentation):
                    raise TypeError(
                        f"augmentations[{i}] must be an Augmentation, got {type(a).__name__}"
                    )
            augs = list(seq)  # type: ignore[arg-type]
        self.crop_counts: tuple[int, ...] = tuple(
            check_positive_int(f"crop_counts[{i}]", c) for i, c in enumerate(counts)
        )
        self.crops = nn.ModuleList(
            RandomResizedCrop(
                check_size(f"crop_sizes[{i}]", size),
                scale=check_range(f"crop_scales[{i}]", scale, low=0, high=1, low_open=True),
                ratio=ratio,
                flip_prob=flip_prob,
                antialias=self.antialias,
            )
            for i, (size, scale) in enumerate(zip(sizes, scales, strict=True))
        )
        self.augmentations = nn.ModuleList(augs)

    @property
    def num_crops(self) -> int:
        """Total number of crops per image, :math:`V`."""
        return sum(self.crop_counts)

    def _groups(self) -> list[tuple[RandomResizedCrop, Augmentation, int]]:
        return [
            (crop, aug, count)  # type: ignore[misc]
            for crop, aug, count in zip(
                self.crops, self.augmentations, self.crop_counts, strict=True
            )
        ]

    def sample_params(
        self,
        n: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> list[tuple[CropParams, AugmentationParams]]:
        """Draw all random parameters for ``n`` images of size ``height x width``.

        Group by group: the crop boxes and flips (:meth:`RandomResizedCrop.sample_params`),
        then the pixel parameters of its ``count * n`` crops, crop-major
        (:meth:`Augmentation.sample_params`).

        Returns:
            One ``(CropParams, AugmentationParams)`` pair per group.
        """
        gen = check_generator(generator)
        params = []
        for crop, aug, count in self._groups():
            cp = crop.sample_params(n, height, width, count=count, generator=gen, device=device)
            ap = aug.sample_params(count * n, generator=gen, device=device)
            params.append((cp, ap))
        return params

    def apply_params(
        self, images: Tensor, params: Sequence[tuple[CropParams, AugmentationParams]]
    ) -> list[Tensor]:
        """Make the crops described by ``params`` (deterministic); see :meth:`forward`."""
        x, unbatched = as_batch("images", images)
        groups = self._groups()
        if not isinstance(params, (list, tuple)):
            raise TypeError(
                f"params must be a list of (CropParams, AugmentationParams) pairs, "
                f"got {type(params).__name__}"
            )
        if len(params) != len(groups):
            raise ValueError(
                f"params must hold one (CropParams, AugmentationParams) pair per group "
                f"({len(groups)}), got {len(params)}"
            )
        out = self._crops(x, params, check_params=True)
        return [o.squeeze(0) for o in out] if unbatched else out

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Make all crops of every image.

        Args:
            images: ``(N, C, H, W)`` or ``(C, H, W)``, ``uint8`` or float in ``[0, 1]``.
            generator: source of randomness. Default: ``None`` (the global generator).

        Returns:
            :math:`V` crops, group by group.
        """
        x, unbatched = as_batch("images", images)
        n, _, h, w = x.shape
        params = self.sample_params(n, h, w, generator=generator, device=x.device)
        out = self._crops(x, params, check_params=False)
        return [o.squeeze(0) for o in out] if unbatched else out

    def _crops(
        self,
        x: Tensor,
        params: Sequence[tuple[CropParams, AugmentationParams]],
        *,
        check_params: bool,
    ) -> list[Tensor]:
        """The crops of ``x``, a batch checked once by the caller (``as_batch``).

        The crops and augmentations get the batch through their unchecked paths
        (``resize_crops``, ``Augmentation._apply_batch``); each augmentation checks the channels
        once. ``check_params``: ``params`` come from a caller (:meth:`apply_params`) and are
        checked as :func:`~sslosses.transforms.functional.resized_crop` and
        :meth:`Augmentation.apply_params` check them; :meth:`forward` drew them itself.
        """
        n, c = x.shape[:2]
        groups = self._groups()
        # one resampling (resize_crops) per distinct output size
        by_size: dict[tuple[int, int], list[int]] = {}
        for g, (crop, _, _) in enumerate(groups):
            by_size.setdefault(crop.size, []).append(g)
        resampled: dict[int, Tensor] = {}
        for size, members in by_size.items():
            boxes = torch.cat([params[g][0].boxes for g in members])  # (sum V, N, 4)
            flip = torch.cat([params[g][0].flip for g in members])  # (sum V, N)
            if check_params:
                check_crop_params(boxes, flip, n)
            out = resize_crops(
                x, boxes, size, flip=flip, antialias=self.antialias
            )  # (sum V, N, C, h, w)
            parts = torch.split(out, [groups[g][2] for g in members])
            for g, part in zip(members, parts, strict=True):
                resampled[g] = part
        result: list[Tensor] = []
        checked: list[Augmentation] = []  # an augmentation shared by the groups is checked once
        for g, (crop, aug, count) in enumerate(groups):
            h, w = crop.size
            if check_params:
                aug._check_params(params[g][1], count * n)
            if not any(a is aug for a in checked):
                aug._check_input(c)
                checked.append(aug)
            views = resampled[g].reshape(count * n, c, h, w)
            # the resampled crops are private buffers: augment them in place
            views = aug._apply_batch(views, params[g][1], owned=True).view(count, n, c, h, w)
            result.extend(views.unbind(0))
        return result

    def extra_repr(self) -> str:
        return f"crop_counts={self.crop_counts}, antialias={self.antialias}"
