r"""iBOT: masked image modeling by self-distillation, the patch loss of DINOv2."""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._teacher import check_centering, options_repr, teacher_targets
from sslosses._validation import (
    check_choice,
    check_min_batch,
    check_positive,
    check_positive_int,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from sslosses.typing import Centering

__all__ = ["IBOTPatchLoss", "ibot_patch_loss"]


def ibot_patch_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    masks: Tensor,
    *,
    center: Tensor | None = None,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.07,
    centering: Centering = "center",
    sinkhorn_iterations: int = 3,
    gather_distributed: bool = False,
) -> Tensor:
    r"""iBOT patch loss: the student predicts the teacher's outputs for the patches it saw masked.

    The student sees image :math:`b` with some of its :math:`P` patches masked
    (:math:`m_{bp} = 1`), the teacher sees it whole. For every masked patch the student's
    log-probabilities :math:`\log \operatorname{softmax}(S_{bp} / \tau_s)` meet the teacher's
    target :math:`Q_{bp}`; the cross-entropy is averaged over the masked patches of each image
    (an image without a masked patch counts 0), then over the :math:`B` images:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{b=1}^{B} \frac{1}{\max(1, \sum_p m_{bp})}
            \sum_{p=1}^{P} m_{bp} \left( -\sum_{k=1}^{K} Q_{bpk}
            \log \operatorname{softmax}_k\!\left(\frac{S_{bp}}{\tau_s}\right) \right)

    The targets (no gradient) are, with ``centering="center"``,
    :math:`Q_{bp} = \operatorname{softmax}((T_{bp} - c) / \tau_t)` with the patch center
    :math:`c` (:class:`sslosses.DINOCenter` updated with the teacher's patch tokens), and with
    ``"sinkhorn"`` the Sinkhorn-Knopp normalization of :math:`\exp(T / \tau_t)` over the
    masked patches of the batch (all ranks' under ``gather_distributed``), each row summing to
    1, computed by the stabilized iteration of :func:`sslosses.functional.sinkhorn` with
    :math:`\varepsilon = \tau_t` (finite where the original's ``exp`` overflows; both agree
    wherever it is finite). Unmasked patches do not enter the loss nor the Sinkhorn sums.

    This reproduces ``iBOTPatchLoss`` of facebookresearch/dinov2
    (``dinov2/loss/ibot_patch_loss.py``): ``forward`` on ``(B, P, K)`` patch tokens and
    ``forward_masked`` on the masked rows only; the two normalize alike (``forward`` divides
    each image's sum by its ``clamp(min=1)`` masked count and takes the mean over images;
    ``forward_masked`` weighs each masked row by ``masks_weight``, by default and in DINOv2's
    collate function that same ``1 / clamp(min=1)`` count of its image, and divides the sum by
    the number of images ``B``). The teacher's targets are those of ``softmax_center_teacher``
    and ``sinkhorn_knopp_teacher``, which the original computes before the loss; the loss there
    takes them as probabilities, here the teacher's scores. ``sinkhorn_knopp_teacher`` of the
    patch loss all-reduces the masked count even without a process group (it fails in one
    process); here it runs anywhere. In DINOv2's step the loss is then multiplied by
    ``2 * (1 / 2) = 1`` (two global crops, the images of both in ``B``).

    Two layouts, one computation (the loss is a weighted sum over rows):

    - patch tokens ``(B, P, K)`` with ``masks`` ``(B, P)``: every patch is a row with weight
      :math:`m_{bp} / \max(1, \sum_p m_{bp})`; the shapes do not depend on the masks, so
      :func:`torch.compile` captures it in one graph, at the cost of a log-softmax over every
      patch;
    - masked rows ``(M, K)``, ``student_scores[masks]`` (row-major order, as boolean indexing
      gives), with ``masks`` ``(B, P)`` and :math:`M = \sum m_{bp}`: only the masked rows are
      computed (``forward_masked``'s layout; its ``n_masked_patches`` padding is left to the
      caller: pass the first :math:`M` rows).

    Half-precision inputs (or autocast) are computed and returned in float32; float64 stays
    float64.

    With ``gather_distributed=True`` and a process group of size :math:`W > 1`, rank :math:`r`
    returns :math:`W B_r / B` times its local loss (:math:`B` the global number of images), so
    the mean over ranks is the loss on the global batch and each rank's gradient divided by
    :math:`W` is its slice of the global gradient, for unequal batch sizes too; with
    ``"sinkhorn"`` the Sinkhorn sums run over the masked patches of all ranks. A rank whose
    images have no masked patch, or that holds no image, returns 0 (with gradient) and takes
    part in the collectives. Without a process group it acts locally.

    Args:
        student_scores: the student head's outputs for the patch tokens of the masked view.
        teacher_scores: the teacher head's outputs for the same patches of the unmasked view
            (same shape); no gradient.
        masks: ``True`` where the student's patch was masked, a ``torch.bool`` tensor.
        center: the patch center :math:`c` (``DINOCenter.center``), required with
            ``"center"``, ``None`` with ``"sinkhorn"``; no gradient. Default: ``None``.
        student_temperature: :math:`\tau_s`. Default: ``0.1`` (``student_temp`` of
            ``iBOTPatchLoss``).
        teacher_temperature: :math:`\tau_t`, usually warmed up (DINOv2: 0.04 to 0.07 over 30
            epochs, :func:`sslosses.linear_warmup_schedule`). Default: ``0.07``
            (``teacher.teacher_temp`` of ``ssl_default_config.yaml``).
        centering: ``"center"`` or ``"sinkhorn"`` (DINOv2's ``train.centering``, default
            ``centering``). Default: ``"center"``.
        sinkhorn_iterations: the Sinkhorn-Knopp iterations with ``"sinkhorn"``. Default:
            ``3``.
        gather_distributed: scale each rank's loss by its share of the global batch (and with
            ``"sinkhorn"`` normalize over all ranks' masked patches). Default: ``False``.

    Shape:
        - student_scores, teacher_scores: :math:`(B, P, K)`, or :math:`(M, K)` masked rows.
        - masks: :math:`(B, P)`.
        - center: :math:`(K)` or :math:`(1, K)`.
        - output: :math:`()`.

    Returns:
        The loss in float32 (float64 if an input is float64).

    Raises:
        TypeError: if the scores are not floating-point tensors, ``masks`` is not a
            ``torch.bool`` tensor, or a hyperparameter has the wrong type.
        ValueError: if the scores are not 3-D or 2-D, differ in shape or device, have no
            output (``K = 0``), ``masks`` is not :math:`(B, P)` like the patch tokens or does
            not mark :math:`M` patches for :math:`(M, K)` rows, there is no image (with
            ``gather_distributed`` and :math:`W > 1`: in the global batch, raised on every
            rank together), ``center`` is wrong for ``centering`` (see
            :func:`sslosses.functional.dino_loss`), or a temperature or
            ``sinkhorn_iterations`` is not positive.

    Examples:
        >>> import torch
        >>> from sslosses.functional import ibot_patch_loss
        >>> student = torch.randn(4, 9, 32, requires_grad=True)  # 4 images, 3x3 patches
        >>> teacher = torch.randn(4, 9, 32)
        >>> masks = torch.rand(4, 9) < 0.4
        >>> loss = ibot_patch_loss(student, teacher, masks, center=torch.zeros(32))
        >>> loss.backward()
        >>> bool((student.grad[~masks] == 0).all())  # unmasked patches do not enter
        True
        >>> rows = ibot_patch_loss(student[masks], teacher[masks], masks, center=torch.zeros(32))
        >>> bool(torch.allclose(rows, loss))  # the masked-rows layout
        True
        >>> ibot_patch_loss(student, teacher, masks, centering="sinkhorn").shape
        torch.Size([])

    References:
        Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022,
        arXiv:2111.07832. Oquab et al., "DINOv2: Learning Robust Visual Features without
        Supervision", TMLR 2024, arXiv:2304.07193. Official code: facebookresearch/dinov2,
        ``dinov2/loss/ibot_patch_loss.py`` (``iBOTPatchLoss``) and
        ``dinov2/train/ssl_meta_arch.py``.
    """
    gather_distributed = _collectives.check_gather_distributed(gather_distributed)
    student = check_tensor("student_scores", student_scores)
    teacher = check_tensor("teacher_scores", teacher_scores)
    if student.dim() not in (2, 3):
        raise ValueError(
            "student_scores must be patch tokens (B, P, K) or masked rows (M, K), got "
            f"{student.dim()}-D with shape {tuple(student.shape)}"
        )
    check_same_shape("student_scores", student, "teacher_scores", teacher)
    check_same_device("student_scores", student, "teacher_scores", teacher)
    if student.shape[-1] == 0:
        raise ValueError(
            f"student_scores must have at least 1 output (K, the last dim), got shape "
            f"{tuple(student.shape)}"
        )
    masks = _check_masks(masks, student)
    check_min_batch("masks", masks, _collectives.local_minimum(gather_distributed, 1))
    mode, center, sinkhorn_iterations = check_centering(
        centering, center, sinkhorn_iterations, student
    )
    student_temperature = check_positive("student_temperature", student_temperature)
    teacher_temperature = check_positive("teacher_temperature", teacher_temperature)
    n_images = masks.shape[0]
    layout = _collectives.global_layout(gather_distributed, n_images, masks.device, name="masks")
    images_weight = _collectives.mean_weight(n_images, layout)  # the mean over images

    dtype = compute_dtype(student, teacher, *([] if center is None else [center]))
    k = student.shape[-1]
    with no_autocast(student):
        # each masked patch weighs 1 / (its image's masked count, at least 1)
        per_image = 1 / masks.sum(dim=1).clamp(min=1).to(dtype)  # (B,)
        if student.dim() == 3:
            weights = (masks.to(dtype) * per_image[:, None]).reshape(-1)  # (B P,)
            samples: Tensor | None = masks.reshape(-1)  # (B P,)
        else:
            weights = per_image[:, None].expand(masks.shape)[masks]  # (M,)
            samples = None
        return (
            _weighted_cross_entropy(
                student.reshape(-1, k),
                teacher.reshape(-1, k),
                weights,
                samples,
                centering=mode,
                center=center,
                student_temperature=student_temperature,
                teacher_temperature=teacher_temperature,
                sinkhorn_iterations=sinkhorn_iterations,
                gather_distributed=gather_distributed,
                dtype=dtype,
            )
            * images_weight
        )


