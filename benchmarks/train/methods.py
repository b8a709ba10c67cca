"""The methods: one module per method whose ``forward`` returns the loss of a batch of views.

This is the part to copy into a training loop of one's own: each class builds its heads from
:mod:`sslosses.heads`, calls one sslosses loss, and keeps its state (EMA target, queue,
prototypes, center) in ``after_step``."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from benchmarks.train.config import Config, Resolved
from benchmarks.train.data import Data
from benchmarks.train.networks import BLOCKS, Encoder, ResNet
from sslosses.heads import BarlowTwinsProjectionHead, MLPHead, MoCoV2ProjectionHead
from sslosses.transforms import (
    forward_multicrop,
)

# ------------------------------------------------------------------------------------------------
# 5. Methods: each is a module whose forward returns the loss of one batch of views
# ------------------------------------------------------------------------------------------------


class Method(nn.Module):
    """Base class. ``forward(views, labels)`` returns the loss of a batch (only the supervised
    ceiling reads the labels); ``after_step()`` runs after the
    optimizer step (EMA update, queue push, prototype normalization); ``online`` is what the
    optimizer trains and what the target networks follow."""

    online: Encoder

    @property
    def backbone(self) -> ResNet:
        return self.online.backbone

    def before_optimizer_step(self, step: int) -> None:
        """Adjust gradients between backward and optimizer step ``step``. Default: nothing."""

    def after_step(self, step: int) -> None:
        """Update state after optimizer step ``step`` (0-based). Default: nothing."""

    def log_values(self) -> dict[str, float]:
        """Extra numbers for the JSON log (e.g. the EMA momentum)."""
        return {}


def per_view(net: nn.Module, views: Sequence[Tensor]) -> list[Tensor]:
    """One forward pass per view, so each view has its own BatchNorm statistics (as the official
    BYOL, SimSiam, Barlow Twins and MoCo code do; SimCLR and SwAV batch the views together)."""
    return [net(v) for v in views]


def contrastive_encoder(backbone: ResNet) -> Encoder:
    """SimCLR's projection head (one hidden layer of 4F with BatchNorm, 128-d output), which
    the contrastive methods here share."""
    f = backbone.out_dim
    return Encoder(backbone, MLPHead([f, 4 * f, 128], hidden_bias=False))


class SimCLR(Method):
    """SimCLR (Chen et al. 2020): NT-Xent between the two views' projections."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        self.online = contrastive_encoder(backbone)
        self.temperature = r.temperature
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = forward_multicrop(self.online, views[:2])
        return SF.nt_xent(z_a, z_b, temperature=self.temperature, gather_distributed=self.gather)


class MoCo(Method):
    """MoCo v2 (Chen et al. 2020): InfoNCE of queries against momentum-encoder keys and a queue
    of past keys. Symmetrized over the two views (as MoCo v3 and solo-learn's MoCo v2+ do; the
    official MoCo v2 uses one direction), so both views' keys are enqueued."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, MoCoV2ProjectionHead(f, 4 * f, 128))
        self.target = sslosses.EMA(self.online, momentum=r.ema_momentum, buffers="keep")
        self.queue = sslosses.MoCoQueue(r.queue_size, 128, gather_distributed=distributed)
        self.temperature = r.temperature
        self._keys: Tensor | None = None

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        q_a, q_b = per_view(self.online, views[:2])
        with torch.no_grad():
            k_a, k_b = per_view(self.target.module, views[:2])
        # MoCo v2 contrasts with the queue only; on the very first step the queue is still
        # empty (MoCo fills it with random noise instead), so the batch's keys stand in.
        negatives = self.queue.features() if len(self.queue) else None
        nce = functools.partial(
            SF.info_nce,
            negatives=negatives,
            temperature=self.temperature,
            in_batch_negatives=negatives is None,
        )
        loss = 0.5 * (nce(q_a, k_b) + nce(q_b, k_a))
        self._keys = F.normalize(torch.cat([k_a, k_b]).float(), dim=1)
        return loss

    def after_step(self, step: int) -> None:
        self.target.update(self.online)
        if self._keys is not None:
            self.queue.push(self._keys)
            self._keys = None

    def log_values(self) -> dict[str, float]:
        return {"ema_momentum": self.target.momentum}


class BYOL(Method):
    """BYOL (Grill et al. 2020): the online predictor regresses the EMA target's projection."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, MLPHead([f, 8 * f, 256], hidden_bias=False))
        self.predictor = MLPHead([256, 8 * f, 256], hidden_bias=False)
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        p_a, p_b = per_view(self.predictor, [z_a, z_b])
        with torch.no_grad():
            t_a, t_b = per_view(self.target.module, views[:2])
        return SF.byol_loss(p_a, t_b) + SF.byol_loss(p_b, t_a)

    def after_step(self, step: int) -> None:
        self.target.update(self.online)

    def log_values(self) -> dict[str, float]:
        return {"ema_momentum": self.target.momentum}


