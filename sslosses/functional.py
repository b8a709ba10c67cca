"""The functional interface: every loss as a plain function (``sslosses.functional.<loss>``)."""

from __future__ import annotations

from sslosses.byol import byol_loss
from sslosses.simsiam import negative_cosine_similarity

__all__ = [
    "byol_loss",
    "negative_cosine_similarity",
]
