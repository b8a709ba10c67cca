"""sslosses: exact, fast, typed self-supervised learning losses and components for PyTorch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sslosses import distributed, functional
from sslosses.byol import BYOLLoss
from sslosses.simsiam import NegativeCosineSimilarity

try:
    __version__ = version("sslosses")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "BYOLLoss",
    "NegativeCosineSimilarity",
    "__version__",
    "distributed",
    "functional",
]