class SimSiam(Method):
    """SimSiam (Chen & He 2021): predictor vs stop-gradient projection, no target network."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(
            backbone,
            MLPHead(
                [f, 4 * f, 4 * f, 4 * f],
                hidden_bias=False,
                output_bias=False,
                output_norm="no_affine",
            ),
        )
        self.predictor = MLPHead([4 * f, f, 4 * f], hidden_bias=False)

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        p_a, p_b = per_view(self.predictor, [z_a, z_b])
        return 0.5 * (
            SF.negative_cosine_similarity(p_a, z_b) + SF.negative_cosine_similarity(p_b, z_a)
        )


class SwAV(Method):
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over multi-crop views."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool, queue: int) -> None:
        super().__init__()
        self.online = contrastive_encoder(backbone)
        # frozen for the first ~2% of training (the paper: the first epoch)
        self.prototypes = sslosses.SwAVPrototypes(
            128, r.prototypes, freeze_steps=max(1, r.steps // 50)
        )
        self.prototypes.normalize_()
        self.temperature = r.temperature
        self.gather = distributed
        # optional feature queue per assignment crop (each rank its own, as the official code)
        self.queues = nn.ModuleList(
            [sslosses.MoCoQueue(queue, 128) for _ in range(2)] if queue else []
        )
        self._embeddings: list[Tensor] = []

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        # one forward pass per crop size (SwAV's multi-crop), then onto the unit sphere
        z = [F.normalize(out, dim=1) for out in forward_multicrop(self.online, views)]
        scores = [self.prototypes(zv) for zv in z]
        queue_scores = None
        if self.queues and all(q.is_full for q in self._queues()):  # used once full
            queue_scores = [self.prototypes(q.features()).detach() for q in self._queues()]
        self._embeddings = [z[0].detach(), z[1].detach()]
        return SF.swav_loss(
            scores,
            temperature=self.temperature,
            queue_scores=queue_scores,
            gather_distributed=self.gather,
        )

    def before_optimizer_step(self, step: int) -> None:
        self.prototypes.cancel_gradients_(step)

    def after_step(self, step: int) -> None:
        self.prototypes.normalize_()
        if self.queues:
            for queue, embedding in zip(self._queues(), self._embeddings, strict=True):
                queue.push(embedding.float())
        self._embeddings = []

    def _queues(self) -> list[sslosses.MoCoQueue]:
        return [typing.cast(sslosses.MoCoQueue, q) for q in self.queues]


class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views -> identity."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool, lambd: float) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, BarlowTwinsProjectionHead(f, [4 * f, 4 * f, 4 * f]))
        self.lambd = lambd
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.barlow_twins_loss(z_a, z_b, lambd=self.lambd, gather_distributed=self.gather)


class DINO(Method):
    """DINO (Caron et al. 2021): every student crop predicts the centered, sharpened output of
    the EMA teacher on the other global crops. The head is DINO's (L2-normalized bottleneck,
    weight-normalized last layer, frozen for the first ~2% of steps, as the paper's first
    epoch); the teacher's momentum follows a cosine from 0.996 to 1, its temperature warms up
    linearly from 0.04 to 0.07 over the first 30% of steps (the paper's ViT-S setting), and
    the center is updated explicitly after each loss. K is small for small data. With
    ``sinkhorn`` (``--method dino-sinkhorn``) the teacher's targets come from Sinkhorn-Knopp
    instead of the center (no state) and the head has BatchNorm. ``koleo`` (``--method
    dinov2``, with ``sinkhorn``) adds DINOv2's KoLeo regularizer on the student's head
    bottleneck (the MLP's output, before the L2-normalization) of each large crop. DINOv2
    applies it, weight 0.1, to the ViT's class token, the head's input; on this small CNN's
    pooled features that spread hurt the probes at every weight tried; weight 0.01 on the
    bottleneck gave Fashion-MNIST's best self-supervised probes (on digits it cost 0.7 linear
    points against no KoLeo; benchmarks/results/train_fashion_mnist.md)."""

    def __init__(
        self,
        backbone: ResNet,
        r: Resolved,
        distributed: bool,
        *,
        sinkhorn: bool = False,
        koleo: float = 0.0,
    ) -> None:
        super().__init__()
        self.koleo = koleo
        self.gather = distributed
        f = backbone.out_dim
        k = DINO_SMALL_OUTPUTS if r.image_size < 32 else 65_536  # small images: small K
        head = sslosses.DINOHead(
            f,
            k,
            hidden_dim=8 * f,
            bottleneck_dim=DINO_BOTTLENECK,
            use_bn=sinkhorn,
            freeze_steps=max(1, r.steps // 50),
        )
        self.online = Encoder(backbone, head)
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )
        # Sinkhorn-Knopp targets need no center: no state to keep or checkpoint
        self.centering = (
            None
            if sinkhorn
            else sslosses.DINOCenter(k, momentum=0.9, gather_distributed=distributed)
        )
        self.criterion = sslosses.DINOLoss(
            student_temperature=r.temperature,
            centering="sinkhorn" if sinkhorn else "center",
            gather_distributed=distributed,
        )
        self.warmup_steps = max(1, (3 * r.steps) // 10)

    def teacher_temperature(self) -> float:
        # the teacher's step count is saved in the checkpoint, so a resumed run continues here
        start, end = DINO_TEACHER_TEMPERATURES
        return sslosses.linear_warmup_schedule(self.target.step, self.warmup_steps, start, end)

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        # one backbone pass per crop size, then the head on every crop's features
        features = forward_multicrop(self.online.backbone, views)
        head = typing.cast(sslosses.DINOHead, self.online.projector)
        student, bottleneck = zip(*(head(f, return_bottleneck=True) for f in features), strict=True)
        with torch.no_grad():
            teacher = forward_multicrop(self.target.module, views[:2])
        loss: Tensor = self.criterion(
            student,
            teacher,
            center=None if self.centering is None else self.centering.center,
            teacher_temperature=self.teacher_temperature(),
        )
        if self.centering is not None:
            self.centering.update(teacher)
        if self.koleo:
            koleo = sum(SF.koleo_loss(b, gather_distributed=self.gather) for b in bottleneck[:2])
            loss = loss + self.koleo * koleo
        return loss

    def before_optimizer_step(self, step: int) -> None:
        typing.cast(sslosses.DINOHead, self.online.projector).cancel_gradients_(step)

    def after_step(self, step: int) -> None:
        self.target.update(self.online)

    def log_values(self) -> dict[str, float]:
        return {
            "ema_momentum": self.target.momentum,
            "teacher_temperature": self.teacher_temperature(),
        }


DINO_SMALL_OUTPUTS = 1024  # K of the DINO head on digits / Fashion-MNIST (paper: 65536)
DINO_BOTTLENECK = 256
DINO_TEACHER_TEMPERATURES = (0.04, 0.07)
# dinov2's ssl_default_config.yaml has 0.1 (dino.koleo_loss_weight) on the class token; here
# KoLeo reads the head's bottleneck, where 0.01 was the weight that helped (see DINO's docstring)
DINOV2_KOLEO_WEIGHT = 0.01


class VICReg(Method):
    """VICReg (Bardes et al. 2022): invariance, variance and covariance of the two views'
    embeddings. The expander is the paper's three layers (8192-8192-8192 on ResNet-50's 2048
    features) scaled to the backbone: 4F-4F-4F, BatchNorm and ReLU between, no final bias."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(
            backbone, MLPHead([f, 4 * f, 4 * f, 4 * f], hidden_bias=False, output_bias=False)
        )
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.vicreg_loss(z_a, z_b, gather_distributed=self.gather)  # 25 / 25 / 1


