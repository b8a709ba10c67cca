"""SimSiam: one training step (Chen and He 2021, facebookresearch/simsiam)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses.functional as SF
from sslosses.heads import SimSiamPredictionHead, SimSiamProjectionHead
from sslosses.transforms import IMAGENET_MEAN, IMAGENET_STD, simclr_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    dim: int = 2048
    pred_dim: int = 512
    lr: float = 0.05  # SGD, 0.05 x batch / 256, cosine schedule (not for the predictor)


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        # SimSiam uses MoCo v2's augmentation
        self.transform = simclr_transform(
            cfg.image_size, scale=(0.2, 1.0), strength=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
        self.encoder = nn.Sequential(
            backbone, SimSiamProjectionHead(cfg.feature_dim, out_dim=cfg.dim)
        )
        self.predictor = SimSiamPredictionHead(cfg.dim, cfg.pred_dim, cfg.dim)
        params = [*self.encoder.parameters(), *self.predictor.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-4)

    def step(self, images: Tensor) -> Tensor:
        x1, x2 = self.transform(images)  # 2 x (N, 3, 224, 224)
        z1, z2 = self.encoder(x1), self.encoder(x2)  # (N, 2048)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        # the target side is detached by the loss (stop_gradient=True, the default)
        loss = 0.5 * (SF.negative_cosine_similarity(p1, z2) + SF.negative_cosine_similarity(p2, z1))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()
