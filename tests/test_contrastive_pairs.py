"""InfoNCE with in-batch negatives (MoCo v3) and NT-Xent (SimCLR), the two cross-entropy losses
over a batch of positive pairs: the check they share, each against its original formula.

What only one of them has stays in its own file (``test_info_nce.py``, ``test_nt_xent.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import embeddings

from benchmarks.references import moco_v3, simclr_nt_xent
from sslosses.info_nce import info_nce
from sslosses.nt_xent import nt_xent

TOL = {"atol": 1e-10, "rtol": 1e-9}
TEMPERATURES = st.floats(min_value=0.05, max_value=2.0)
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)
Reference = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ORIGINALS: dict[str, tuple[Callable[..., torch.Tensor], Reference]] = {
    "info_nce-moco_v3": (info_nce, moco_v3),  # in-batch negatives, keys not detached
    "nt_xent-simclr": (nt_xent, simclr_nt_xent),
}


@pytest.mark.parametrize(("loss", "original"), list(ORIGINALS.values()), ids=list(ORIGINALS))
@given(views=embeddings(min_n=2, max_n=12), temperature=TEMPERATURES, chunk_size=CHUNKS)
def test_matches_the_original(
    loss: Callable[..., torch.Tensor],
    original: Reference,
    views: tuple[torch.Tensor, ...],
    temperature: float,
    chunk_size: int | None,
) -> None:
    a, b = views
    ours = value_and_grads(
        lambda x, y: loss(x, y, temperature=temperature, chunk_size=chunk_size), a, b
    )
    assert_all_close(ours, value_and_grads(lambda x, y: original(x, y, temperature), a, b), **TOL)
