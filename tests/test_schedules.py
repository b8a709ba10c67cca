"""Schedules: ``cosine_schedule`` (BYOL's target momentum) and ``linear_warmup_schedule`` (DINO's
teacher temperature): the originals' formulas bit for bit, properties, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sslosses
import sslosses.ema
from sslosses.schedules import cosine_schedule, linear_warmup_schedule


def test_defined_once_and_exported_where_they_were() -> None:
    for fn in (cosine_schedule, linear_warmup_schedule):
        assert fn.__module__ == "sslosses.schedules"
    assert sslosses.cosine_schedule is cosine_schedule
    assert sslosses.linear_warmup_schedule is linear_warmup_schedule
    assert sslosses.ema.cosine_schedule is cosine_schedule
    assert sslosses.ema.linear_warmup_schedule is linear_warmup_schedule


def _byol_tau(k: int, K: int, base: float) -> float:
    # BYOL, byol/utils/schedules.py target_ema: 1 - (1 - base) * (cos(pi * k / K) + 1) / 2
    return 1 - (1 - base) * (math.cos(math.pi * k / K) + 1) / 2


# ------------------------------------------------------------------------------ cosine_schedule
@pytest.mark.parametrize("base", [0.99, 0.996, 0.9])
def test_cosine_schedule_matches_byol_formula(base: float) -> None:
    K = 1000
    for k in (0, 1, 250, 500, 999, 1000):
        assert cosine_schedule(k, K, base, 1.0) == _byol_tau(k, K, base)
    assert cosine_schedule(0, K, base, 1.0) == base
    assert cosine_schedule(K, K, base, 1.0) == 1.0
    assert math.isclose(cosine_schedule(K // 2, K, base, 1.0), (1 + base) / 2, rel_tol=1e-15)


@given(
    k=st.integers(0, 10_000),
    K=st.integers(1, 10_000),
    start=st.floats(-10, 10),
    end=st.floats(-10, 10),
)
def test_cosine_schedule_properties(k: int, K: int, start: float, end: float) -> None:
    v = cosine_schedule(k, K, start, end)
    assert type(v) is float
    lo, hi = min(start, end), max(start, end)
    assert lo - 1e-12 <= v <= hi + 1e-12
    if k >= K:
        assert v == end  # clamped after the ramp
    else:
        expected = end - (end - start) * (math.cos(math.pi * k / K) + 1) / 2
        assert v == expected
    # monotone in k, towards end
    v_next = cosine_schedule(k + 1, K, start, end)
    direction = math.copysign(1.0, end - start)
    assert (v_next - v) * direction >= -1e-13


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((-1, 10, 0.9, 1.0), ValueError, r"step must be an int >= 0, got -1"),
        ((1.5, 10, 0.9, 1.0), TypeError, r"step must be an int, got float"),
        ((True, 10, 0.9, 1.0), TypeError, r"step must be an int, got bool"),
        ((0, 0, 0.9, 1.0), ValueError, r"total_steps must be an int > 0, got 0"),
        ((0, -5, 0.9, 1.0), ValueError, r"total_steps must be an int > 0, got -5"),
        ((0, 10.0, 0.9, 1.0), TypeError, r"total_steps must be an int, got float"),
        ((0, 10, math.nan, 1.0), ValueError, r"start must be a finite number, got nan"),
        ((0, 10, 0.9, math.inf), ValueError, r"end must be a finite number, got inf"),
        ((0, 10, "0.9", 1.0), TypeError, r"start must be a float, got str"),
    ],
)
def test_cosine_schedule_errors(args: tuple[object, ...], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        cosine_schedule(*args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ linear_warmup_schedule
@pytest.mark.parametrize(
    ("start", "end", "warmup", "total"),
    [(0.04, 0.07, 30, 100), (0.04, 0.04, 0, 10), (0.07, 0.04, 5, 9), (0.04, 0.07, 1, 4),
     (0.04, 0.07, 2, 2), (-1.5, 3.25, 17, 20), (0.04, 0.07, 50, 50)],
)  # fmt: skip
def test_warmup_schedule_equals_linspace_and_constant(
    start: float, end: float, warmup: int, total: int
) -> None:
    reference = np.concatenate((np.linspace(start, end, warmup), np.ones(total - warmup) * end))
    mine = [linear_warmup_schedule(k, warmup, start, end) for k in range(total)]
    assert mine == reference.tolist()  # bit for bit
    assert linear_warmup_schedule(total + 100, warmup, start, end) == end


@given(
    st.integers(0, 300),
    st.integers(0, 200),
    st.floats(-10, 10, allow_nan=False),
    st.floats(-10, 10, allow_nan=False),
)
def test_warmup_schedule_equals_linspace_everywhere(
    warmup: int, extra: int, start: float, end: float
) -> None:
    reference = np.concatenate((np.linspace(start, end, warmup), np.ones(extra) * end))
    assert [linear_warmup_schedule(k, warmup, start, end) for k in range(warmup + extra)] == (
        reference.tolist()
    )


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((-1, 5, 0.04, 0.07), ValueError, r"step must be an int >= 0, got -1"),
        ((0, -5, 0.04, 0.07), ValueError, r"warmup_steps must be an int >= 0, got -5"),
        ((0.5, 5, 0.04, 0.07), TypeError, r"step must be an int, got float"),
        ((0, 5, float("nan"), 0.07), ValueError, r"start must be a finite number, got nan"),
        ((0, 5, 0.04, "0.07"), TypeError, r"end must be a float, got str"),
    ],
)
def test_warmup_schedule_errors(args: tuple[object, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        linear_warmup_schedule(*args)  # type: ignore[arg-type]
