r"""DINO: self-distillation with no labels (loss, centering).

DINO's head, ``DINOHead``, is defined with the other heads in ``sslosses/heads.py``; it is
re-exported here and is public as ``sslosses.DINOHead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._teacher import check_centering, options_repr, teacher_targets
from sslosses._validation import (
    check_choice,
    check_crops,
    check_positive,
    check_positive_int,
    check_real,
    check_same_device,
    check_tensor,
)
from sslosses.heads import DINOHead
from sslosses.typing import Centering

__all__ = ["DINOCenter", "DINOHead", "DINOLoss", "dino_loss"]


def dino_loss(
    student_scores: Sequence[Tensor],
    teacher_scores: Sequence[Tensor],
    *,
    center: Tensor | None = None,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    centering: Centering = "center",
    sinkhorn_iterations: int = 3,
    gather_distributed: bool = False,
) -> Tensor:
    r"""DINO loss: the student's crops predict the centered, sharpened teacher's global crops.

    The teacher's targets for its :math:`G` global crops are
    :math:`P^{g} = \operatorname{softmax}((T^{g} - c) / \tau_t)` (row-wise, no gradient;
    ``centering="center"``, the default; for ``"sinkhorn"`` see below), the
    student's log-probabilities for its :math:`V` crops are
    :math:`\log \operatorname{softmax}(S^{v} / \tau_s)`, and the loss averages the
    cross-entropy over every pair of a teacher crop and a student crop of a *different* view
    (student crop :math:`g < G` is the same view as teacher crop :math:`g`):

    .. math::
        \mathcal{L} = \frac{1}{G (V - 1)} \sum_{g=1}^{G} \sum_{v \neq g}
            \frac{1}{N} \sum_{n=1}^{N} \left( -\sum_{k=1}^{K} P^{g}_{nk}
            \log \operatorname{softmax}_k\!\left(\frac{S^{v}_{n}}{\tau_s}\right) \right)

    This reproduces ``DINOLoss.forward`` of the official code (without its center update,
    which here is an explicit step of :class:`sslosses.DINOCenter`). The original recomputes
    the student's log-softmax for every (teacher, student) pair; here each crop's
    log-softmax is computed once and met by the sum of the targets it is paired with,
    :math:`\sum_{g \neq v} P^{g}`, which gives the same value with :math:`V` instead of
    :math:`G (V - 1)` products of size :math:`N \times K`. Half-precision inputs (or autocast)
    are computed in float32; float64 stays float64.

    **Sinkhorn-Knopp centering** (``centering="sinkhorn"``, DINOv2's
    ``train.centering: sinkhorn_knopp``): the targets are instead the Sinkhorn-Knopp
    normalization of :math:`\exp(T / \tau_t)` over the rows of *all* :math:`G` global crops
    together (:math:`T` the :math:`G N \times K` concatenation, as the teacher's outputs of
    both global crops are one batch in DINOv2's ``SSLMetaArch``), with ``sinkhorn_iterations``
    rounds of normalizing every output to total mass :math:`1/K` and every row to :math:`1/(G
    N)`, each row summing to 1 at the end. This equals ``DINOLoss.sinkhorn_knopp_teacher`` of
    facebookresearch/dinov2 (``dinov2/loss/dino_clstoken_loss.py``) and is computed by the
    stabilized iteration of :func:`sslosses.functional.sinkhorn` with
    :math:`\varepsilon = \tau_t`: the original exponentiates :math:`T / \tau_t` directly,
    which overflows to ``inf`` (then ``nan``) once it exceeds about 88 in float32 (scores of 4
    at :math:`\tau_t = 0.04`), while every normalization here is a log-sum-exp with its maximum
    subtracted, finite for any finite scores; wherever the original is finite both agree to
    rounding (tested in float64). No center is used (``center`` must be ``None``): the result
    is invariant to a constant added per output.

    With ``gather_distributed=True`` and a process group of size :math:`W > 1`, rank :math:`r`
    returns :math:`W N_r / N` times its local loss (:math:`N = \sum_r N_r`), so the mean over
    ranks is the loss on the global batch and each rank's gradient divided by :math:`W`
    (DDP's averaging) is its slice of the global gradient, also for unequal batch sizes. With
    equal batch sizes (the official setting) the factor is 1; a rank with no rows returns 0
    (with gradient). With ``"center"`` the loss needs no other communication than the
    exchange of batch sizes: the center, the only statistic over the batch, comes from
    :class:`sslosses.DINOCenter`. With ``"sinkhorn"`` the per-output sums run over the rows of
    all ranks (the global batch, as the original's all-reduces, here exact also for unequal
    batch sizes), so each rank's targets are its slice of the targets of the global batch.
    Without a process group it acts locally.

    Args:
        student_scores: ``V >= 2`` tensors, the student head's outputs for all crops, the
            :math:`G` global crops first, in the teacher's order.
        teacher_scores: ``G >= 1`` tensors, the teacher head's outputs for the global crops
            (``G <= V``). They get no gradient.
        center: the center :math:`c` subtracted from the teacher's scores
            (``DINOCenter.center``); no gradient. Required with ``centering="center"``,
            ``None`` with ``"sinkhorn"``. Default: ``None``.
        student_temperature: :math:`\tau_s`. Default: ``0.1`` (``--student_temp`` of the
            official ``main_dino.py``, paper Sec. 3.1).
        teacher_temperature: :math:`\tau_t`, usually from
            :func:`sslosses.linear_warmup_schedule`. Default: ``0.04`` (``--teacher_temp`` of
            ``main_dino.py``).
        centering: ``"center"`` (subtract ``center``, then softmax) or ``"sinkhorn"``
            (Sinkhorn-Knopp over the global crops' rows, DINOv2). Default: ``"center"``.
        sinkhorn_iterations: the Sinkhorn-Knopp iterations with ``"sinkhorn"``
            (``n_iterations`` of the original). Default: ``3``.
        gather_distributed: scale each rank's loss by its share of the global batch as
            described above (and with ``"sinkhorn"`` normalize over all ranks' rows).
            Default: ``False``.

    Shape:
        - student_scores: a sequence of :math:`V` tensors :math:`(N, K)`.
        - teacher_scores: a sequence of :math:`G` tensors :math:`(N, K)`.
        - center: :math:`(K)` or :math:`(1, K)`.
        - output: :math:`()`.

    Returns:
        The loss in float32 (float64 if an input is float64).

    Raises:
        TypeError: if the scores are not lists or tuples of floating-point tensors, or a
            hyperparameter has the wrong type.
        ValueError: if there are fewer than 2 student crops, fewer student than teacher crops,
            the crops' shapes (``N`` or ``K``) or devices differ, the crops have no rows
            (with ``gather_distributed`` and :math:`W > 1`: the global batch has none, raised
            on every rank together; a rank may hold no rows), ``center`` does not have
            shape ``(K)`` or ``(1, K)``, is missing with ``centering="center"`` or given with
            ``"sinkhorn"``, ``centering`` is not one of those two, a temperature is not
            positive or ``sinkhorn_iterations`` is not.

    Examples:
        >>> import torch
        >>> from sslosses.functional import dino_loss
        >>> student = [torch.randn(8, 32, requires_grad=True) for _ in range(6)]  # 2 + 4 crops
        >>> teacher = [torch.randn(8, 32) for _ in range(2)]
        >>> loss = dino_loss(student, teacher, center=torch.zeros(32), teacher_temperature=0.04)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> loss.backward()
        >>> dino_loss(student, teacher, centering="sinkhorn", teacher_temperature=0.07).shape
        torch.Size([])

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
        arXiv:2104.14294. Official code: facebookresearch/dino, ``main_dino.py``
        (``DINOLoss``). Oquab et al., "DINOv2: Learning Robust Visual Features without
        Supervision", TMLR 2024, arXiv:2304.07193. Official code: facebookresearch/dinov2,
        ``dinov2/loss/dino_clstoken_loss.py`` (``DINOLoss.sinkhorn_knopp_teacher``).
    """
    gather_distributed = _collectives.check_gather_distributed(gather_distributed)
    rows = _collectives.local_minimum(gather_distributed, 1)
    student = check_crops("student_scores", student_scores, minimum=2, rows=rows)
    teacher = check_crops("teacher_scores", teacher_scores, minimum=1, rows=rows)
    n_student, n_teacher = len(student), len(teacher)
    if n_teacher > n_student:
        raise ValueError(
            "student_scores must hold at least as many crops as teacher_scores (the global "
            f"crops come first in both), got {n_student} student and {n_teacher} teacher crops"
        )
    if teacher[0].shape != student[0].shape:
        raise ValueError(
            "teacher_scores and student_scores must have the same shape (N, K), got "
            f"{tuple(teacher[0].shape)} and {tuple(student[0].shape)}"
        )
    check_same_device("student_scores[0]", student[0], "teacher_scores[0]", teacher[0])
    mode, center, sinkhorn_iterations = check_centering(
        centering, center, sinkhorn_iterations, student[0]
    )
    student_temperature = check_positive("student_temperature", student_temperature)
    teacher_temperature = check_positive("teacher_temperature", teacher_temperature)
    n = student[0].shape[0]
    layout = _collectives.global_layout(
        gather_distributed, n, student[0].device, name="student_scores[0]"
    )

    dtype = compute_dtype(*student, *teacher, *([] if center is None else [center]))
    with no_autocast(student[0]):
        with torch.no_grad():
            teacher_rows = torch.cat([upcast(t.detach(), dtype) for t in teacher])  # (G N, K)
            # Sinkhorn-Knopp normalizes over the G N rows of all global crops together
            targets = teacher_targets(
                teacher_rows,
                centering=mode,
                center=center,
                temperature=teacher_temperature,
                iterations=sinkhorn_iterations,
                gather_distributed=gather_distributed,
            )  # (G N, K)
            crops = list(targets.reshape(n_teacher, n, targets.shape[1]).unbind(0))  # G x (N, K)
            # the summed targets each student crop is paired with: every teacher crop but
            # the same view (student crop g < G is teacher crop g)
            partners = [_sum([p for g, p in enumerate(crops) if g != v]) for v in range(n_teacher)]
            if n_student > n_teacher:
                partners.append(_sum(crops))
        total = torch.zeros((), dtype=dtype, device=student[0].device)
        for v, s in enumerate(student):
            weights = partners[min(v, n_teacher)]  # (N, K)
            if weights is None:
                continue  # G = 1: the first student crop's only partner is its own view
            log_probs = F.log_softmax(upcast(s, dtype) / student_temperature, dim=1)  # (N, K)
            total = total - torch.dot(weights.reshape(-1), log_probs.reshape(-1))
        rows_weight = _collectives.mean_weight(n, layout)  # the mean over the N rows
        return total * (rows_weight / (n_teacher * (n_student - 1)))


def _sum(tensors: list[Tensor]) -> Tensor | None:
    """The sum of a few tensors (``None`` for none), added in order."""
    if not tensors:
        return None
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


def _check_momentum(momentum: object) -> float:
    # the project's number rule (any real but bool, NumPy scalars included) on [0, 1]
    return check_real("momentum", momentum, low=0.0, high=1.0)


class DINOLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.dino_loss`.

    The center is explicit state of a separate component (:class:`sslosses.DINOCenter`),
    passed to :meth:`forward`; the teacher temperature may be given per call (for a
    warm-up schedule) and otherwise is the module's.

    Args:
        student_temperature: :math:`\tau_s`. Default: ``0.1``.
        teacher_temperature: :math:`\tau_t` when :meth:`forward` is not given one.
            Default: ``0.04``.
        centering: ``"center"`` (pass ``center`` to :meth:`forward`) or ``"sinkhorn"``
            (Sinkhorn-Knopp targets, no center). Default: ``"center"``.
        sinkhorn_iterations: the Sinkhorn-Knopp iterations with ``"sinkhorn"``.
            Default: ``3``.
        gather_distributed: scale each rank's loss by its share of the global batch.
            Default: ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import DINOCenter, DINOLoss
        >>> criterion, centering = DINOLoss(), DINOCenter(32)
        >>> criterion
        DINOLoss(student_temperature=0.1, teacher_temperature=0.04, centering='center',
                 gather_distributed=False)
        >>> student = [torch.randn(8, 32) for _ in range(4)]
        >>> teacher = [torch.randn(8, 32) for _ in range(2)]
        >>> criterion(student, teacher, center=centering.center, teacher_temperature=0.07).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
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
        student_scores: Sequence[Tensor],
        teacher_scores: Sequence[Tensor],
        *,
        center: Tensor | None = None,
        teacher_temperature: float | None = None,
    ) -> Tensor:
        return dino_loss(
            student_scores,
            teacher_scores,
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


class DINOCenter(nn.Module):
    r"""DINO's center: an exponential moving average of the teacher's mean output.

    .. math::
        c \leftarrow m \, c + (1 - m) \, \frac{1}{G N} \sum_{g=1}^{G} \sum_{n=1}^{N} T^{g}_{n}

    ``center`` is a persistent buffer (saved in checkpoints), zero at the start as in the
    official code. It changes only through :meth:`update`, an explicit step after the loss,
    never inside a forward pass (the official ``DINOLoss`` updates it as a side effect of
    ``forward``):

    .. code-block:: python

        loss = criterion(student_scores, teacher_scores, center=centering.center)
        centering.update(teacher_scores)

    With ``gather_distributed=True`` and a process group of size :math:`W > 1`, the batch
    mean is the exact mean over all ranks' rows (sums and row counts are all-reduced, so
    unequal per-rank batch sizes are weighted correctly; the official code divides the summed
    rows by ``N * world_size``, which assumes equal sizes), and every rank holds the same
    center. Without a process group it acts locally.

    **Patch tokens** (iBOT's center, :func:`sslosses.functional.ibot_patch_loss`): one
    :math:`(B, P, K)` tensor is averaged over its :math:`P` patches per image first, then over
    the :math:`B` images, as ``iBOTPatchLoss.update_center`` of facebookresearch/dinov2
    (``dinov2/loss/ibot_patch_loss.py``: the sum over images of ``t.mean(1)``, divided by
    :math:`B W`; here exact for unequal per-rank batches too). DINOv2's training step passes
    only the masked patches there, as one image of :math:`M` rows (``(1, M, K)``), so its
    center follows the mean of the masked patches (per rank, then averaged over ranks);
    :meth:`update` of those rows as one :math:`(M, K)` tensor gives the mean over the masked
    patches of all ranks together, the same with equal per-rank counts.

    Args:
        dim: the number of outputs :math:`K` of the head.
        momentum: the EMA momentum :math:`m`. Default: ``0.9`` (``center_momentum`` of the
            official ``DINOLoss``).
        gather_distributed: average the teacher's outputs over all ranks. Default: ``False``.
        dtype: the dtype of ``center``. Default: ``torch.float32``.
        device: the device of ``center``. Default: ``None`` (the current default device).

    Shape:
        - center: :math:`(K)`.

    Raises:
        TypeError: if ``dim`` is not an ``int``, ``momentum`` not a real number,
            ``gather_distributed`` not a ``bool`` or ``dtype`` not floating-point.
        ValueError: if ``dim <= 0`` or ``momentum`` is outside :math:`[0, 1]`.

    Examples:
        >>> import torch
        >>> from sslosses import DINOCenter
        >>> centering = DINOCenter(4, momentum=0.9)
        >>> centering
        DINOCenter(dim=4, momentum=0.9, gather_distributed=False)
        >>> centering.update([torch.ones(2, 4), 3 * torch.ones(2, 4)])  # batch mean 2
        >>> centering.center
        tensor([0.2000, 0.2000, 0.2000, 0.2000])

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
        arXiv:2104.14294, Sec. 3.1 and Eq. (4). Official code: facebookresearch/dino,
        ``main_dino.py`` (``DINOLoss.update_center``).
    """

    center: Tensor

    def __init__(
        self,
        dim: int,
        *,
        momentum: float = 0.9,
        gather_distributed: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.momentum = _check_momentum(momentum)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        self.register_buffer("center", torch.zeros(self.dim, dtype=dtype, device=device))

    @torch.no_grad()
    def update(self, teacher_scores: Sequence[Tensor] | Tensor) -> None:
        """One EMA step of ``center`` towards the mean of the teacher's outputs.

        Args:
            teacher_scores: the teacher's outputs for the global crops, a list or tuple of
                :math:`(N, K)` tensors or one :math:`(M, K)` tensor (the crops concatenated);
                every row counts once. Or one :math:`(B, P, K)` tensor of patch tokens:
                every image counts once, with the mean of its :math:`P` patches.

        Raises:
            TypeError: if ``teacher_scores`` is not a tensor or a list or tuple of
                floating-point tensors.
            ValueError: if a tensor is not 2-D (3-D for one tensor of patches) with
                :math:`K` columns, a patch tensor has no patches, the crops differ in shape
                or device, they are on another device than ``center``, or they hold no rows
                (with ``gather_distributed`` and :math:`W > 1`: no rank holds any, raised on
                every rank together; a rank may hold none).
        """
        minimum = _collectives.local_minimum(self.gather_distributed, 1)
        if isinstance(teacher_scores, Tensor):
            rows = check_tensor("teacher_scores", teacher_scores)
            name = "teacher_scores"
            if rows.dim() == 3:
                if rows.shape[1] == 0:
                    raise ValueError(
                        f"{name} of patch tokens (B, P, K) must have at least 1 patch, got "
                        f"shape {tuple(rows.shape)}"
                    )
                dtype = compute_dtype(rows, self.center)
                with no_autocast(rows):
                    # every image counts once: the mean of its patches
                    rows = upcast(rows.detach(), dtype).mean(dim=1)  # (B, K)
            elif rows.dim() != 2:
                raise ValueError(
                    f"{name} must be a 2-D tensor (M, K) or a 3-D tensor of patch tokens "
                    f"(B, P, K), got {rows.dim()}-D with shape {tuple(rows.shape)}"
                )
            if rows.shape[0] < minimum:
                raise ValueError(f"{name} must have at least 1 row, got shape {tuple(rows.shape)}")
        else:
            crops = check_crops("teacher_scores", teacher_scores, minimum=1, rows=minimum)
            rows = torch.cat(crops) if len(crops) > 1 else crops[0]  # (G N, K)
            name = "teacher_scores[0]"
        if rows.shape[1] != self.dim:
            raise ValueError(
                f"{name} must have K={self.dim} columns like the center, got shape "
                f"{tuple(rows.shape)}"
            )
        check_same_device(name, rows, "center", self.center)
        dtype = compute_dtype(rows, self.center)
        with no_autocast(rows):
            batch_sum = upcast(rows.detach(), dtype).sum(dim=0)  # (K,)
            count = rows.shape[0]
            layout = _collectives.global_layout(
                self.gather_distributed, count, rows.device, name=name
            )
            if layout is not None:
                batch_sum = _collectives.all_reduce_(batch_sum, "sum")
                count = layout.total
            batch_center = batch_sum / count  # (K,)
            new = self.center.to(dtype) * self.momentum + batch_center * (1 - self.momentum)
            self.center.copy_(new)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, momentum={self.momentum}, "
            f"gather_distributed={self.gather_distributed}"
        )
