"""sslosses: exact, fast, typed self-supervised learning losses and components for PyTorch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sslosses import distributed, functional, heads, transforms
from sslosses.align_uniform import AlignmentLoss, UniformityLoss
from sslosses.barlow_twins import BarlowTwinsLoss
from sslosses.byol import BYOLLoss
from sslosses.dcl import DCLLoss, DCLWLoss
from sslosses.dino import DINOCenter, DINOHead, DINOLoss
from sslosses.ema import EMA
from sslosses.ibot import IBOTPatchLoss
from sslosses.info_nce import InfoNCELoss
from sslosses.koleo import KoLeoLoss
from sslosses.mmcr import MMCRLoss
from sslosses.nnclr import NNCLRLoss
from sslosses.nt_xent import NTXentLoss
from sslosses.prototypes import SwAVPrototypes
from sslosses.queue import MoCoQueue
from sslosses.schedules import cosine_schedule, linear_warmup_schedule
from sslosses.sigreg import LeJEPALoss, SIGRegLoss
from sslosses.simsiam import NegativeCosineSimilarity
from sslosses.supcon import SupConLoss
from sslosses.swav import SwAVLoss
from sslosses.tico import TiCoCovariance, TiCoLoss
from sslosses.vicreg import VICRegLoss, VICRegTerms
from sslosses.wmse import WMSELoss

try:
    __version__ = version("sslosses")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "EMA",
    "AlignmentLoss",
    "BYOLLoss",
    "BarlowTwinsLoss",
    "DCLLoss",
    "DCLWLoss",
    "DINOCenter",
    "DINOHead",
    "DINOLoss",
    "IBOTPatchLoss",
    "InfoNCELoss",
    "KoLeoLoss",
    "LeJEPALoss",
    "MMCRLoss",
    "MoCoQueue",
    "NNCLRLoss",
    "NTXentLoss",
    "NegativeCosineSimilarity",
    "SIGRegLoss",
    "SupConLoss",
    "SwAVLoss",
    "SwAVPrototypes",
    "TiCoCovariance",
    "TiCoLoss",
    "UniformityLoss",
    "VICRegLoss",
    "VICRegTerms",
    "WMSELoss",
    "__version__",
    "cosine_schedule",
    "distributed",
    "functional",
    "heads",
    "linear_warmup_schedule",
    "transforms",
]
