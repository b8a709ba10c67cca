"""Barlow Twins: one training step (Zbontar et al. 2021, facebookresearch/barlowtwins)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses.functional as SF
from sslosses.heads import BarlowTwinsProjectionHead
from sslosses.transforms import byol_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    projector: str = "8192-8192-8192"
    lambd: float = 0.0051
    lr: float = 0.2  # the paper: LARS, 0.2 for weights and 0.0048 for biases, batch 2048
    distributed: bool = False  # True under torchrun: statistics over the global batch


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = byol_transform(cfg.image_size)  # Barlow Twins uses BYOL's augmentation
        projector = BarlowTwinsProjectionHead(cfg.feature_dim, cfg.projector)
        self.model = nn.Sequential(backbone, projector)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1.5e-6
        )

    def step(self, images: Tensor) -> Tensor:
        y1, y2 = self.transform(images)  # 2 x (N, 3, 224, 224)
        z1, z2 = self.model(y1), self.model(y2)  # (N, 8192) each
        # the loss standardizes z1, z2 itself (main.py's BatchNorm1d(affine=False))
        loss = SF.barlow_twins_loss(
            z1, z2, lambd=self.cfg.lambd, gather_distributed=self.cfg.distributed
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()