class NNCLR(Method):
    """NNCLR (Dwibedi et al. 2021): each view's nearest neighbour among past projections (a
    queue, the support set) is the positive of the other view's prediction."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = contrastive_encoder(backbone)
        self.predictor = MLPHead([128, 4 * f, 128], hidden_bias=False)
        self.queue = sslosses.MoCoQueue(r.queue_size, 128, gather_distributed=distributed)
        self.temperature = r.temperature
        self.gather = distributed
        self._pushed: Tensor | None = None

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = forward_multicrop(self.online, views[:2])
        p_a, p_b = per_view(self.predictor, [z_a, z_b])
        z_a_unit = F.normalize(z_a.detach().float(), dim=1)
        # until the first push the batch is its own support set (each row its own neighbour)
        support = self.queue.features() if len(self.queue) else z_a_unit
        self._pushed = z_a_unit
        return SF.nnclr_loss(
            z_a, z_b, p_a, p_b, support, temperature=self.temperature,
            gather_distributed=self.gather,
        )  # fmt: skip

    def after_step(self, step: int) -> None:
        if self._pushed is not None:
            self.queue.push(self._pushed)
            self._pushed = None


class DCL(SimCLR):
    """Decoupled contrastive learning (Yeh et al. 2022): NT-Xent without the positive in the
    denominator. SimCLR's head and augmentations."""

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = forward_multicrop(self.online, views[:2])
        return SF.dcl_loss(z_a, z_b, temperature=self.temperature, gather_distributed=self.gather)