def _weighted_cross_entropy(
    student: Tensor,
    teacher: Tensor,
    weights: Tensor,
    samples: Tensor | None,
    *,
    centering: Centering,
    center: Tensor | None,
    student_temperature: float,
    teacher_temperature: float,
    sinkhorn_iterations: int,
    gather_distributed: bool,
    dtype: torch.dtype,
) -> Tensor:
    """``sum_r w_r * CE(target_r, student_r)`` over ``(R, K)`` rows (the one path of the math).

    ``samples`` marks the rows that take part (``None``: all); the others have weight 0 and
    are left out of the Sinkhorn sums and of the loss (their targets are zeroed, so neither a
    meaningless nor a ``nan`` target reaches the sum).
    """
    with torch.no_grad():
        targets = teacher_targets(
            upcast(teacher.detach(), dtype),
            centering=centering,
            center=center,
            temperature=teacher_temperature,
            iterations=sinkhorn_iterations,
            gather_distributed=gather_distributed,
            samples=samples,
        )  # (R, K)
        if samples is not None:
            targets = torch.where(samples[:, None], targets, 0.0)
        weighted = targets * weights[:, None]  # (R, K)
    log_probs = F.log_softmax(upcast(student, dtype) / student_temperature, dim=1)  # (R, K)
    return -torch.dot(weighted.reshape(-1), log_probs.reshape(-1))


