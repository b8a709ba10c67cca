"""SimCLR: one training step (Chen et al. 2020, google-research/simclr)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses.functional as SF
from sslosses.heads import SimCLRProjectionHead
from sslosses.transforms import forward_multicrop, simclr_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    proj_dim: int = 128
    temperature: float = 0.1
    lr: float = 0.3  # the paper: LARS, 0.3 x batch / 256, warm-up + cosine
    distributed: bool = False  # True under torchrun: the loss sees the global batch


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = simclr_transform(cfg.image_size)
        projector = SimCLRProjectionHead(cfg.feature_dim, out_dim=cfg.proj_dim)
        self.model = nn.Sequential(backbone, projector)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-6
        )

    def step(self, images: Tensor) -> Tensor:
        views = self.transform(images)  # 2 x (N, 3, 224, 224), on the images' device
        # both views in one pass (one BatchNorm batch of 2N), as SimCLR does
        z_a, z_b = forward_multicrop(self.model, views)  # (N, 128) each
        loss = SF.nt_xent(
            z_a, z_b, temperature=self.cfg.temperature, gather_distributed=self.cfg.distributed
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()
