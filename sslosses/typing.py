"""The type aliases in sslosses' public signatures: the values a string option accepts, and sizes.

Each alias is the one home of its values: the functions and modules that take the option are
annotated with it and validate against it, so a type checker and the run-time check agree.
Import them to annotate your own code:

Examples:
    >>> import typing
    >>> from sslosses.typing import Reduction
    >>> typing.get_args(Reduction)
    ('none', 'mean', 'sum')
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "Activation",
    "Algorithm",
    "BufferPolicy",
    "Centering",
    "ChunkSize",
    "ContrastMode",
    "JitterOrder",
    "OutputNorm",
    "Reduction",
    "Size",
]

Reduction: TypeAlias = Literal["none", "mean", "sum"]
"""The ``reduction`` of a per-sample loss, as in PyTorch. ``"none"`` returns the ``(N,)``
losses, ``"mean"`` and ``"sum"`` a 0-d tensor."""

ChunkSize: TypeAlias = int | Literal["auto"] | None
"""A ``chunk_size`` of :func:`~sslosses.functional.info_nce`,
:func:`~sslosses.functional.nt_xent`, :func:`~sslosses.functional.koleo_loss`,
:func:`~sslosses.functional.nnclr_loss`, :func:`~sslosses.functional.nearest_neighbours`,
:func:`~sslosses.functional.dcl_loss`, :func:`~sslosses.functional.dclw_loss` and
:func:`~sslosses.functional.uniformity_loss`: rows per block (an integer > 0), ``"auto"`` (the
rule of :func:`~sslosses.functional.resolve_chunk_size`) or ``None`` (the plain path)."""

Algorithm: TypeAlias = Literal["auto", "dense", "gram", "fused"]
"""The ``algorithm`` of :func:`~sslosses.functional.barlow_twins_loss` and
:func:`~sslosses.functional.vicreg_loss` (the off-diagonal primitive they share)."""

Centering: TypeAlias = Literal["center", "sinkhorn"]
"""How :func:`~sslosses.functional.dino_loss` and :func:`~sslosses.functional.ibot_patch_loss`
turn the teacher's scores into targets: subtract a center and sharpen (``"center"``, DINO) or
normalize them over the batch by Sinkhorn-Knopp (``"sinkhorn"``, DINOv2's option)."""

BufferPolicy: TypeAlias = Literal["copy", "average", "keep"]
"""What :class:`~sslosses.EMA` and :func:`~sslosses.functional.ema_update_` do with the
buffers (e.g. BatchNorm statistics): copy them from the online network, average the
floating-point ones like the parameters (copying the others), or keep the target's own."""

OutputNorm: TypeAlias = Literal["none", "affine", "scale_only", "no_affine"]
"""The normalization after a head's output layer (:class:`~sslosses.heads.MLPHead`):
none, ``BatchNorm1d`` with scale and shift, with a scale only, or without either."""

Activation: TypeAlias = Literal["relu", "gelu"]
"""The activation of a head's hidden layers (:class:`~sslosses.heads.MLPHead`)."""

JitterOrder: TypeAlias = Literal["random", "fixed"]
"""The order of the colour-jitter operations of :class:`~sslosses.transforms.Augmentation`:
a random permutation per sample (torchvision's) or brightness, contrast, saturation, hue."""

Size: TypeAlias = int | tuple[int, int]
"""An image size, ``s`` for ``s x s`` or ``(height, width)``."""

ContrastMode: TypeAlias = Literal["all", "one"]
"""The anchors of :func:`~sslosses.functional.supcon_loss`: every view of every sample
(``"all"``) or the first view of each sample only (``"one"``), as the original's
``contrast_mode``."""
