"""SupCon: one training step (Khosla et al. 2020, HobbitLong/SupContrast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses.functional as SF
from sslosses.transforms import forward_multicrop, simclr_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 32  # main_supcon.py trains on CIFAR at 32x32
    feat_dim: int = 128
    temperature: float = 0.07
    lr: float = 0.05  # main_supcon.py: SGD, momentum 0.9, weight decay 1e-4, batch 256
    distributed: bool = False  # True under torchrun: positives and negatives of all ranks


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        # SupContrast's augmentation: crop area in [0.2, 1], ColorJitter(0.4, 0.4, 0.4, 0.1)
        # with p=0.8 (strength 0.5), grayscale p=0.2, no blur, CIFAR-10's mean and std
        self.transform = simclr_transform(
            cfg.image_size,
            scale=(0.2, 1.0),
            strength=0.5,
            blur_prob=0.0,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2023, 0.1994, 0.2010),
        )
        head = nn.Sequential(  # SupConResNet's "mlp" head; its output is L2-normalized
            nn.Linear(cfg.feature_dim, cfg.feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.feature_dim, cfg.feat_dim),
        )
        self.model = nn.Sequential(backbone, head)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4
        )

    def step(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """One step on ``images`` (N, 3, H, W) and their class ``labels`` (N,); ``None``
        trains without labels (the original's ``--method SimCLR``)."""
        views = self.transform(images)  # 2 x (N, 3, 32, 32), on the images' device
        z = forward_multicrop(self.model, views)  # 2 x (N, 128), one BatchNorm batch of 2N
        loss = SF.supcon_loss(  # normalizes z (normalize=True), as the head does
            z,
            labels,
            temperature=self.cfg.temperature,
            gather_distributed=self.cfg.distributed,
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()
