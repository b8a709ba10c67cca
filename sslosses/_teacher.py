"""The teacher's targets of DINO-style self-distillation (private plumbing of DINO and iBOT).

Two ways to turn the teacher's scores into targets, the ``centering`` option of
:func:`sslosses.functional.dino_loss` and :func:`sslosses.functional.ibot_patch_loss`:

- ``"center"``: subtract a running center and sharpen, :math:`\\operatorname{softmax}((t - c) /
  \\tau_t)` row by row (DINO's ``DINOLoss``, dinov2's ``softmax_center_teacher``);
- ``"sinkhorn"``: the Sinkhorn-Knopp normalization of :math:`\\exp(t / \\tau_t)` over the rows of
  the batch (dinov2's ``sinkhorn_knopp_teacher``), computed by :mod:`sslosses.sinkhorn`'s
  stabilized iteration with :math:`\\varepsilon = \\tau_t`.

The argument checks of the pair ``(centering, center)`` live here too, so both losses word
them alike.
"""

from __future__ import annotations

from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from sslosses._validation import check_choice, check_positive_int, check_same_device, check_tensor
from sslosses.sinkhorn import _sinkhorn
from sslosses.typing import Centering

_CENTERINGS: tuple[Centering, ...] = get_args(Centering)


def check_center(name: str, center: object, k: int) -> Tensor:
    """Check a center: a floating-point tensor of shape ``(K,)`` or ``(1, K)``."""
    center = check_tensor(name, center)
    # Compared dimension by dimension: under torch.compile, once K has changed between calls
    # it is a symbol, and ``center.shape in ((k,), (1, k))`` is False even when it matches.
    rows = 1 if center.dim() == 1 else center.shape[0]
    if center.dim() not in (1, 2) or rows != 1 or center.shape[-1] != k:
        raise ValueError(
            f"{name} must have shape ({k},) or (1, {k}) (K={k} like the scores), "
            f"got {tuple(center.shape)}"
        )
    return center


def check_centering(
    centering: object, center: object, sinkhorn_iterations: object, scores: Tensor
) -> tuple[Centering, Tensor | None, int]:
    """Check ``centering`` and what goes with it: ``center`` for one, the iterations for the other.

    ``center`` is required with ``"center"`` and must be ``None`` with ``"sinkhorn"`` (whose
    targets are invariant to a constant per output, so a center would be silently ignored).
    ``scores`` gives the number of outputs ``K`` (its last dimension) and the device.
    """
    mode = check_choice("centering", centering, _CENTERINGS)
    iterations = check_positive_int("sinkhorn_iterations", sinkhorn_iterations)
    k = scores.shape[-1]
    if mode == "center":
        if center is None:
            raise ValueError(
                "center is required with centering='center' (e.g. DINOCenter.center, a tensor "
                f"of shape ({k},)), got None; pass centering='sinkhorn' to normalize the "
                "teacher's outputs by Sinkhorn-Knopp instead"
            )
        checked = check_center("center", center, k)
        check_same_device("the scores", scores, "center", checked)
        return mode, checked, iterations
    if center is not None:
        shape = tuple(center.shape) if isinstance(center, Tensor) else type(center).__name__
        raise ValueError(
            "center must be None with centering='sinkhorn' (the Sinkhorn-Knopp targets do not "
            f"depend on a center: they are invariant to a constant per output), got {shape}"
        )
    return mode, None, iterations


def teacher_targets(
    scores: Tensor,
    *,
    centering: Centering,
    center: Tensor | None,
    temperature: float,
    iterations: int,
    gather_distributed: bool,
    samples: Tensor | None = None,
) -> Tensor:
    """The teacher's targets for the ``(R, K)`` rows ``scores`` (no gradient, rows sum to 1).

    ``scores`` is already in the compute dtype. With ``"sinkhorn"`` the rows marked by
    ``samples`` (all if ``None``) are normalized together, over all ranks under
    ``gather_distributed``; the unmarked rows are meaningless (see ``_sinkhorn``).
    """
    with torch.no_grad():
        if centering == "center":
            assert center is not None  # checked by check_centering
            shift = center.detach().to(scores.dtype).reshape(1, -1)  # (1, K)
            return F.softmax((scores.detach() - shift) / temperature, dim=1)  # (R, K)
        return _sinkhorn(scores.detach(), temperature, iterations, gather_distributed, samples)


def options_repr(module: Any) -> str:
    """The ``extra_repr`` of ``DINOLoss`` and ``IBOTPatchLoss`` (the same options)."""
    iterations = (
        f"sinkhorn_iterations={module.sinkhorn_iterations}, "
        if module.centering == "sinkhorn"
        else ""
    )
    return (
        f"student_temperature={module.student_temperature}, "
        f"teacher_temperature={module.teacher_temperature}, "
        f"centering={module.centering!r}, {iterations}"
        f"gather_distributed={module.gather_distributed}"
    )
