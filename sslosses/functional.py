"""The functional interface: every loss as a plain function (``sslosses.functional.<loss>``)."""

from __future__ import annotations

from sslosses.byol import byol_loss
from sslosses.ema import ema_update_
from sslosses.simsiam import negative_cosine_similarity
from sslosses.sinkhorn import sinkhorn
from sslosses.swav import swav_loss

__all__ = [
    "byol_loss",
    "ema_update_",
    "negative_cosine_similarity",
    "sinkhorn",
    "swav_loss",
]
