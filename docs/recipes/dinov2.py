"""DINOv2: one training step (Oquab et al. 2023, facebookresearch/dinov2 ssl_meta_arch.py).

The image-level DINO loss on the class tokens, the iBOT loss on the masked patch tokens of the
global crops, and 0.1 x KoLeo on the student's class tokens (before the head), with the teacher
targets from a softmax center or from Sinkhorn-Knopp (``train.centering`` in dinov2's config).
The backbone is any token model (a ViT) called as ``backbone(images, masks)`` that returns the
class token ``(N, F)`` and the patch tokens ``(N, P, F)``, replacing the embeddings of the
masked patches (``masks``: ``(N, P)`` bool, or None) by its mask token, as dinov2's ViT does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from sslosses.transforms import dino_transform


@dataclass
class Config:
    feature_dim: int = 384  # ViT-S (student.arch; vit_large, 1024, in the default config)
    global_size: int = 224
    local_size: int = 96
    local_count: int = 8  # 2 global + 8 local crops
    out_dim: int = 65536  # dino.head_n_prototypes (and ibot.head_n_prototypes)
    hidden_dim: int = 2048  # dino.head_hidden_dim
    bottleneck_dim: int = 256  # dino.head_bottleneck_dim
    centering: Literal["center", "sinkhorn"] = "center"  # train.centering ("sinkhorn_knopp")
    koleo_weight: float = 0.1  # dino.koleo_loss_weight
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # ibot.mask_ratio_min_max
    mask_probability: float = 0.5  # ibot.mask_sample_probability
    momentum: float = 0.992  # teacher.momentum_teacher, cosine to 1
    warmup_teacher_temperature: float = 0.04  # teacher.warmup_teacher_temp
    teacher_temperature: float = 0.07  # teacher.teacher_temp
    warmup_steps: int = 30 * 1250  # teacher.warmup_teacher_temp_epochs x steps per epoch
    freeze_last_layer_steps: int = 1250  # optim.freeze_last_layer_epochs
    total_steps: int = 100 * 1250
    lr: float = 4e-3  # optim.base_lr 0.004 x sqrt(batch / 1024) at batch 1024 (AdamW)
    weight_decay: float = 0.04  # optim.weight_decay (cosine to 0.4 in the original)
    clip_grad: float = 3.0  # optim.clip_grad


def random_masks(n: int, patches: int, cfg: Config, generator: torch.Generator) -> Tensor:
    """``(n, patches)`` bool: a ``mask_probability`` share of the images get a ratio spread
    over ``mask_ratio`` of their patches masked, the others none (dinov2 masks blocks of
    patches; random patches keep this example short)."""
    masks = torch.zeros(n, patches, dtype=torch.bool)
    n_masked = int(n * cfg.mask_probability)
    low, high = cfg.mask_ratio
    for i in range(n_masked):
        ratio = low + (high - low) * (i / max(n_masked - 1, 1))
        chosen = torch.randperm(patches, generator=generator)[: max(1, int(ratio * patches))]
        masks[i, chosen] = True
    return masks


class Recipe:
    def __init__(self, backbone: nn.Module, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = dino_transform(
            cfg.global_size, cfg.local_size, local_count=cfg.local_count
        )
        head = sslosses.DINOHead(  # shared by the class and the patch tokens (ibot.separate_head)
            cfg.feature_dim,
            cfg.out_dim,
            hidden_dim=cfg.hidden_dim,
            bottleneck_dim=cfg.bottleneck_dim,
            freeze_steps=cfg.freeze_last_layer_steps,
        )
        self.student = nn.ModuleDict({"backbone": backbone, "head": head})
        self.teacher = sslosses.EMA(
            self.student, momentum=cfg.momentum, total_steps=cfg.total_steps, buffers="keep"
        )
        centered = cfg.centering == "center"
        self.cls_center = sslosses.DINOCenter(cfg.out_dim) if centered else None
        self.patch_center = sslosses.DINOCenter(cfg.out_dim) if centered else None
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator().manual_seed(0)
        self.step_count = 0

    def step(self, images: Tensor) -> Tensor:
        cfg = self.cfg
        crops = self.transform(images)  # 2 global crops, then the local ones
        n = images.shape[0]
        global_crops = torch.cat(crops[:2])  # (2N, 3, H, W)
        temperature = sslosses.linear_warmup_schedule(
            self.step_count,
            cfg.warmup_steps,
            cfg.warmup_teacher_temperature,
            cfg.teacher_temperature,
        )
        with torch.no_grad():  # the teacher sees the global crops unmasked
            t_cls, t_patches = self.teacher.module["backbone"](global_crops, None)
            t_cls = self.teacher.module["head"](t_cls)  # (2N, K)
            t_patches = self.teacher.module["head"](t_patches)  # (2N, P, K)
        masks = random_masks(2 * n, t_patches.shape[1], cfg, self.generator)  # (2N, P)
        s_cls, s_patches = self.student["backbone"](global_crops, masks)
        s_local = [self.student["backbone"](c, None)[0] for c in crops[2:]]
        head = self.student["head"]
        student_scores = [*head(s_cls).chunk(2), *(head(c) for c in s_local)]
        centers = {"centering": cfg.centering, "teacher_temperature": temperature}
        dino = SF.dino_loss(
            student_scores,
            list(t_cls.chunk(2)),
            center=None if self.cls_center is None else self.cls_center.center,
            **centers,
        )
        ibot = SF.ibot_patch_loss(
            head(s_patches),
            t_patches,
            masks,
            center=None if self.patch_center is None else self.patch_center.center,
            **centers,
        )
        # KoLeo per global crop, on the class tokens before the head
        koleo = torch.stack([SF.koleo_loss(c) for c in s_cls.chunk(2)]).sum()
        loss = dino + ibot + cfg.koleo_weight * koleo
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
        head.cancel_gradients_(self.step_count)  # last layer frozen at first
        self.optimizer.step()
        self.teacher.update(self.student)
        if self.cls_center is not None and self.patch_center is not None:
            self.cls_center.update(list(t_cls.chunk(2)))  # explicit, after the losses
            self.patch_center.update(t_patches)  # per image the mean of its patches
        self.step_count += 1
        return loss.detach()
