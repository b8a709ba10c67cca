"""The functional interface: every loss as a plain function (``sslosses.functional.<loss>``).

Also the two ``"auto"`` rules: :func:`resolve_chunk_size` (``chunk_size`` of the contrastive
losses) and :func:`select_algorithm` (``algorithm`` of Barlow Twins and VICReg).
"""

from __future__ import annotations

from sslosses._chunked_ce import resolve_chunk_size
from sslosses.align_uniform import alignment_loss, uniformity_loss
from sslosses.barlow_twins import barlow_twins_loss
from sslosses.byol import byol_loss
from sslosses.dcl import dcl_loss, dclw_loss
from sslosses.dino import dino_loss
from sslosses.ema import ema_update_
from sslosses.ibot import ibot_patch_loss
from sslosses.info_nce import info_nce
from sslosses.kernels.offdiag import select_algorithm
from sslosses.koleo import koleo_loss
from sslosses.mmcr import mmcr_loss
from sslosses.nnclr import nearest_neighbours, nnclr_loss
from sslosses.nt_xent import nt_xent
from sslosses.sigreg import lejepa_loss, sigreg_loss
from sslosses.simsiam import negative_cosine_similarity
from sslosses.sinkhorn import sinkhorn
from sslosses.supcon import supcon_loss
from sslosses.swav import swav_loss
from sslosses.tico import tico_loss
from sslosses.vicreg import vicreg_loss, vicreg_terms
from sslosses.wmse import wmse_loss

__all__ = [
    "alignment_loss",
    "barlow_twins_loss",
    "byol_loss",
    "dcl_loss",
    "dclw_loss",
    "dino_loss",
    "ema_update_",
    "ibot_patch_loss",
    "info_nce",
    "koleo_loss",
    "lejepa_loss",
    "mmcr_loss",
    "nearest_neighbours",
    "negative_cosine_similarity",
    "nnclr_loss",
    "nt_xent",
    "resolve_chunk_size",
    "select_algorithm",
    "sigreg_loss",
    "sinkhorn",
    "supcon_loss",
    "swav_loss",
    "tico_loss",
    "uniformity_loss",
    "vicreg_loss",
    "vicreg_terms",
    "wmse_loss",
]