def _check_masks(masks: object, scores: Tensor) -> Tensor:
    if not isinstance(masks, Tensor):
        raise TypeError(
            f"masks must be a torch.Tensor of dtype torch.bool, got {type(masks).__name__}"
        )
    if masks.dtype != torch.bool:
        raise TypeError(
            f"masks must have dtype torch.bool (True where a patch is masked), got {masks.dtype}"
        )
    if masks.dim() != 2:
        raise ValueError(
            f"masks must be a 2-D tensor (B, P), got {masks.dim()}-D with shape "
            f"{tuple(masks.shape)}"
        )
    check_same_device("student_scores", scores, "masks", masks)
    if scores.dim() == 3:
        if masks.shape != scores.shape[:2]:
            raise ValueError(
                "masks must have shape (B, P) like the patch tokens (B, P, K), got "
                f"{tuple(masks.shape)} and scores of shape {tuple(scores.shape)}"
            )
        return masks
    n_masked = int(masks.sum())
    if n_masked != scores.shape[0]:
        raise ValueError(
            "student_scores given as masked rows (M, K) must have one row per masked patch, "
            f"got M={scores.shape[0]} rows and masks marking {n_masked} patches"
        )
    return masks


class IBOTPatchLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.ibot_patch_loss`.

    The patch center is explicit state of a separate component (a :class:`sslosses.DINOCenter`
    updated with the teacher's patch tokens), passed to :meth:`forward` with
    ``centering="center"``; the teacher temperature may be given per call (for a warm-up
    schedule) and otherwise is the module's.

    Args:
        student_temperature: :math:`\tau_s`. Default: ``0.1``.
        teacher_temperature: :math:`\tau_t` when :meth:`forward` is not given one.
            Default: ``0.07``.
        centering: ``"center"`` (pass ``center`` to :meth:`forward`) or ``"sinkhorn"``.
            Default: ``"center"``.
        sinkhorn_iterations: the Sinkhorn-Knopp iterations with ``"sinkhorn"``.
            Default: ``3``.
        gather_distributed: scale each rank's loss by its share of the global batch.
            Default: ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import IBOTPatchLoss
        >>> criterion = IBOTPatchLoss(centering="sinkhorn")
        >>> criterion
        IBOTPatchLoss(student_temperature=0.1, teacher_temperature=0.07, centering='sinkhorn',
                      sinkhorn_iterations=3, gather_distributed=False)
        >>> masks = torch.rand(4, 9) < 0.4
        >>> criterion(torch.randn(4, 9, 32), torch.randn(4, 9, 32), masks).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        centering: Centering = "center",
        sinkhorn_iterations: int = 3,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.student_temperature = check_positive("student_temperature", student_temperature)
        self.teacher_temperature = check_positive("teacher_temperature", teacher_temperature)
        self.centering: Centering = check_choice("centering", centering, get_args(Centering))
        self.sinkhorn_iterations = check_positive_int("sinkhorn_iterations", sinkhorn_iterations)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)

    def forward(
        self,
        student_scores: Tensor,
        teacher_scores: Tensor,
        masks: Tensor,
        *,
        center: Tensor | None = None,
        teacher_temperature: float | None = None,
    ) -> Tensor:
        return ibot_patch_loss(
            student_scores,
            teacher_scores,
            masks,
            center=center,
            student_temperature=self.student_temperature,
            teacher_temperature=(
                self.teacher_temperature if teacher_temperature is None else teacher_temperature
            ),
            centering=self.centering,
            sinkhorn_iterations=self.sinkhorn_iterations,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return options_repr(self)
