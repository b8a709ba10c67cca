"""VICReg: one training step (Bardes, Ponce, LeCun 2022, facebookresearch/vicreg)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import VICRegProjectionHead
from sslosses.transforms import byol_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    mlp: str = "8192-8192-8192"  # main_vicreg.py --mlp
    sim_coeff: float = 25.0  # --sim-coeff
    std_coeff: float = 25.0  # --std-coeff
    cov_coeff: float = 1.0  # --cov-coeff
    lr: float = 0.2 * 2048 / 256  # --base-lr 0.2 x batch / 256 (LARS in the paper)
    weight_decay: float = 1e-6  # --wd
    distributed: bool = False  # True under torchrun: variance/covariance over the global batch


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = byol_transform(cfg.image_size)  # VICReg uses BYOL's augmentations
        expander = VICRegProjectionHead(cfg.feature_dim, cfg.mlp)
        self.model = nn.Sequential(backbone, expander)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
        )
        self.last_terms: sslosses.VICRegTerms | None = None

    def step(self, images: Tensor) -> Tensor:
        cfg = self.cfg
        x, y = self.transform(images)  # 2 x (N, 3, 224, 224)
        z_x, z_y = self.model(x), self.model(y)  # (N, 8192) each
        # the loss and its three terms from one computation (log them as the original does)
        terms = SF.vicreg_terms(
            z_x,
            z_y,
            sim_coeff=cfg.sim_coeff,
            std_coeff=cfg.std_coeff,
            cov_coeff=cfg.cov_coeff,
            gather_distributed=cfg.distributed,
        )
        self.optimizer.zero_grad()
        terms.loss.backward()
        self.optimizer.step()
        self.last_terms = terms
        return terms.loss.detach()
