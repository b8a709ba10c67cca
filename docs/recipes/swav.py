"""SwAV, 2 x 224 + 6 x 96 crops with a feature queue: one training step.

Caron et al. 2020, facebookresearch/swav (main_swav.py, src/resnet50.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.heads import SwAVProjectionHead
from sslosses.transforms import forward_multicrop, swav_transform


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50)
    global_size: int = 224
    local_size: int = 96
    local_count: int = 6
    blur_kernel_size: int | None = 23  # None: 10% of the crop size (for small images)
    hidden_dim: int = 2048
    dim: int = 128
    n_prototypes: int = 3000
    freeze_prototypes_steps: int = 313
    queue_length: int = 3840  # per process: main_swav.py uses 3840 // world_size
    queue_start_step: int = 0  # main_swav.py: --epoch_queue_starts 15 (in epochs)
    temperature: float = 0.1
    epsilon: float = 0.05
    lr: float = 4.8  # the paper: LARS, batch 4096, warm-up + cosine
    distributed: bool = False  # True under torchrun: Sinkhorn over the global batch


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = swav_transform(
            cfg.global_size,
            cfg.local_size,
            local_count=cfg.local_count,
            blur_kernel_size=cfg.blur_kernel_size,
        )
        self.backbone = backbone
        self.projector = SwAVProjectionHead(cfg.feature_dim, cfg.hidden_dim, cfg.dim)
        self.prototypes = sslosses.SwAVPrototypes(
            cfg.dim, cfg.n_prototypes, freeze_steps=cfg.freeze_prototypes_steps
        )
        device = next(backbone.parameters()).device
        self.prototypes.to(device)
        # one queue per assignment crop (the two global crops), local to each process
        self.queues = [sslosses.MoCoQueue(cfg.queue_length, cfg.dim).to(device) for _ in range(2)]
        params = [
            *self.backbone.parameters(),
            *self.projector.parameters(),
            *self.prototypes.parameters(),
        ]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-6)
        self.iteration = 0

    def step(self, images: Tensor) -> Tensor:
        self.prototypes.normalize_()  # prototypes back on the unit sphere
        crops = self.transform(images)  # 2 x (N, 3, 224, 224), then 6 x (N, 3, 96, 96)
        # one backbone pass per resolution: the 224 and 96 crops cannot share a batch
        features = torch.cat(forward_multicrop(self.backbone, crops))  # (8N, 2048)
        z = F.normalize(self.projector(features), dim=1)  # (8N, 128)
        scores = list(self.prototypes(z).split([c.shape[0] for c in crops]))  # 8 x (N, K)

        use_queue = self.iteration >= self.cfg.queue_start_step and all(
            q.is_full for q in self.queues
        )  # main_swav.py uses the queue once it is full
        with torch.no_grad():
            queue_scores = [self.prototypes(q.features()) for q in self.queues]  # (Q, K)
        loss = SF.swav_loss(
            scores,
            queue_scores=queue_scores if use_queue else None,
            temperature=self.cfg.temperature,
            epsilon=self.cfg.epsilon,
            gather_distributed=self.cfg.distributed,
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.prototypes.cancel_gradients_(self.iteration)  # frozen for the first steps
        self.optimizer.step()

        if self.iteration >= self.cfg.queue_start_step:
            n = images.shape[0]
            for i, queue in enumerate(self.queues):  # after the loss, as main_swav.py
                queue.push(z[i * n : (i + 1) * n].detach())
        self.iteration += 1
        return loss.detach()
