"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def embeddings(
    draw: st.DrawFn,
    *,
    min_n: int = 2,
    max_n: int = 16,
    min_d: int = 1,
    max_d: int = 16,
    count: int = 2,
    dtype: torch.dtype = torch.float64,
    scale: float = 3.0,
) -> tuple[torch.Tensor, ...]:
    """``count`` random ``(N, D)`` tensors with a shared drawn ``N`` and ``D``."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    gen = torch.Generator().manual_seed(draw(SEEDS))
    return tuple(scale * torch.randn(n, d, generator=gen, dtype=dtype) for _ in range(count))


def positive_scales(low: float = 1e-2, high: float = 1e2) -> st.SearchStrategy[float]:
    """Positive finite floats for rescaling invariants."""
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
