"""MoCo v2 with a 65,536-key queue: one training step (Chen et al. 2020, facebookresearch/moco)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import MoCoV2ProjectionHead
from sslosses.transforms import IMAGENET_MEAN, IMAGENET_STD, simclr_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    dim: int = 128
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    lr: float = 0.03  # SGD, batch 256, cosine schedule
    distributed: bool = False  # True under torchrun: every rank enqueues the global batch


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        # MoCo v2's augmentation: SimCLR's at strength 0.5, crops of area 0.2-1, blur p=0.5
        self.transform = simclr_transform(
            cfg.image_size, scale=(0.2, 1.0), strength=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
        self.encoder = nn.Sequential(
            backbone, MoCoV2ProjectionHead(cfg.feature_dim, out_dim=cfg.dim)
        )
        # the key encoder: parameters by EMA, BatchNorm statistics from its own forward passes
        self.key_encoder = sslosses.EMA(self.encoder, momentum=cfg.momentum, buffers="keep")
        self.queue = sslosses.MoCoQueue(
            cfg.queue_size, cfg.dim, gather_distributed=cfg.distributed
        ).to(next(backbone.parameters()).device)
        self.optimizer = torch.optim.SGD(
            self.encoder.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4
        )

    def step(self, images: Tensor) -> Tensor:
        x_q, x_k = self.transform(images)  # 2 x (N, 3, 224, 224)
        q = self.encoder(x_q)  # (N, 128)
        with torch.no_grad():
            k = F.normalize(self.key_encoder(x_k), dim=1)  # (N, 128), no gradient
        # the queue starts empty: at the first step the loss has no negatives and is 0
        loss = SF.info_nce(
            q,
            k,
            negatives=self.queue.features(),  # (K, 128), K <= 65536
            in_batch_negatives=False,
            temperature=self.cfg.temperature,
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.key_encoder.update(self.encoder)
        self.queue.push(k)  # enqueue after the loss, as MoCo's _dequeue_and_enqueue
        return loss.detach()
