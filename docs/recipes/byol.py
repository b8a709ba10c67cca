"""BYOL: one training step (Grill et al. 2020, google-deepmind/deepmind-research byol)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import BYOLPredictionHead, BYOLProjectionHead
from sslosses.transforms import byol_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    hidden_dim: int = 4096
    proj_dim: int = 256
    momentum: float = 0.996  # tau_base, raised to 1 with a cosine over training
    total_steps: int = 300 * 312  # 300 epochs of ImageNet at batch 4096
    lr: float = 0.2  # the paper: LARS, 0.2 x batch / 256


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = byol_transform(cfg.image_size)  # asymmetric blur / solarization
        projector = BYOLProjectionHead(cfg.feature_dim, cfg.hidden_dim, cfg.proj_dim)
        self.online = nn.Sequential(backbone, projector)
        self.predictor = BYOLPredictionHead(cfg.proj_dim, cfg.hidden_dim, cfg.proj_dim)
        self.target = sslosses.EMA(
            self.online, momentum=cfg.momentum, total_steps=cfg.total_steps, buffers="keep"
        )
        params = [*self.online.parameters(), *self.predictor.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1.5e-6)

    def step(self, images: Tensor) -> Tensor:
        x1, x2 = self.transform(images)  # view 1, view 2: (N, 3, 224, 224) each
        p1 = self.predictor(self.online(x1))  # (N, 256)
        p2 = self.predictor(self.online(x2))
        with torch.no_grad():
            z1, z2 = self.target(x1), self.target(x2)  # (N, 256), no gradient
        # the symmetrized loss: 2 - 2 cos per pair, mean over the batch
        loss = SF.byol_loss(p1, z2) + SF.byol_loss(p2, z1)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.target.update(self.online)  # after the optimizer step
        return loss.detach()
