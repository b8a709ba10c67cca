"""NNCLR: one training step (Dwibedi et al. 2021, arXiv:2104.14548; no official code released)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import MLPHead
from sslosses.transforms import byol_transform, forward_multicrop


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    image_size: int = 224
    hidden_dim: int = 2048  # projector: 3 layers, BatchNorm after each
    dim: int = 256  # projection and prediction width
    pred_hidden_dim: int = 4096  # predictor: 2 layers
    queue_size: int = 98304  # the support set Q
    temperature: float = 0.1
    symmetric: bool = True  # the paper's symmetric term (averaged in)
    lr: float = 0.3  # the paper: LARS, batch 4096, warm-up + cosine over 1000 epochs
    distributed: bool = False  # True under torchrun: global batch and one shared queue


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = byol_transform(cfg.image_size)  # NNCLR uses BYOL's augmentations
        dims = [cfg.feature_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.dim]
        self.model = nn.Sequential(backbone, MLPHead(dims, output_norm="affine"))
        self.predictor = MLPHead([cfg.dim, cfg.pred_hidden_dim, cfg.dim])
        device = next(backbone.parameters()).device
        self.queue = sslosses.MoCoQueue(
            cfg.queue_size, cfg.dim, gather_distributed=cfg.distributed
        ).to(device)
        params = [*self.model.parameters(), *self.predictor.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-6)

    def step(self, images: Tensor) -> Tensor:
        views = self.transform(images)  # 2 x (N, 3, 224, 224)
        z_a, z_b = forward_multicrop(self.model, views)  # projections, (N, 256) each
        p_a, p_b = self.predictor(torch.cat([z_a, z_b])).chunk(2)  # predictions, one BN batch
        # the queue starts empty (the paper's starts random): the first step searches the batch
        support = self.queue.features() if len(self.queue) else z_a.detach()  # (K, 256)
        loss = SF.nnclr_loss(
            z_a,
            z_b,
            p_a,
            p_b,
            support,
            temperature=self.cfg.temperature,
            symmetric=self.cfg.symmetric,
            gather_distributed=self.cfg.distributed,
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.queue.push(z_a.detach())  # after the loss: the first view, as Algorithm 1
        return loss.detach()
