"""MoCo v3: one training step (Chen, Xie and He 2021, facebookresearch/moco-v3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import MoCoV3PredictionHead, MoCoV3ProjectionHead
from sslosses.transforms import byol_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50; 768 for ViT-B)
    image_size: int = 224
    mlp_dim: int = 4096
    dim: int = 256
    projector_layers: int = 2  # ResNet-50; 3 for ViT
    temperature: float = 1.0  # ResNet-50; 0.2 for ViT
    momentum: float = 0.99  # raised to 1 with a cosine over training (--moco-m-cos)
    total_steps: int = 100 * 312  # 100 epochs of ImageNet at batch 4096
    lr: float = 0.6  # the paper: LARS (ResNet) or AdamW (ViT)
    distributed: bool = False  # True under torchrun: keys of all ranks are negatives


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = byol_transform(cfg.image_size)  # MoCo v3 uses BYOL's augmentation
        projector = MoCoV3ProjectionHead(
            cfg.feature_dim, cfg.mlp_dim, cfg.dim, num_layers=cfg.projector_layers
        )
        self.encoder = nn.Sequential(backbone, projector)
        self.predictor = MoCoV3PredictionHead(cfg.dim, cfg.mlp_dim, cfg.dim)
        self.momentum_encoder = sslosses.EMA(
            self.encoder, momentum=cfg.momentum, total_steps=cfg.total_steps, buffers="keep"
        )
        params = [*self.encoder.parameters(), *self.predictor.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-6)

    def step(self, images: Tensor) -> Tensor:
        x1, x2 = self.transform(images)  # 2 x (N, 3, 224, 224)
        q1 = self.predictor(self.encoder(x1))  # (N, 256)
        q2 = self.predictor(self.encoder(x2))
        with torch.no_grad():
            k1, k2 = self.momentum_encoder(x1), self.momentum_encoder(x2)  # (N, 256)
        t = self.cfg.temperature
        # the other keys of the (global) batch are the negatives; MoCo v3 scales by 2t
        loss = (
            2
            * t
            * (
                SF.info_nce(q1, k2, temperature=t, gather_distributed=self.cfg.distributed)
                + SF.info_nce(q2, k1, temperature=t, gather_distributed=self.cfg.distributed)
            )
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.momentum_encoder.update(self.encoder)  # momentum follows the cosine schedule
        return loss.detach()
