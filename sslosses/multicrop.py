r"""The model side of multi-crop: run a backbone once per resolution over a list of crops.

:class:`~sslosses.transforms.MultiCrop` (``sslosses/transforms/multicrop.py``) makes the crops,
on the data side; :func:`forward_multicrop` feeds them to the network, like DINO's
``MultiCropWrapper``. It is public as ``sslosses.transforms.forward_multicrop``, next to the
crops it consumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sslosses._validation import check_sequence

__all__ = ["forward_multicrop"]


def forward_multicrop(
    backbone: Callable[[Tensor], Tensor], crops: Sequence[Tensor]
) -> list[Tensor]:
    r"""Run ``backbone`` once per run of same-resolution crops; outputs in crop order.

    Consecutive crops with the same shape (apart from the batch size), dtype and device are
    concatenated along the batch and passed through ``backbone`` together, and the output is
    split back, as DINO's ``MultiCropWrapper`` does: with 2 global and 8 local crops that is two
    forward passes instead of ten. Layers that use batch statistics (BatchNorm in training
    mode) see the whole concatenated run, as in DINO.

    Args:
        backbone: a callable mapping a batch ``(B, ...)`` to a tensor with ``B`` rows.
        crops: the crops, e.g. from :class:`MultiCrop`.

    Shape:
        - crops: :math:`V` tensors :math:`(N_v, C, h_v, w_v)`.
        - output: :math:`V` tensors :math:`(N_v, \dots)`, ``output[v] == backbone(crops[v])``
          up to batch-dependent layers and floating-point rounding.

    Returns:
        The list of outputs, one per crop.

    Raises:
        TypeError: if ``crops`` is not a sequence of tensors or ``backbone`` does not return a
            tensor.
        ValueError: if ``crops`` is empty or the output has the wrong batch size.

    Examples:
        >>> import torch
        >>> from sslosses.transforms import forward_multicrop
        >>> backbone = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> crops = [torch.rand(4, 3, 32, 32)] * 2 + [torch.rand(4, 3, 16, 16)] * 6
        >>> outputs = forward_multicrop(backbone, crops)
        >>> len(outputs), tuple(outputs[0].shape)
        (8, (4, 3))

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV
        2021, arXiv:2104.14294; facebookresearch/dino ``utils.py`` (``MultiCropWrapper``).
    """
    if not callable(backbone):
        raise TypeError(f"backbone must be callable, got {type(backbone).__name__}")
    seq = check_sequence("crops", crops)
    for i, crop in enumerate(seq):
        if not isinstance(crop, Tensor):
            raise TypeError(f"crops[{i}] must be a torch.Tensor, got {type(crop).__name__}")
        if crop.dim() < 1:
            raise ValueError(f"crops[{i}] must have a batch dimension, got a 0-D tensor")
    tensors: list[Tensor] = list(seq)  # type: ignore[arg-type]

    def key(t: Tensor) -> tuple[object, ...]:
        return (tuple(t.shape[1:]), t.dtype, t.device)

    outputs: list[Tensor] = []
    start = 0
    while start < len(tensors):
        end = start + 1
        while end < len(tensors) and key(tensors[end]) == key(tensors[start]):
            end += 1
        run = tensors[start:end]
        batch = run[0] if len(run) == 1 else torch.cat(run)
        out = backbone(batch)
        if not isinstance(out, Tensor):
            raise TypeError(f"backbone must return a torch.Tensor, got {type(out).__name__}")
        if out.dim() < 1 or out.shape[0] != batch.shape[0]:
            raise ValueError(
                f"backbone must return one row per input ({batch.shape[0]}), "
                f"got shape {tuple(out.shape)}"
            )
        outputs.extend(torch.split(out, [t.shape[0] for t in run]))
        start = end
    return outputs