class AlignUniform(Method):
    """Alignment + uniformity (Wang & Isola 2020): the two views' distance (alpha = 2) plus
    the uniformity of each view on the sphere (t = 2), weights 1 and 1 (the paper's
    ``align_unif_loss`` on CIFAR-10)."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        self.online = contrastive_encoder(backbone)
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = forward_multicrop(self.online, views[:2])
        uniformity = [SF.uniformity_loss(z, gather_distributed=self.gather) for z in (z_a, z_b)]
        align = SF.alignment_loss(z_a, z_b, gather_distributed=self.gather)
        return align + 0.5 * (uniformity[0] + uniformity[1])


class MMCR(Method):
    """MMCR (Yerxa et al. 2023): minus the nuclear norm of the per-sample centroids of every
    crop's projection (the large and the small ones)."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        self.online = contrastive_encoder(backbone)
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z = forward_multicrop(self.online, views)
        return SF.mmcr_loss(z, gather_distributed=self.gather)


class TiCo(Method):
    """TiCo (Zhu et al. 2022): each view's online embedding is pulled toward the momentum
    encoder's embedding of the other view, and pushed off the directions a running covariance
    of past online embeddings already occupies (updated with both views' embeddings before the
    loss). Symmetrized over the two views, as MoCo here. The momentum encoder is the paper's
    setup (lightly's TiCo example too); without it the loss rises in the first steps and the
    features end below the untrained encoder on Fashion-MNIST (issue 26)."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, MLPHead([f, 4 * f, 256], hidden_bias=False))
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )
        self.covariance = sslosses.TiCoCovariance(256, beta=0.9, gather_distributed=distributed)
        self.gather = distributed

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        q_a, q_b = per_view(self.online, views[:2])
        with torch.no_grad():
            k_a, k_b = per_view(self.target.module, views[:2])
        self.covariance.update(torch.cat([q_a, q_b]).detach())
        tico = functools.partial(
            SF.tico_loss, covariance=self.covariance.covariance, gather_distributed=self.gather
        )
        return 0.5 * (tico(q_a, k_b) + tico(q_b, k_a))

    def after_step(self, step: int) -> None:
        self.target.update(self.online)

    def log_values(self) -> dict[str, float]:
        return {"ema_momentum": self.target.momentum}


class WMSE(Method):
    """W-MSE (Ermolov et al. 2021): the views whitened in sub-batches of 128, then their
    normalized MSE. The paper's CIFAR head: one hidden layer, a 64-d output (at most half the
    batch, so that a sub-batch's covariance can be full rank: the paper's w >= 2 D)."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, MLPHead([f, 4 * f, min(64, r.batch_size // 2)]))

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z = per_view(self.online, views[:2])
        w_size = min(128, len(z[0]))  # one sub-batch when the local batch has under 128 rows
        return SF.wmse_loss(z, w_size=w_size)


