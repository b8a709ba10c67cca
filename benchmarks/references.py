"""The original formulations, written out plainly: the one home of each method's formula.

Each function restates what the paper's official repository computes (named in its comment
block), in straightforward PyTorch, single process, with no attempt at stability. Two users
import this module, and nothing else restates these formulas:

- the tests (``tests/``, which import ``benchmarks.references``: pytest's ``pythonpath``
  setting puts the repository root on the path) compare
  sslosses against these in float64, values and gradients;
- the speed benchmark's baselines (``benchmarks/speed/baselines.py``) time them as the code people
  run today; where the official code works in place (Barlow Twins, VICReg), so does this one.

Baselines that intentionally differ from the originals (solo-learn's Barlow Twins, the plain
logits NT-Xent, the EMA loops, the per-image multi-crop pipeline) stay in
``benchmarks/speed/baselines.py``.
Nothing here is imported by the package. Sources are read for facts; no code is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------------------------
# MoCo v1/v2: He et al. 2020 (arXiv:1911.05722), Chen et al. 2020 (arXiv:2003.04297);
# facebookresearch/moco, moco/builder.py, MoCo.forward. MoCo v3: Chen et al. 2021
# (arXiv:2104.02057); facebookresearch/moco-v3, moco/builder.py, MoCo.contrastive_loss.
# --------------------------------------------------------------------------------------------
def moco_v2(query: Tensor, key: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo v2: ``l_pos``/``l_neg`` logits + cross-entropy with label 0.

    ``queue`` is ``(D, K)``, the official buffer's layout, used as ``queue.clone().detach()``;
    keys are detached.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1).detach()
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,ck->nk", q, queue.clone().detach())  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (N, 1 + K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def moco_v3(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """MoCo v3 ``contrastive_loss`` without its final ``* 2 * T`` scale (single process).

    Keys are not detached here: in MoCo v3 they come from the momentum encoder and carry no
    gradient anyway; the tests pass leaf tensors and compare gradients w.r.t. both inputs.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    logits = torch.einsum("nc,mc->nm", q, k) / temperature  # (N, N)
    labels = torch.arange(logits.shape[0], device=q.device)
    return F.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------
# SimCLR: Chen et al. 2020 (arXiv:2002.05709); google-research/simclr, objective.py,
# add_contrastive_loss (TensorFlow), restated in PyTorch. LARGE_NUM masks self-similarity.
# --------------------------------------------------------------------------------------------
LARGE_NUM = 1e9


def simclr_nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's ``loss_a + loss_b`` divided by 2: the mean NT-Xent over the 2N anchors.

    The official code returns ``loss_a + loss_b`` (each a mean over N anchors); the paper's
    Algorithm 1 averages over all 2N anchors, which is half of that sum. sslosses follows the
    paper (as do lightly and solo-learn).
    """
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    n = a.shape[0]
    labels = torch.arange(n, device=a.device)
    masks = torch.eye(n, dtype=a.dtype, device=a.device)
    logits_aa = a @ a.t() / temperature - masks * LARGE_NUM
    logits_bb = b @ b.t() / temperature - masks * LARGE_NUM
    logits_ab = a @ b.t() / temperature
    logits_ba = b @ a.t() / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return (loss_a + loss_b) / 2


# --------------------------------------------------------------------------------------------
# BYOL: Grill et al. 2020 (arXiv:2006.07733); google-deepmind/deepmind-research,
# byol/byol_experiment.py, regression_loss: 2 - 2 <p/|p|, z/|z|>, target under stop-gradient.
# --------------------------------------------------------------------------------------------
def _byol_l2_normalize(x: Tensor, epsilon: float = 1e-12) -> Tensor:
    """``l2_normalize`` of byol/utils/helpers.py: ``x * rsqrt(max(sum(x^2), epsilon))``."""
    square_sum = torch.sum(x**2, dim=-1, keepdim=True)
    return x * torch.rsqrt(torch.clamp(square_sum, min=epsilon))


def byol(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample BYOL ``regression_loss``, shape ``(N,)``: sum((p_hat - z_hat)^2)."""
    p = _byol_l2_normalize(prediction)
    z = _byol_l2_normalize(target.detach())
    return torch.sum((p - z) ** 2, dim=-1)


