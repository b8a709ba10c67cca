"""DINO: one training step (Caron et al. 2021, facebookresearch/dino main_dino.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import sslosses
from sslosses.transforms import dino_transform, forward_multicrop


@dataclass
class Config:
    feature_dim: int = 2048  # the backbone's output width (ResNet-50; ViT-S/16: 384)
    global_size: int = 224
    local_size: int = 96
    local_count: int = 8  # 2 global + 8 local crops
    out_dim: int = 65536  # K, main_dino.py --out_dim
    hidden_dim: int = 2048  # DINOHead's MLP width
    bottleneck_dim: int = 256
    use_bn: bool = False  # --use_bn_in_head (True in the ResNet-50 setup)
    momentum: float = 0.996  # --momentum_teacher, raised to 1 with a cosine over training
    warmup_teacher_temperature: float = 0.04  # --warmup_teacher_temp
    teacher_temperature: float = 0.04  # --teacher_temp (0.07 for longer ViT runs)
    warmup_steps: int = 0  # --warmup_teacher_temp_epochs x steps per epoch
    freeze_last_layer_steps: int = 1251  # --freeze_last_layer 1 epoch (ImageNet, batch 1024)
    total_steps: int = 100 * 1251  # 100 epochs
    lr: float = 5e-4 * 1024 / 256  # --lr 0.0005 scaled by batch / 256 (AdamW)
    weight_decay: float = 0.04  # --weight_decay (cosine to 0.4 in the original)
    clip_grad: float = 3.0  # --clip_grad


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = dino_transform(
            cfg.global_size, cfg.local_size, local_count=cfg.local_count
        )
        head = sslosses.DINOHead(
            cfg.feature_dim,
            cfg.out_dim,
            hidden_dim=cfg.hidden_dim,
            bottleneck_dim=cfg.bottleneck_dim,
            use_bn=cfg.use_bn,
            freeze_steps=cfg.freeze_last_layer_steps,
        )
        self.student = nn.Sequential(backbone, head)
        self.teacher = sslosses.EMA(
            self.student, momentum=cfg.momentum, total_steps=cfg.total_steps, buffers="keep"
        )
        self.center = sslosses.DINOCenter(cfg.out_dim, momentum=0.9)  # --center_momentum
        self.criterion = sslosses.DINOLoss(student_temperature=0.1)
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.step_count = 0

    def step(self, images: Tensor) -> Tensor:
        cfg = self.cfg
        crops = self.transform(images)  # 2 x (N, 3, 224, 224), then 8 x (N, 3, 96, 96)
        student = forward_multicrop(self.student, crops)  # 10 x (N, K), one pass per size
        with torch.no_grad():
            teacher = forward_multicrop(self.teacher, crops[:2])  # the 2 global crops only
        temperature = sslosses.linear_warmup_schedule(
            self.step_count,
            cfg.warmup_steps,
            cfg.warmup_teacher_temperature,
            cfg.teacher_temperature,
        )
        loss = self.criterion(
            student, teacher, center=self.center.center, teacher_temperature=temperature
        )
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
        self.student[1].cancel_gradients_(self.step_count)  # last layer frozen at first
        self.optimizer.step()
        self.teacher.update(self.student)  # after the optimizer step
        self.center.update(teacher)  # explicit, after the loss (main_dino.py's update_center)
        self.step_count += 1
        return loss.detach()