class LeJEPA(Method):
    """LeJEPA (Balestriero & LeCun 2025): every crop's embedding predicts the mean of the large
    crops', plus SIGReg (weight 0.05) pulling the embeddings toward an isotropic Gaussian. SIGReg
    uses 1024 random directions (sigreg_loss's default), 256 on images under 16 pixels (digits:
    there SIGReg dominates the step, and ``make train`` keeps to its budget)."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        self.online = contrastive_encoder(backbone)
        self.gather = distributed
        self.num_slices = 1024 if r.image_size >= 16 else 256

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z = forward_multicrop(self.online, views)
        return SF.lejepa_loss(
            z[:2], z[2:], num_slices=self.num_slices, gather_distributed=self.gather
        )


class SupCon(SimCLR):
    """Supervised contrastive learning (Khosla et al. 2020): the two views of every image of
    a class are its positives. Reads the labels; SimCLR's head and augmentations."""

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z = forward_multicrop(self.online, views[:2])
        return SF.supcon_loss(
            z, labels, temperature=self.temperature, base_temperature=self.temperature,
            gather_distributed=self.gather,
        )  # fmt: skip


class Supervised(Method):
    """The ceiling: the same backbone trained with cross-entropy on the labels, on one
    augmented view per image (the first of the pair the other methods get), same budget."""

    def __init__(self, backbone: ResNet, n_classes: int) -> None:
        super().__init__()
        self.online = Encoder(backbone, nn.Linear(backbone.out_dim, n_classes))

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        return F.cross_entropy(self.online(views[0]).float(), labels)


def build_method(cfg: Config, r: Resolved, data: Data, distributed: bool) -> Method:
    """Backbone first (so every method starts from the same weights for a seed), then heads."""
    backbone = ResNet(data.train_x.shape[1], r.width, BLOCKS[r.backbone], stem_stride=r.stem_stride)
    if r.method == "swav":
        return SwAV(backbone, r, distributed, cfg.swav_queue)
    if r.method in ("dino", "dino-sinkhorn", "dinov2"):
        sinkhorn = r.method != "dino"
        koleo = DINOV2_KOLEO_WEIGHT if r.method == "dinov2" else 0.0
        return DINO(backbone, r, distributed, sinkhorn=sinkhorn, koleo=koleo)
    if r.method == "barlow-twins":
        return BarlowTwins(backbone, r, distributed, cfg.barlow_lambda)
    if r.method == "supervised":
        return Supervised(backbone, data.n_classes)
    return SIMPLE_METHODS[r.method](backbone, r, distributed)


# the methods built from (backbone, resolved config, distributed) alone
SIMPLE_METHODS: dict[str, Callable[[ResNet, Resolved, bool], Method]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "simsiam": SimSiam,
    "vicreg": VICReg,
    "nnclr": NNCLR,
    "dcl": DCL,
    "align-uniform": AlignUniform,
    "mmcr": MMCR,
    "tico": TiCo,
    "wmse": WMSE,
    "lejepa": LeJEPA,
    "supcon": SupCon,
}
