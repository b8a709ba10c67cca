"""Plain tensor builders shared by the test modules (Hypothesis strategies: ``strategies.py``)."""

from __future__ import annotations

import torch


def gaussian_pair(
    n: int = 6, d: int = 5, *, seed: int = 0, dtype: torch.dtype = torch.float64, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded standard-normal ``(n, d)`` tensors, drawn in ``dtype`` (leaves if ``grad``)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_(grad)
    b = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_(grad)
    return a, b
