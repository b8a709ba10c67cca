"""SwAV: swapped prediction of Sinkhorn codes over multi-crop views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_crops,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    is_integer,
)
from sslosses.sinkhorn import _sinkhorn

__all__ = ["SwAVLoss", "swav_loss"]


def swav_loss(
    scores: Sequence[Tensor],
    *,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    assign_crops: Sequence[int] = (0, 1),
    queue_scores: Sequence[Tensor] | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    r"""SwAV loss: predict the Sinkhorn code of one crop from the scores of every other crop.

    For each assignment crop :math:`a \in A` (``assign_crops``) the codes
    :math:`Q^{a} = \mathrm{sinkhorn}(S^{a})` are computed without gradient (see
    :func:`sslosses.functional.sinkhorn`), and every other crop :math:`v \neq a` predicts them
    with a softmax over its prototype scores at temperature :math:`\tau`:

    .. math::
        \mathcal{L} = \frac{1}{|A|} \sum_{a \in A} \frac{1}{V - 1} \sum_{v \neq a}
            \frac{1}{N} \sum_{n=1}^{N} \left( -\sum_{k=1}^{K} Q^{a}_{nk}
            \log \operatorname{softmax}_k\!\left(\frac{S^{v}_{n}}{\tau}\right) \right)

    With ``queue_scores``, the scores of queued features for assignment crop
    ``assign_crops[i]`` (``(Q_i, K)``, i.e. ``queue_features @ prototypes.T`` under the
    current prototypes) are prepended to that crop's batch scores before Sinkhorn, and only
    the batch's last :math:`N` rows of the codes are kept, so the equipartition runs over
    :math:`Q_i + N` samples. The queue scores carry no gradient.

    This reproduces the swapped-prediction loop of ``train()`` in the official SwAV code,
    including its queue, except that the Sinkhorn step is stabilized (a log-sum-exp first
    step; finite where the original's ``exp(scores / epsilon)`` overflows, identical
    elsewhere). The
    official code concatenates the crops into one ``output`` tensor; here ``scores[v]`` is
    crop ``v``'s ``(N, K)`` slice. Half-precision inputs (or autocast) are computed in float32;
    float64 stays float64.

    With ``gather_distributed=True`` and a process group of size :math:`W > 1`, the Sinkhorn
    prototype marginals are normalized over all ranks (as ``distributed_sinkhorn``), while the
    cross-entropy is per sample. The global problem is defined as the single-process loss on
    the concatenation of all ranks' batches, whose Sinkhorn for crop ``assign_crops[i]`` runs
    over all ranks' queue rows ``queue_scores[i]`` and all ranks' batch rows (each rank keeps
    its own queue, as in the official code; the row order does not matter to Sinkhorn). Each
    rank returns :math:`W N_r / N` times the mean over its :math:`N_r` samples, where
    :math:`N = \sum_r N_r`, so the mean over ranks equals that global loss and each rank's
    gradient divided by :math:`W` (DDP's averaging) is its slice of the global gradient. With
    equal batch sizes (the official setting) the scale is 1 and each rank returns its local
    mean, exactly as the official code. Ranks may have different batch sizes and queue
    lengths; a rank without rows returns 0 (the global batch needs a row, else every rank
    raises the same error). Without a process group it acts locally.

    Args:
        scores: ``V >= 2`` tensors, ``scores[v]`` the prototype scores of crop ``v``
            (``normalize(z_v) @ prototypes.T``).
        temperature: softmax temperature :math:`\tau` of the prediction. Default: ``0.1``.
        epsilon: Sinkhorn regularization :math:`\varepsilon`. Default: ``0.05``.
        sinkhorn_iterations: number of Sinkhorn iterations. Default: ``3``.
        assign_crops: indices of the crops whose codes are predicted (SwAV's
            ``--crops_for_assign``), distinct and in ``[0, V)``. Default: ``(0, 1)``.
        queue_scores: ``None`` or one tensor per assignment crop, in the order of
            ``assign_crops``: the scores of that crop's queued features. Default: ``None``.
        gather_distributed: normalize the Sinkhorn marginals over all ranks and scale as
            described above. Default: ``False``.

    Shape:
        - scores: a sequence of :math:`V` tensors :math:`(N, K)`.
        - queue_scores: a sequence of :math:`|A|` tensors :math:`(Q_i, K)` (:math:`Q_i \ge 0`).
        - output: :math:`()`.

    Returns:
        The loss in float32 (float64 if an input is float64).

    Raises:
        TypeError: if ``scores`` or ``queue_scores`` is not a list or tuple of floating-point
            tensors, or a hyperparameter has the wrong type.
        ValueError: if there are fewer than 2 crops, the crops' shapes or devices differ, a
            tensor is not 2-D, the (global) batch is empty, ``assign_crops`` is empty, out of
            range or has duplicates, ``queue_scores`` has a different length than
            ``assign_crops`` or a different number of prototypes, or ``temperature``,
            ``epsilon`` or ``sinkhorn_iterations`` is not positive.

    Examples:
        >>> import torch
        >>> from sslosses.functional import swav_loss
        >>> prototypes = torch.nn.functional.normalize(torch.randn(30, 16), dim=1)
        >>> z = [torch.randn(8, 16, requires_grad=True) for _ in range(4)]  # 2 large + 2 small
        >>> scores = [torch.nn.functional.normalize(zv, dim=1) @ prototypes.T for zv in z]
        >>> loss = swav_loss(scores, temperature=0.1, assign_crops=(0, 1))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> loss.backward()
        >>> queue = torch.nn.functional.normalize(torch.randn(2, 64, 16), dim=-1)  # 64 per crop
        >>> queue_scores = [queue[0] @ prototypes.T, queue[1] @ prototypes.T]
        >>> swav_loss(scores, queue_scores=queue_scores).shape
        torch.Size([])

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882. Official code: facebookresearch/swav,
        ``main_swav.py`` (``train`` and ``distributed_sinkhorn``).
    """
    gather_distributed = _collectives.check_gather_distributed(gather_distributed)
    crops = check_crops(
        "scores",
        scores,
        minimum=2,
        rows=_collectives.local_minimum(gather_distributed, 1),
        column="prototype (column)",
    )
    n_crops = len(crops)
    assign = _check_assign_crops(assign_crops, n_crops)
    queue = _check_queue_scores(queue_scores, assign, crops[0])
    temperature = check_positive("temperature", temperature)
    epsilon = check_positive("epsilon", epsilon)
    sinkhorn_iterations = check_positive_int("sinkhorn_iterations", sinkhorn_iterations)
    n = crops[0].shape[0]
    layout = _collectives.global_layout(gather_distributed, n, crops[0].device, name="scores[0]")
    rows_weight = _collectives.mean_weight(n, layout)  # the mean over the N rows

    dtype = compute_dtype(*crops, *queue)
    with no_autocast(crops[0]):
        # the crops that predict some other crop's codes (all but the lone assignment crop)
        predicting = [v for v in range(n_crops) if any(a != v for a in assign)]
        log_probs = {
            v: F.log_softmax(upcast(crops[v], dtype) / temperature, dim=1) for v in predicting
        }  # (N, K) each
        codes = []
        for i, a in enumerate(assign):
            to_assign = upcast(crops[a].detach(), dtype)  # (N, K)
            if queue:
                to_assign = torch.cat([upcast(queue[i].detach(), dtype), to_assign])  # (Q+N, K)
            q = _sinkhorn(to_assign, epsilon, sinkhorn_iterations, gather_distributed)
            codes.append(q[q.shape[0] - n :])  # (N, K): the batch's rows (none if N = 0)
        # Every crop v predicts the codes of every assignment crop a != v:
        #   sum_a sum_{v != a} <Q_a, log p_v> = <sum_a Q_a, sum_v log p_v> - sum_a <Q_a, log p_a>,
        # one product per crop instead of one per (a, v) pair (14 for 2 + 6 crops); a crop
        # that predicts nothing (the lone assignment crop) would enter both terms and cancel
        all_codes, all_log_probs = _total(codes), _total(list(log_probs.values()))  # (N, K)
        cross_entropy = -(all_codes * all_log_probs).sum()
        for q, a in zip(codes, assign, strict=True):
            if a in log_probs:
                cross_entropy = cross_entropy + (q * log_probs[a]).sum()
        return cross_entropy * (rows_weight / ((n_crops - 1) * len(assign)))


def _total(tensors: list[Tensor]) -> Tensor:
    """The sum of equally shaped tensors, accumulated in one new buffer (no stacked copy)."""
    total = tensors[0].clone() if len(tensors) == 1 else tensors[0] + tensors[1]
    for tensor in tensors[2:]:
        total = total.add_(tensor)  # in place is safe: addition saves nothing for backward
    return total


def _check_assign_crops(assign_crops: object, n_crops: int | None = None) -> tuple[int, ...]:
    if not isinstance(assign_crops, (list, tuple)):
        raise TypeError(
            f"assign_crops must be a list or tuple of ints, got {type(assign_crops).__name__}"
        )
    if len(assign_crops) == 0:
        raise ValueError("assign_crops must list at least one crop index, got an empty sequence")
    crops: list[int] = []
    for c in assign_crops:
        if not is_integer(c):
            raise TypeError(
                f"assign_crops must hold ints, got {type(c).__name__} in {tuple(assign_crops)}"
            )
        index = int(c)
        if index < 0 or (n_crops is not None and index >= n_crops):
            bound = "" if n_crops is None else f" and < {n_crops} (the number of crops)"
            raise ValueError(f"assign_crops must hold indices >= 0{bound}, got {c}")
        crops.append(index)
    if len(set(crops)) != len(crops):
        raise ValueError(f"assign_crops must not repeat a crop, got {tuple(crops)}")
    return tuple(crops)


def _check_queue_scores(
    queue_scores: object, assign: tuple[int, ...], reference: Tensor
) -> list[Tensor]:
    if queue_scores is None:
        return []
    if not isinstance(queue_scores, (list, tuple)):
        raise TypeError(
            "queue_scores must be None or a list or tuple of (Q, K) tensors, "
            f"got {type(queue_scores).__name__}"
        )
    if len(queue_scores) != len(assign):
        raise ValueError(
            "queue_scores must hold one tensor per assignment crop: expected "
            f"{len(assign)} for assign_crops={assign}, got {len(queue_scores)}"
        )
    out = []
    for i, q in enumerate(queue_scores):
        name = f"queue_scores[{i}]"
        q = check_tensor(name, q, ndim=2)
        if q.shape[1] != reference.shape[1]:
            raise ValueError(
                f"{name} must have K={reference.shape[1]} prototypes (columns) like scores, "
                f"got shape {tuple(q.shape)}"
            )
        check_same_device("scores[0]", reference, name, q)
        out.append(q)
    return out


class SwAVLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.swav_loss`.

    The prototypes and the queue are separate components
    (:class:`sslosses.SwAVPrototypes`, :class:`sslosses.MoCoQueue`); pass their scores to
    :meth:`forward`.

    Args:
        temperature: softmax temperature of the prediction. Default: ``0.1``.
        epsilon: Sinkhorn regularization. Default: ``0.05``.
        sinkhorn_iterations: number of Sinkhorn iterations. Default: ``3``.
        assign_crops: indices of the crops whose codes are predicted. Default: ``(0, 1)``.
        gather_distributed: normalize the Sinkhorn marginals over all ranks. Default:
            ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import SwAVLoss
        >>> criterion = SwAVLoss(temperature=0.1)
        >>> criterion
        SwAVLoss(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, assign_crops=(0, 1), gather_distributed=False)
        >>> criterion([torch.randn(8, 30), torch.randn(8, 30)]).shape
        torch.Size([])
    """  # noqa: E501

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        assign_crops: Sequence[int] = (0, 1),
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.epsilon = check_positive("epsilon", epsilon)
        self.sinkhorn_iterations = check_positive_int("sinkhorn_iterations", sinkhorn_iterations)
        self.assign_crops = _check_assign_crops(assign_crops)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)

    def forward(
        self, scores: Sequence[Tensor], *, queue_scores: Sequence[Tensor] | None = None
    ) -> Tensor:
        """The loss of the ``V`` crops' ``scores`` (assignment crops first).

        ``queue_scores`` is keyword-only: lightly's call shape ``loss(high_res, low_res)``
        raises a :class:`TypeError` here instead of taking the low-resolution crops as queue
        scores; write it ``loss([*high_res, *low_res])``.
        """
        return swav_loss(
            scores,
            temperature=self.temperature,
            epsilon=self.epsilon,
            sinkhorn_iterations=self.sinkhorn_iterations,
            assign_crops=self.assign_crops,
            queue_scores=queue_scores,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, "
            f"sinkhorn_iterations={self.sinkhorn_iterations}, "
            f"assign_crops={self.assign_crops}, gather_distributed={self.gather_distributed}"
        )
