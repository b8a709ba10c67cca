r"""Schedules of per-step hyperparameters: pure functions of the step returning a Python float.

:func:`cosine_schedule` is BYOL's target momentum schedule (used by :class:`sslosses.EMA`) and
:func:`linear_warmup_schedule` DINO's teacher-temperature warm-up; both serve any per-step
hyperparameter. Both are public as ``sslosses.cosine_schedule`` and
``sslosses.linear_warmup_schedule``.
"""

from __future__ import annotations

import math

from sslosses._validation import check_non_negative_int, check_positive_int, check_real

__all__ = ["cosine_schedule", "linear_warmup_schedule"]


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    r"""A cosine ramp from ``start`` (at step 0) to ``end`` (at ``total_steps`` and after).

    .. math::
        v_k = \text{end} - (\text{end} - \text{start})
              \, \frac{\cos(\pi k / K) + 1}{2}, \qquad 0 \le k \le K,

    and :math:`v_k = \text{end}` for :math:`k > K` (clamped). With ``start = tau_base`` and
    ``end = 1`` this is BYOL's target decay rate
    :math:`\tau_k = 1 - (1 - \tau_\text{base}) (\cos(\pi k / K) + 1) / 2`, written in the same
    order of operations, so the values agree bit for bit. The update with index ``k``
    (0-based) uses :math:`v_k`: the last of ``K`` updates uses :math:`v_{K-1}`, just short of
    ``end``, as in BYOL. ``start > end`` gives a decreasing ramp. A pure function: use it for
    any per-step hyperparameter (EMA momentum, teacher temperature, weight decay).

    Args:
        step: the current step :math:`k \ge 0`.
        total_steps: the length :math:`K > 0` of the ramp.
        start: the value at step 0.
        end: the value at ``total_steps`` and every later step.

    Returns:
        The value as a Python ``float``.

    Raises:
        TypeError: if ``step`` or ``total_steps`` is not an integer (any integral number but
            ``bool``, NumPy's included) or ``start``/``end`` is not a real number.
        ValueError: if ``step < 0``, ``total_steps <= 0`` or ``start``/``end`` is not finite.

    Examples:
        >>> from sslosses import cosine_schedule
        >>> cosine_schedule(0, 100, 0.996, 1.0)
        0.996
        >>> cosine_schedule(50, 100, 0.996, 1.0)
        0.998
        >>> cosine_schedule(100, 100, 0.996, 1.0), cosine_schedule(150, 100, 0.996, 1.0)
        (1.0, 1.0)

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733, Sec. 3.2.
        Official code: google-deepmind/deepmind-research, ``byol/utils/schedules.py``
        (``target_ema``).
    """
    step = check_non_negative_int("step", step)
    total_steps = check_positive_int("total_steps", total_steps)
    start = check_real("start", start)
    end = check_real("end", end)
    if step >= total_steps:
        return end
    return end - (end - start) * (math.cos(math.pi * step / total_steps) + 1) / 2


def linear_warmup_schedule(step: int, warmup_steps: int, start: float, end: float) -> float:
    r"""A linear ramp from ``start`` to ``end`` over ``warmup_steps`` steps, then ``end``.

    .. math::
        v_k = \text{start} + k \, \frac{\text{end} - \text{start}}{W - 1}
              \quad (0 \le k < W - 1), \qquad v_k = \text{end} \quad (k \ge W - 1),

    with :math:`W` = ``warmup_steps``. This is DINO's teacher-temperature schedule,
    ``np.concatenate((np.linspace(start, end, W), np.ones(total - W) * end))`` indexed at
    ``k``, computed in the same order of operations as :func:`numpy.linspace`, so the values
    agree bit for bit: the ramp reaches ``end`` at its last step ``W - 1``; ``W = 1`` gives
    ``start`` at step 0 (a one-point ``linspace``) and ``W = 0`` gives ``end`` everywhere.
    The steps may be epochs (as in the official code, ``--warmup_teacher_temp_epochs``) or
    iterations.

    Args:
        step: the current step :math:`k \ge 0`.
        warmup_steps: the length :math:`W \ge 0` of the ramp.
        start: the value at step 0 (``--warmup_teacher_temp``, 0.04 in the official code).
        end: the value at step :math:`W - 1` and after (``--teacher_temp``).

    Returns:
        The value as a Python ``float``.

    Raises:
        TypeError: if ``step`` or ``warmup_steps`` is not an ``int`` or ``start``/``end`` is
            not a real number.
        ValueError: if ``step < 0``, ``warmup_steps < 0`` or ``start``/``end`` is not finite.

    Examples:
        >>> from sslosses import linear_warmup_schedule
        >>> [round(linear_warmup_schedule(k, 4, 0.04, 0.07), 6) for k in range(6)]
        [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
        arXiv:2104.14294. Official code: facebookresearch/dino, ``main_dino.py``
        (``DINOLoss.teacher_temp_schedule``).
    """
    step = check_non_negative_int("step", step)
    warmup_steps = check_non_negative_int("warmup_steps", warmup_steps)
    start = check_real("start", start)
    end = check_real("end", end)
    if warmup_steps == 1 and step == 0:
        return start
    if step >= warmup_steps - 1:
        return end
    # numpy.linspace: arange(num) * (delta / div) + start, or (k / div) * delta if the step is 0
    div = warmup_steps - 1
    delta = end - start
    increment = delta / div
    if increment == 0:
        return step / div * delta + start
    return step * increment + start