# --------------------------------------------------------------------------------------------
# SimSiam: Chen & He 2021 (arXiv:2011.10566); facebookresearch/simsiam, main_simsiam.py:
# criterion = nn.CosineSimilarity(dim=1); loss = -(criterion(p1, z2).mean() + ...) * 0.5,
# with z detached in simsiam/builder.py.
# --------------------------------------------------------------------------------------------
def simsiam(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample SimSiam loss ``-cos(p, stopgrad(z))``, shape ``(N,)``."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1)


# --------------------------------------------------------------------------------------------
# SwAV: Caron et al. 2020 (arXiv:2006.09882); facebookresearch/swav, main_swav.py,
# distributed_sinkhorn and the swapped-prediction loop in train().
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def swav_sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """``distributed_sinkhorn`` for one process: plain exp, no stabilization. ``(B, K)`` in/out.

    In place and without gradient, as the official function.
    """
    Q = torch.exp(scores / epsilon).t()  # (K, B)
    B = Q.shape[1]
    K = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def swav(
    scores: Sequence[Tensor],
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    assign_crops: Sequence[int] = (0, 1),
    queue_scores: Sequence[Tensor] | None = None,
) -> Tensor:
    """The swapped-prediction loss of ``train()`` in ``main_swav.py``.

    ``scores[v]`` is ``(B, K)``, the prototype scores of crop ``v`` (the official ``output``
    sliced per crop). ``queue_scores[i]``, when given, is ``(Q, K)``, the scores of the queued
    embeddings for assignment crop ``assign_crops[i]`` (``queue[i] @ prototypes.T``), prepended
    before Sinkhorn, after which only the last B rows (the batch) are kept.
    """
    n_crops = len(scores)
    bs = scores[0].shape[0]
    loss = scores[0].new_zeros(())
    for i, crop_id in enumerate(assign_crops):
        with torch.no_grad():
            out = scores[crop_id].detach()
            if queue_scores is not None:
                out = torch.cat([queue_scores[i].detach(), out])
            q = swav_sinkhorn(out, epsilon, iterations)[-bs:]
        subloss = scores[0].new_zeros(())
        for v in range(n_crops):
            if v == crop_id:
                continue
            x = scores[v] / temperature
            subloss = subloss - torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss = loss + subloss / (n_crops - 1)
    return loss / len(assign_crops)


# --------------------------------------------------------------------------------------------
# Barlow Twins: Zbontar et al. 2021 (arXiv:2103.03230); facebookresearch/barlowtwins, main.py,
# BarlowTwins.forward with self.bn = nn.BatchNorm1d(affine=False) in training mode.
# --------------------------------------------------------------------------------------------
def off_diagonal(x: Tensor) -> Tensor:
    """The official ``off_diagonal``: a flattened view of the off-diagonal elements."""
    n, m = x.shape
    if n != m:
        raise ValueError(f"x must be square, got {tuple(x.shape)}")
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class BarlowTwins(nn.Module):
    """The loss part of the official ``BarlowTwins`` module (one process, so no all-reduce).

    ``self.bn`` is built once, as in the official ``__init__``, and used in training mode on
    each view separately (batch statistics, biased variance, ``eps``). The in-place
    ``div_``/``add_``/``pow_`` are the official ones.
    """

    def __init__(self, dim: int, *, lambd: float = 0.0051, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambd = lambd
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=eps)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        batch_size = z1.shape[0]
        c = self.bn(z1).T @ self.bn(z2)  # (D, D)
        c.div_(batch_size)
        on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
        off_diag = off_diagonal(c).pow_(2).sum()
        return on_diag + self.lambd * off_diag


def barlow_twins(z_a: Tensor, z_b: Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> Tensor:
    """``on_diag + lambd * off_diag`` of the cross-correlation of batch-normalized views."""
    module = BarlowTwins(z_a.shape[1], lambd=lambd, eps=eps).to(z_a.device, z_a.dtype)
    return module(z_a, z_b)


# --------------------------------------------------------------------------------------------
# DINO: Caron et al. 2021 (arXiv:2104.14294); facebookresearch/dino, main_dino.py,
# DINOLoss.forward and DINOLoss.update_center (single process: all_reduce is the identity).
# --------------------------------------------------------------------------------------------
def dino(
    student_output: Tensor,
    teacher_output: Tensor,
    center: Tensor,
    ncrops: int,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
) -> Tensor:
    """``DINOLoss.forward`` without its center update.

    As the official code, ``student_output`` is all ``ncrops`` crops concatenated
    (``(ncrops * B, K)``, global crops first), ``teacher_output`` the global crops concatenated
    and ``center`` is ``(1, K)``. The official code chunks the teacher into 2 global crops; the
    number of teacher chunks here is ``len(teacher_output) // B`` (1 or 2).
    """
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1)
    return dino_from_targets(student_output, teacher_out, ncrops, student_temp)


def dino_from_targets(
    student_output: Tensor, teacher_probs: Tensor, ncrops: int, student_temp: float = 0.1
) -> Tensor:
    """The cross-entropy part of ``DINOLoss.forward`` on given teacher targets ``(G B, K)``
    (the softmax of the centered teacher there; DINOv2's Sinkhorn-Knopp targets here)."""
    batch = student_output.shape[0] // ncrops
    student_out = student_output / student_temp
    student_out = student_out.chunk(ncrops)
    teacher_out = teacher_probs.detach().chunk(teacher_probs.shape[0] // batch)
    total_loss = student_output.new_zeros(())
    n_loss_terms = 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue  # same view for student and teacher
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss = total_loss + loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


def dino_update_center(center: Tensor, teacher_output: Tensor, center_momentum: float) -> Tensor:
    """``DINOLoss.update_center``: returns the new ``(1, K)`` center."""
    batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
    batch_center = batch_center / len(teacher_output)  # world size 1
    return center * center_momentum + batch_center * (1 - center_momentum)


# --------------------------------------------------------------------------------------------
# DINOv2: Oquab et al., TMLR 2024 (arXiv:2304.07193); facebookresearch/dinov2,
# dinov2/loss/dino_clstoken_loss.py (DINOLoss.sinkhorn_knopp_teacher) and
# dinov2/loss/ibot_patch_loss.py (iBOTPatchLoss.forward, forward_masked, update_center,
# sinkhorn_knopp_teacher), one process (world_size = 1, no all_reduce).
# --------------------------------------------------------------------------------------------
def dinov2_sinkhorn_knopp_teacher(
    teacher_output: Tensor, teacher_temp: float, n_iterations: int = 3
) -> Tensor:
    """``sinkhorn_knopp_teacher`` (dino_clstoken_loss.py; ibot_patch_loss.py the same with
    ``B`` the number of masked patches, which is the number of rows given here).

    ``teacher_output`` is ``(B, K)``: the rows normalized together (DINOv2 passes both global
    crops' class tokens as one batch). Exponentiates directly, as the original does.
    """
    q = torch.exp(teacher_output / teacher_temp).t()  # (K, B)
    n_samples, n_prototypes = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(n_iterations):
        q = q / q.sum(dim=1, keepdim=True)  # every prototype: mass 1 / K
        q = q / n_prototypes
        q = q / q.sum(dim=0, keepdim=True)  # every sample: mass 1 / B
        q = q / n_samples
    q = q * n_samples
    return q.t()


def ibot_forward(
    student_patch_tokens: Tensor,
    teacher_probs: Tensor,
    student_masks_flat: Tensor,
    student_temp: float = 0.1,
) -> Tensor:
    """``iBOTPatchLoss.forward``: ``(B, P, K)`` student scores, ``(B, P, K)`` teacher targets
    (probabilities, already centered or Sinkhorn-normalized) and ``(B, P)`` masks."""
    per_patch = torch.sum(
        teacher_probs * F.log_softmax(student_patch_tokens / student_temp, -1), -1
    )
    masks = student_masks_flat.float()
    per_image = torch.sum(per_patch * masks.to(per_patch.dtype), dim=-1)
    per_image = per_image / student_masks_flat.sum(dim=-1).clamp(min=1.0)
    return -per_image.mean()


def ibot_forward_masked(
    student_masked: Tensor,
    teacher_masked_probs: Tensor,
    student_masks_flat: Tensor,
    student_temp: float = 0.1,
    n_masked_patches: int | None = None,
    masks_weight: Tensor | None = None,
) -> Tensor:
    """``iBOTPatchLoss.forward_masked`` (the fallback ``lossfunc`` without xformers): ``(M, K)``
    masked rows (``tokens[masks]``), ``(B, P)`` masks, optional truncation and row weights."""
    per_row = torch.sum(teacher_masked_probs * F.log_softmax(student_masked / student_temp, -1), -1)
    if masks_weight is None:
        # the counts in the loss's dtype (float32 in the original's float32 training), so that
        # a float64 comparison is not limited by 1 / count rounded to float32
        counts = student_masks_flat.sum(-1).clamp(min=1.0).to(per_row.dtype)  # (B,)
        masks_weight = (1 / counts).unsqueeze(-1).expand_as(student_masks_flat)
        masks_weight = masks_weight[student_masks_flat]
    if n_masked_patches is not None:
        per_row = per_row[:n_masked_patches]
    per_row = per_row * masks_weight
    return -per_row.sum() / student_masks_flat.shape[0]


def ibot_update_center(
    center: Tensor, teacher_patch_tokens: Tensor, center_momentum: float
) -> Tensor:
    """``iBOTPatchLoss.update_center`` with ``apply_center_update``: returns the new center."""
    batch_center = torch.sum(teacher_patch_tokens.mean(1), dim=0, keepdim=True)
    batch_center = batch_center / len(teacher_patch_tokens)  # world size 1
    return center * center_momentum + batch_center * (1 - center_momentum)


# --------------------------------------------------------------------------------------------
# VICReg: Bardes, Ponce, LeCun, ICLR 2022 (arXiv:2105.04906); facebookresearch/vicreg,
# main_vicreg.py, VICReg.forward after the projector, one process (no FullGatherLayer), with
# num_features = D and args.batch_size = N.
# --------------------------------------------------------------------------------------------
def vicreg_terms(x: Tensor, y: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """``(repr_loss, std_loss, cov_loss)`` as the official forward computes them."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features)
    cov_loss = cov_loss + off_diagonal(cov_y).pow_(2).sum().div(num_features)
    return repr_loss, std_loss, cov_loss


def vicreg(
    x: Tensor,
    y: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """``sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss``."""
    repr_loss, std_loss, cov_loss = vicreg_terms(x, y, eps)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


# --------------------------------------------------------------------------------------------
# KoLeo: Sablayrolles et al., ICLR 2019 (arXiv:1806.03198), the regularizer of DINOv2, Oquab et
# al. 2023 (arXiv:2304.07193); facebookresearch/dinov2, dinov2/loss/koleo_loss.py, KoLeoLoss
# (its __init__ builds nn.PairwiseDistance(2, eps=1e-8); forward takes eps=1e-8).
# --------------------------------------------------------------------------------------------
def koleo(x: Tensor, eps: float = 1e-8, pairwise_eps: float = 1e-8) -> Tensor:
    """``KoLeoLoss.forward(x, eps)``, with ``pairwise_eps`` the ``PairwiseDistance``'s eps.

    Rows L2-normalized with ``eps``; the N x N inner products with the diagonal set to -1;
    each row's neighbour is the argmax (``torch.max``: the first maximum); the distance is
    ``nn.PairwiseDistance(2, eps=pairwise_eps)`` (``||a - b + eps||_2``); the loss is
    ``-mean(log(distance + eps))``. The original turns CUDA autocast off; this turns it off on
    ``x``'s device.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = F.normalize(x, eps=eps, p=2, dim=-1)  # (N, D)
        dots = torch.mm(x, x.t())  # (N, N)
        dots.fill_diagonal_(-1)
        nearest = torch.max(dots, dim=1).indices  # (N,)
        distances = nn.PairwiseDistance(2, eps=pairwise_eps)(x, x[nearest])  # (N,)
        return -torch.log(distances + eps).mean()


# --------------------------------------------------------------------------------------------
# MMCR: Yerxa et al., NeurIPS 2023 (arXiv:2303.03307); ThomasYerxa/mmcr,
# mmcr/imagenet/loss_mmcr.py, MMCR_Loss.forward (one process: no all_gather), and
# loss_mmcr_momentum.py, MMCR_Momentum_Loss.forward. Both default lmbda to 0 in their scripts.
# --------------------------------------------------------------------------------------------
def mmcr(z: Tensor, n_aug: int, lmbda: float = 0.0, z_momentum: Tensor | None = None) -> Tensor:
    """``MMCR_Loss(lmbda, n_aug)(z)`` (or ``MMCR_Momentum_Loss`` with ``z_momentum``).

    ``z`` is ``(B * n_aug, C)``, sample-major (rows ``b * n_aug`` to ``b * n_aug + n_aug - 1``
    are sample ``b``'s views). Rows L2-normalized (``F.normalize``); each sample's ``C x n_aug``
    matrix of views; the centroids are their means over the views (with a momentum output, the
    average of the two networks' means); the loss is
    ``lmbda * sum(svdvals(per-sample matrices)) / B - sum(svdvals(centroids))``, the per-sample
    term of the online views only.
    """
    z = F.normalize(z, dim=-1)
    local = z.reshape(-1, n_aug, z.shape[-1]).permute(0, 2, 1)  # (B, C, n_aug)
    centroids = local.mean(dim=-1)  # (B, C)
    if z_momentum is not None:
        zm = F.normalize(z_momentum, dim=-1)
        local_m = zm.reshape(-1, n_aug, zm.shape[-1]).permute(0, 2, 1)
        centroids = (centroids + local_m.mean(dim=-1)) * 0.5
    local_nuc = torch.linalg.svdvals(local).sum() if lmbda != 0.0 else torch.zeros(())
    global_nuc = torch.linalg.svdvals(centroids).sum()
    return lmbda * local_nuc / local.shape[0] - global_nuc


# --------------------------------------------------------------------------------------------
# TiCo: Zhu et al. 2022 (arXiv:2206.10698, Algorithm 1); no official code. lightly
# lightly/loss/tico_loss.py, TiCoLoss.forward (one process), which the paper's formula matches.
# --------------------------------------------------------------------------------------------
def tico(
    z_a: Tensor, z_b: Tensor, running: Tensor, beta: float = 0.9, rho: float = 8.0
) -> tuple[Tensor, Tensor]:
    """``TiCoLoss(beta, rho)(z_a, z_b)`` with ``self.C = running``: the loss and the new ``C``.

    Rows L2-normalized; ``B = z_a^T z_a / N`` (detached); ``C = beta * running + (1 - beta) * B``;
    the loss is ``1 - mean_i <z_a_i, z_b_i> + rho * mean_i (z_a C)_i . z_a_i``; lightly then
    stores ``C`` (detached) as its state for the next call.
    """
    z_a = F.normalize(z_a, dim=1)
    z_b = F.normalize(z_b, dim=1)
    batch = torch.mm(z_a.T, z_a).detach() / z_a.shape[0]
    c = beta * running + (1 - beta) * batch
    invariance = 1.0 - (z_a * z_b).sum(dim=1).mean()
    contrast = rho * (torch.mm(z_a, c) * z_a).sum(dim=1).mean()
    return invariance + contrast, c.detach()


# --------------------------------------------------------------------------------------------
# W-MSE: Ermolov et al., ICML 2021 (arXiv:2007.06346); htdt/self-supervised, methods/w_mse.py
# (WMSE.forward), methods/whitening.py (Whitening2d in training mode, track_running_stats=False
# as WMSE builds it) and methods/norm_mse.py (norm_mse_loss; F.mse_loss with --no_norm).
# --------------------------------------------------------------------------------------------
def whitening2d(x: Tensor, eps: float = 0.0) -> Tensor:
    """``Whitening2d(D, eps=eps)(x)`` in training mode: ``(x - mean) @ L^{-1}^T``, with ``L`` the
    Cholesky factor of ``(1 - eps) * cov + eps * I`` (``cov`` divided by ``N - 1``) and ``L^{-1}``
    from ``solve_triangular(L, I)``; the original applies it as a 1x1 ``conv2d``."""
    d = x.shape[1]
    xn = x - x.mean(dim=0, keepdim=True)
    cov = xn.T @ xn / (x.shape[0] - 1)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    inv_sqrt = torch.linalg.solve_triangular(
        torch.linalg.cholesky((1 - eps) * cov + eps * eye), eye, upper=False
    )
    return F.conv2d(xn[:, :, None, None], inv_sqrt[:, :, None, None])[:, :, 0, 0]


def wmse(
    h: Tensor,
    num_samples: int,
    w_size: int,
    perms: Sequence[Tensor],
    eps: float = 0.0,
    norm: bool = True,
) -> Tensor:
    """``WMSE.forward`` on the head outputs ``h`` (``num_samples`` views of ``bs`` rows, view
    after view), with ``perms[k]`` the ``torch.randperm(bs)`` of iteration ``k``."""
    bs = h.shape[0] // num_samples
    loss = h.new_zeros(())
    for perm in perms:
        z = torch.empty_like(h)
        for idx in perm.view(-1, w_size):
            for i in range(num_samples):
                z[idx + i * bs] = whitening2d(h[idx + i * bs], eps)
        for i in range(num_samples - 1):
            for j in range(i + 1, num_samples):
                x0, x1 = z[i * bs : (i + 1) * bs], z[j * bs : (j + 1) * bs]
                if norm:
                    loss = loss + 2 - 2 * (F.normalize(x0) * F.normalize(x1)).sum(dim=-1).mean()
                else:
                    loss = loss + F.mse_loss(x0, x1)
    return loss / (len(perms) * num_samples * (num_samples - 1) // 2)


# --------------------------------------------------------------------------------------------
# LeJEPA: Balestriero & LeCun 2025 (arXiv:2511.08544). lightly lightly/loss/lejepa_loss.py
# (SIGReg.forward one process, given its random directions A; LeJEPALoss.forward;
# lejepa_invariance_loss), and the paper's form with the complex characteristic function on the
# symmetric grid.
# --------------------------------------------------------------------------------------------
def lightly_sigreg(proj: Tensor, a: Tensor, knots: int = 17, t_max: float = 3.0) -> Tensor:
    """``SIGReg(knots, t_max)(proj)`` with the unit directions ``a`` (D, S): frequencies
    ``linspace(0, t_max, knots)``, trapezoid weights ``[dt, 2dt, ..., 2dt, dt]`` times
    ``exp(-t^2 / 2)``; per direction ``N * sum_k w_k ((mean cos - phi)^2 + mean sin^2)``, the
    mean over directions (and leading dimensions)."""
    t = torch.linspace(0, t_max, knots, dtype=proj.dtype)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=proj.dtype)
    weights[[0, -1]] = dt
    phi = torch.exp(-t.square() / 2.0)
    n = proj.size(-2)
    x_t = (proj @ a).unsqueeze(-1) * t
    err = (x_t.cos().sum(-3) / n - phi).square() + (x_t.sin().sum(-3) / n).square()
    return ((err @ (weights * phi)) * n).mean()


def paper_sigreg(proj: Tensor, a: Tensor, knots: int = 17, t_max: float = 3.0) -> Tensor:
    """The paper's Epps-Pulley form: ``ecf = mean exp(i t x)`` on ``linspace(-t_max, t_max,
    2 knots - 1)``, ``N * trapezoid(|ecf - phi|^2 phi, t)``, the mean over directions."""
    t = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=proj.dtype)
    phi = torch.exp(-0.5 * t.square())
    x_t = (proj @ a).unsqueeze(-1) * t
    ecf = torch.exp(1j * x_t).mean(dim=-3)
    err = (ecf - phi).abs().square() * phi
    return (torch.trapezoid(err, t, dim=-1) * proj.size(-2)).mean()


def lightly_lejepa(
    local_proj: Tensor, global_proj: Tensor, a: Tensor, lambda_param: float = 0.05
) -> Tensor:
    """``LeJEPALoss(lambda_param)(local_proj=..., global_proj=...)`` with directions ``a``."""
    all_proj = torch.cat([global_proj, local_proj], dim=0)
    invariance = (global_proj.mean(0) - all_proj).square().mean()
    return lambda_param * lightly_sigreg(all_proj, a) + (1.0 - lambda_param) * invariance


# --------------------------------------------------------------------------------------------
# SupCon: Khosla et al., NeurIPS 2020 (arXiv:2004.11362); HobbitLong/SupContrast, losses.py,
# SupConLoss(temperature=0.07, contrast_mode="all", base_temperature=0.07).forward(features,
# labels): features (N, V, D), already normalized by the model; no process group.
# --------------------------------------------------------------------------------------------
def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float = 0.07,
    contrast_mode: str = "all",
    base_temperature: float = 0.07,
) -> Tensor:
    """``SupConLoss.forward(features, labels)``: the dense ``(A, V N)`` formulation.

    The views are stacked view-major into ``V N`` candidates; the anchors are all of them
    (``"all"``) or the first view (``"one"``). The ``N x N`` same-label mask (the identity
    without labels) is tiled to ``(A, V N)`` and each anchor's own column is removed from it
    and from the softmax's denominator. Logits are shifted by their detached row maximum, the
    log-probabilities averaged over each anchor's positives (a count of 0 replaced by 1, as
    the original's current code does) and scaled by ``-temperature / base_temperature``; the
    loss is the mean over anchors.
    """
    n, v = features.shape[0], features.shape[1]
    same = torch.eye(n) if labels is None else (labels[:, None] == labels[None, :])
    same = same.to(features)  # (N, N)
    contrast = torch.cat(torch.unbind(features, dim=1))  # (V N, D)
    anchor, count = (contrast, v) if contrast_mode == "all" else (features[:, 0], 1)
    scores = anchor @ contrast.T / temperature  # (A, V N)
    logits = scores - scores.max(dim=1, keepdim=True).values.detach()
    not_self = torch.ones_like(scores)
    not_self[torch.arange(n * count), torch.arange(n * count)] = 0
    positive = same.repeat(count, v) * not_self  # (A, V N)
    denominator = (torch.exp(logits) * not_self).sum(dim=1, keepdim=True)  # (A, 1)
    log_prob = logits - torch.log(denominator)
    n_positive = positive.sum(dim=1)
    n_positive = torch.where(n_positive < 1e-6, torch.ones_like(n_positive), n_positive)
    mean_log_prob = (positive * log_prob).sum(dim=1) / n_positive  # (A,)
    return (-(temperature / base_temperature) * mean_log_prob).reshape(count, n).mean()


# --------------------------------------------------------------------------------------------
# DCL / DCLW: Yeh et al., "Decoupled Contrastive Learning", ECCV 2022 (arXiv:2110.06848), Eq. 6;
# as lightly computes it (lightly/loss/dcl_loss.py, DCLLoss._loss and
# negative_mises_fisher_weights): normalized views, one direction's positive -<a_n, b_n> / tau
# (times the weight) plus the log-sum-exp over the 2N - 2 similarities left when a_n and b_n are
# dropped, mean over n, then the mean of the two directions. The weight is
# 2 - N softmax_n(<a_n, b_n> / sigma) of the detached views.
# --------------------------------------------------------------------------------------------
def dcl(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, sigma: float | None = None) -> Tensor:
    """DCL (``sigma=None``) or DCLW (the von Mises-Fisher weight at ``sigma``), single process."""
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    n = a.shape[0]
    weight = torch.ones(n, dtype=a.dtype, device=a.device)
    if sigma is not None:
        cosines = (a.detach() * b.detach()).sum(dim=1)  # (N,)
        weight = 2 - n * torch.softmax(cosines / sigma, dim=0)

    def one_direction(x: Tensor, y: Tensor) -> Tensor:
        similarities = torch.cat([x @ x.t(), x @ y.t()], dim=1) / temperature  # (N, 2N)
        same = torch.eye(n, dtype=torch.bool, device=x.device)
        keep = ~torch.cat([same, same], dim=1)  # drop x_n (itself) and y_n (its positive)
        negatives = similarities[keep].reshape(n, 2 * n - 2)  # (N, 2N - 2)
        positive = (x * y).sum(dim=1) / temperature  # (N,)
        return (-weight * positive + torch.logsumexp(negatives, dim=1)).mean()

    return (one_direction(a, b) + one_direction(b, a)) / 2


# --------------------------------------------------------------------------------------------
# Alignment and uniformity: Wang & Isola, ICML 2020 (arXiv:2005.10242); SsnL/align_uniform,
# align_uniform/__init__.py: align_loss(x, y, alpha=2) is the mean over rows of the L2 norm of
# x - y to the power alpha; uniform_loss(x, t=2) is the log of the mean of exp(-t d^2) over the
# torch.pdist distances d (the N (N - 1) / 2 pairs i < j). Both take the features as given
# (the original's callers normalize them first).
# --------------------------------------------------------------------------------------------
def align(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """``align_loss(x, y, alpha)``: ``mean_n ||x_n - y_n||_2 ** alpha``."""
    return torch.linalg.vector_norm(x - y, ord=2, dim=1).pow(alpha).mean()


def uniform(x: Tensor, t: float = 2.0) -> Tensor:
    """``uniform_loss(x, t)``: ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` through ``pdist``."""
    squared = torch.pdist(x, p=2).pow(2)  # (N (N - 1) / 2,)
    return torch.exp(-t * squared).mean().log()


# --------------------------------------------------------------------------------------------
# Colour and blur of one (3, H, W) image in [0, 1], as torchvision's tensor transforms define
# them (pytorch/vision, torchvision/transforms/_functional_tensor.py: rgb_to_grayscale,
# adjust_brightness/contrast/saturation/hue via _blend, _rgb2hsv, _hsv2rgb, gaussian_blur),
# the operations of the SimCLR/BYOL/SwAV/DINO colour distortion. HSV follows colorsys.
# --------------------------------------------------------------------------------------------
def gray(img: Tensor) -> Tensor:
    """ITU-R 601-2 luma of a ``(3, H, W)`` image, shape ``(1, H, W)``."""
    r, g, b = img.unbind(0)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def _blend(img: Tensor, other: Tensor, factor: float) -> Tensor:
    return (factor * img + (1 - factor) * other).clamp_(0, 1)


def rgb_to_hsv(img: Tensor) -> Tensor:
    """``colorsys.rgb_to_hsv`` over the pixels of a ``(3, H, W)`` image: ``(3, H, W)`` h, s, v."""
    r, g, b = img.unbind(0)
    maxc = img.max(dim=0).values
    minc = img.min(dim=0).values
    delta = maxc - minc
    v = maxc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc = (maxc - r) / safe
    gc = (maxc - g) / safe
    bc = (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    h = (h / 6.0) % 1.0
    return torch.stack([h, s, v])


def hsv_to_rgb(img: Tensor) -> Tensor:
    """``colorsys.hsv_to_rgb`` over the pixels of a ``(3, H, W)`` h, s, v image."""
    h, s, v = img.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    sector = torch.arange(6, device=img.device).view(6, 1, 1) == i.unsqueeze(0)  # (6, H, W)
    r = torch.stack([v, q, p, p, t, v])
    g = torch.stack([t, v, v, q, p, p])
    b = torch.stack([p, p, t, v, v, q])
    return torch.stack([(c * sector).sum(0) for c in (r, g, b)])


def adjust_hue(img: Tensor, shift: float) -> Tensor:
    """Rotate the hue by ``shift`` (a fraction of the circle)."""
    hsv = rgb_to_hsv(img)
    hsv[0] = (hsv[0] + shift) % 1.0
    return hsv_to_rgb(hsv)


def jitter_op(img: Tensor, op: int, factor: float) -> Tensor:
    """One ``ColorJitter`` operation: 0 brightness, 1 contrast, 2 saturation, 3 hue."""
    if op == 0:  # brightness: blend with black
        return (img * factor).clamp_(0, 1)
    if op == 1:  # contrast: blend with the mean luma
        return _blend(img, gray(img).mean(), factor)
    if op == 2:  # saturation: blend with the luma
        return _blend(img, gray(img), factor)
    return adjust_hue(img, factor)


def gaussian_blur(img: Tensor, sigma: float, kernel_size: int) -> Tensor:
    """Gaussian blur of a ``(C, H, W)`` image with reflection padding (separable, exact)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=img.dtype, device=img.device)
    k1 = torch.exp(-0.5 * (x / sigma) ** 2)
    k1 = k1 / k1.sum()
    c = img.shape[0]
    pad = kernel_size // 2
    out = F.pad(img.unsqueeze(0), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, k1.view(1, 1, 1, kernel_size).expand(c, 1, 1, kernel_size), groups=c)
    out = F.conv2d(out, k1.view(1, 1, kernel_size, 1).expand(c, 1, kernel_size, 1), groups=c)
    return out.squeeze(0)


# --------------------------------------------------------------------------------------------
# NNCLR: Dwibedi et al., ICCV 2021 (arXiv:2104.14548): NN(z, Q) = argmin_q ||z - q||_2 over
# L2-normalized rows (Sec. 3.2), Eq. 2, the symmetric term of Sec. 3.3 and Algorithm 1's
# loss = L(NN1, p2) / 2 + L(NN2, p1) / 2 with L = cross_entropy(nn @ p.T / T, range(N)). No
# official code was released; vturrisi/solo-learn, solo/methods/nnclr.py (find_nn) and
# solo/losses/nnclr.py (nnclr_loss_func) compute Algorithm 1 the same way (one process).
# --------------------------------------------------------------------------------------------
def nnclr_nn(z: Tensor, support: Tensor) -> Tensor:
    """``NN(z, Q)``: the support row at the smallest L2 distance of each normalized query.

    Distances between all normalized pairs, written out (no matmul identity); the first
    minimum on ties. Returns the support's rows as stored, detached.
    """
    z = F.normalize(z, dim=1)  # (N, D)
    q = F.normalize(support, dim=1)  # (K, D)
    distances = (z[:, None, :] - q[None, :, :]).norm(dim=2)  # (N, K)
    return support[distances.argmin(dim=1)].detach()  # (N, D)


def nnclr_contrast(nn_rows: Tensor, p: Tensor, temperature: float, symmetric: bool) -> Tensor:
    """Algorithm 1's ``L(nn, p)``: Eq. 2 (rows of ``nn @ p.T``), with ``symmetric`` averaged
    with the Sec. 3.3 term (the columns: each prediction against the in-batch neighbours)."""
    nn_rows = F.normalize(nn_rows, dim=1)
    p = F.normalize(p, dim=1)
    logits = nn_rows @ p.T / temperature  # (N, N)
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels)) / 2
    return loss


def nnclr(
    z_a: Tensor,
    z_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    support: Tensor,
    temperature: float = 0.1,
    symmetric: bool = True,
) -> Tensor:
    """NNCLR's loss: ``L(NN(z_a), p_b) / 2 + L(NN(z_b), p_a) / 2`` (Algorithm 1)."""
    nn_a = nnclr_nn(z_a, support)
    nn_b = nnclr_nn(z_b, support)
    return (
        nnclr_contrast(nn_a, p_b, temperature, symmetric) / 2
        + nnclr_contrast(nn_b, p_a, temperature, symmetric) / 2
    )
