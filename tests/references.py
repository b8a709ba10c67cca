"""The original formulations, written out plainly, as oracles for the tests.

Each function restates what the paper's official repository computes (named in its docstring),
in straightforward PyTorch, single process, with no attempt at speed or stability: the tests
compare sslosses against these in float64, values and gradients. Nothing here is imported by
the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


# --------------------------------------------------------------------------------------------
# MoCo v1/v2: He et al. 2020 (arXiv:1911.05722), Chen et al. 2020 (arXiv:2003.04297);
# facebookresearch/moco, moco/builder.py, MoCo.forward. MoCo v3: Chen et al. 2021
# (arXiv:2104.02057); facebookresearch/moco-v3, moco/builder.py, MoCo.contrastive_loss.
# --------------------------------------------------------------------------------------------
def moco_v2(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo v2: ``l_pos``/``l_neg`` logits + cross-entropy with label 0. ``queue`` is ``(K, D)``.

    The official code keeps the queue as ``(D, K)``; we pass its transpose.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1).detach()
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,ck->nk", q, queue.t())  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (N, 1 + K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels)


def moco_v3(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """MoCo v3 ``contrastive_loss`` without its final ``* 2 * T`` scale (single process).

    Keys are not detached here: in MoCo v3 they come from the momentum encoder and carry no
    gradient anyway; the tests pass leaf tensors and compare gradients w.r.t. both inputs.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1)
    logits = torch.einsum("nc,mc->nm", q, k) / temperature  # (N, N)
    labels = torch.arange(logits.shape[0])
    return F.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------
# SimCLR: Chen et al. 2020 (arXiv:2002.05709); google-research/simclr, objective.py,
# add_contrastive_loss (TensorFlow), restated in PyTorch. LARGE_NUM masks self-similarity.
# --------------------------------------------------------------------------------------------
LARGE_NUM = 1e9


def simclr_nt_xent(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """SimCLR's ``loss_a + loss_b`` divided by 2: the mean NT-Xent over the 2N anchors.

    The official code returns ``loss_a + loss_b`` (each a mean over N anchors); the paper's
    Algorithm 1 averages over all 2N anchors, which is half of that sum. sslosses follows the
    paper (as do lightly and solo-learn).
    """
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    n = a.shape[0]
    labels = torch.arange(n)
    masks = torch.eye(n, dtype=a.dtype)
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
def swav_sinkhorn(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """``distributed_sinkhorn`` for one process: plain exp, no stabilization. ``(B, K)`` in/out."""
    Q = torch.exp(scores / epsilon).t()  # (K, B)
    B = Q.shape[1]
    K = Q.shape[0]
    Q = Q / torch.sum(Q)
    for _ in range(iterations):
        Q = Q / torch.sum(Q, dim=1, keepdim=True)
        Q = Q / K
        Q = Q / torch.sum(Q, dim=0, keepdim=True)
        Q = Q / B
    Q = Q * B
    return Q.t()


def swav(
    scores: Sequence[Tensor],
    temperature: float,
    epsilon: float,
    iterations: int,
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
    loss = torch.zeros((), dtype=scores[0].dtype)
    for i, crop_id in enumerate(assign_crops):
        with torch.no_grad():
            out = scores[crop_id].detach()
            if queue_scores is not None:
                out = torch.cat([queue_scores[i].detach(), out])
            q = swav_sinkhorn(out, epsilon, iterations)[-bs:]
        subloss = torch.zeros((), dtype=scores[0].dtype)
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
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins(z_a: Tensor, z_b: Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> Tensor:
    """``on_diag + lambd * off_diag`` of the cross-correlation of batch-normalized views."""
    bn = torch.nn.BatchNorm1d(z_a.shape[1], affine=False, eps=eps).to(z_a.dtype)
    bn.train()
    c = bn(z_a).T @ bn(z_b)  # (D, D)
    c = c / z_a.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


# --------------------------------------------------------------------------------------------
# DINO: Caron et al. 2021 (arXiv:2104.14294); facebookresearch/dino, main_dino.py,
# DINOLoss.forward and DINOLoss.update_center (single process: all_reduce is the identity).
# --------------------------------------------------------------------------------------------
def dino(
    student_output: Tensor,
    teacher_output: Tensor,
    center: Tensor,
    ncrops: int,
    teacher_temp: float,
    student_temp: float = 0.1,
) -> Tensor:
    """``DINOLoss.forward`` without its center update.

    As the official code, ``student_output`` is all ``ncrops`` crops concatenated
    (``(ncrops * B, K)``, global crops first), ``teacher_output`` the global crops concatenated
    and ``center`` is ``(1, K)``. The official code chunks the teacher into 2 global crops; the
    number of teacher chunks here is ``len(teacher_output) // B`` (1 or 2).
    """
    batch = student_output.shape[0] // ncrops
    student_out = student_output / student_temp
    student_out = student_out.chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1)
    teacher_out = teacher_out.detach().chunk(teacher_output.shape[0] // batch)
    total_loss = torch.zeros((), dtype=student_output.dtype)
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
    cov_loss = off_diagonal(cov_x).pow(2).sum().div(num_features) + off_diagonal(cov_y).pow(
        2
    ).sum().div(num_features)
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
