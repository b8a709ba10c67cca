"""Baselines for ``python -m benchmarks.speed``: each computation as the original code writes it.

These restate, in plain PyTorch and single process, the code that people run today, so that the
speed benchmark compares sslosses with what it replaces rather than with a straw man. Each
function names its source. The original formulations themselves (official Barlow Twins,
VICReg, SimCLR, MoCo, SwAV, BYOL, SimSiam, DINO, and the colour operations of the multi-crop
loop) live in ``references.py``, shared with the tests; this module imports them and adds the
baselines that intentionally differ from them (solo-learn, the plain logits matrix, the EMA
loops, the per-image multi-crop pipeline). Nothing here is imported by the package; the smoke test
(``tests/test_benchmarks_smoke.py``) checks that every baseline computes the same value as the
sslosses function it is timed against.

Sources (read for facts; no code is copied):

- Barlow Twins, official: facebookresearch/barlowtwins ``main.py`` (``BarlowTwins.forward``,
  ``off_diagonal``): ``BatchNorm1d(affine=False)`` on each view, ``c = bn(z1).T @ bn(z2)``,
  ``c.div_(batch_size)``, in-place ``diagonal(c).add_(-1).pow_(2).sum()`` and
  ``off_diagonal(c).pow_(2).sum()``.
- Barlow Twins, solo-learn: vturrisi/solo-learn ``solo/losses/barlow.py``
  (``barlow_loss_func``): a fresh ``BatchNorm1d(D, affine=False)`` per call, ``einsum`` for
  ``c``, ``(c - eye).pow(2)``, off-diagonal entries scaled through a boolean mask, times
  ``scale_loss``.
- VICReg, official: facebookresearch/vicreg ``main_vicreg.py`` (``VICReg.forward``, one process
  so no ``FullGatherLayer``): ``F.mse_loss``, centring, ``sqrt(var + 1e-4)`` hinge, and
  ``off_diagonal(x.T @ x / (N - 1)).pow_(2).sum() / D`` per view.
- NT-Xent, the plain logits matrix: the ``(2N, 2N)`` cosine-similarity matrix of both views,
  self-similarity masked out, cross-entropy against the other view (SimCLR, arXiv:2002.05709).
- InfoNCE with a queue: facebookresearch/moco ``moco/builder.py`` (``MoCo.forward``):
  ``l_pos``/``l_neg`` einsums against the ``(D, K)`` queue, ``logits / T``, label 0.
- SwAV: facebookresearch/swav ``main_swav.py`` (``distributed_sinkhorn`` and the
  swapped-prediction loop of ``train``).
- BYOL: google-deepmind/deepmind-research ``byol/byol_experiment.py`` (``regression_loss``).
- SimSiam: facebookresearch/simsiam ``main_simsiam.py`` (``nn.CosineSimilarity``).
- EMA: the per-parameter loop of facebookresearch/moco ``moco/builder.py``
  (``_momentum_update_key_encoder``: ``param_k.data = param_k.data * m + param_q.data * (1 - m)``,
  the same out-of-place form as lightly's ``update_momentum`` and solo-learn's
  ``MomentumUpdater.update``), and an in-place variant of that loop
  (``p_t.data.mul_(m).add_((1 - m) * p_o.data)``) as a stronger baseline.
- SupCon: HobbitLong/SupContrast ``losses.py`` (``SupConLoss.forward``, restated in
  ``references.supcon``), on the features its model's head L2-normalizes
  (``networks/resnet_big.py``, ``SupConResNet.forward``): the tiled ``(V N, V N)`` masks and
  logits.
- NNCLR, lightly: ``lightly/models/modules/nn_memory_bank.py`` (``NNMemoryBankModule``, the
  full ``(N, K)`` similarity matrix against the cloned, normalized bank) and
  ``lightly/loss/ntx_ent_loss.py`` (``NTXentLoss``, four ``(N, N)`` blocks), combined as in
  lightly's NNCLR example; solo-learn: ``solo/methods/nnclr.py`` (``find_nn``) and
  ``solo/losses/nnclr.py`` (``nnclr_loss_func``), NNCLR's Algorithm 1.
- DCL: lightly's ``DCLLoss`` (``lightly/loss/dcl_loss.py``): per direction two ``(N, N)``
  similarity matrices, boolean masks that drop the positive and the self-similarity, a
  concatenation and a log-sum-exp (:func:`references.dcl`).
- Uniformity: SsnL/align_uniform ``uniform_loss`` on normalized features: ``torch.pdist``
  over the ``N (N - 1) / 2`` pairs, then ``pow``, ``mul``, ``exp``, ``mean``, ``log``
  (:func:`references.uniform`).
- Multi-crop: the per-image, per-crop pipeline of facebookresearch/swav
  ``src/multicropdataset.py`` (torchvision ``RandomResizedCrop``, ``RandomHorizontalFlip``,
  ``ColorJitter`` with ``p=0.8``, ``RandomGrayscale``, Gaussian blur, ``Normalize``), written
  with tensor ops on one image at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import references
from benchmarks.references import BarlowTwins as OfficialBarlowTwins
from benchmarks.references import dcl as lightly_dcl
from benchmarks.references import koleo as dinov2_koleo
from benchmarks.references import lightly_sigreg, off_diagonal, simclr_nt_xent
from benchmarks.references import mmcr as original_mmcr
from benchmarks.references import supcon as supcontrast_supcon
from benchmarks.references import tico as lightly_tico
from benchmarks.references import vicreg as official_vicreg
from benchmarks.references import wmse as original_wmse

__all__ = [
    "ColorJitterConfig",
    "MultiCropConfig",
    "OfficialBarlowTwins",
    "byol_loss",
    "dinov2_koleo",
    "ema_loop_",
    "ema_moco_",
    "lightly_dcl",
    "lightly_nearest_neighbours",
    "lightly_nnclr",
    "lightly_nt_xent",
    "lightly_sigreg",
    "lightly_tico",
    "moco_info_nce",
    "multicrop_loop",
    "off_diagonal",
    "official_vicreg",
    "original_mmcr",
    "original_wmse",
    "plain_nt_xent",
    "resnet50_parameter_shapes",
    "simclr_nt_xent",
    "simsiam_loss",
    "solo_learn_barlow_twins",
    "solo_learn_nnclr",
    "supcontrast_supcon",
    "swav_loss",
    "uniformity_pdist",
]


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------
def solo_learn_barlow_twins(
    z1: Tensor, z2: Tensor, *, lamb: float = 0.0051, scale_loss: float = 1.0, eps: float = 1e-5
) -> Tensor:
    """solo-learn's ``barlow_loss_func`` (single process).

    solo-learn defaults to ``lamb=5e-3`` and ``scale_loss=0.025``; the benchmark passes
    ``lamb=0.0051`` and ``scale_loss=1.0`` so that the value equals the official loss (the
    cost does not depend on these constants).
    """
    n, d = z1.shape
    bn = nn.BatchNorm1d(d, affine=False, eps=eps).to(device=z1.device, dtype=z1.dtype)
    z1 = bn(z1)
    z2 = bn(z2)
    corr = torch.einsum("bi, bj -> ij", z1, z2) / n  # (D, D)
    diag = torch.eye(d, device=corr.device, dtype=corr.dtype)
    cdif = (corr - diag).pow(2)
    cdif[~diag.bool()] *= lamb
    return scale_loss * cdif.sum()


# --------------------------------------------------------------------------------------------
# NT-Xent and InfoNCE
# --------------------------------------------------------------------------------------------
def plain_nt_xent(z_a: Tensor, z_b: Tensor, *, temperature: float = 0.1) -> Tensor:
    """NT-Xent over the full ``(2N, 2N)`` logits matrix, mean over the 2N anchors."""
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b], dim=0), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, labels)


def uniformity_pdist(x: Tensor, *, t: float = 2.0) -> Tensor:
    """``uniform_loss`` of SsnL/align_uniform on the L2-normalized rows (:func:`references.uniform`;
    the original's callers normalize the features first)."""
    return references.uniform(F.normalize(x, dim=1), t)


def moco_info_nce(q: Tensor, k: Tensor, queue: Tensor, *, temperature: float = 0.2) -> Tensor:
    """MoCo v1/v2 loss (:func:`references.moco_v2`): ``queue`` is ``(D, K)``, keys detached."""
    return references.moco_v2(q, k, queue, temperature)


# --------------------------------------------------------------------------------------------
# SwAV, BYOL, SimSiam
# --------------------------------------------------------------------------------------------
def swav_loss(
    scores: Sequence[Tensor],
    *,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    assign_crops: Sequence[int] = (0, 1),
) -> Tensor:
    """The swapped-prediction loop of ``main_swav.py`` (:func:`references.swav`, no queue)."""
    return references.swav(scores, temperature, epsilon, iterations, assign_crops)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL ``regression_loss`` (:func:`references.byol`), batch mean; ``z`` under stop-gradient."""
    return references.byol(p, z).mean()


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam ``-CosineSimilarity(p, z.detach())`` (:func:`references.simsiam`), batch mean."""
    return references.simsiam(p, z).mean()


# --------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------
def resnet50_parameter_shapes(*, width: int = 64, num_classes: int = 1000) -> list[tuple[int, ...]]:
    """The parameter shapes of a torchvision ResNet-50, in ``model.parameters()`` order.

    161 tensors and 25,557,032 values with the defaults; ``width`` scales every stage (used by
    the quick smoke run).
    """
    shapes: list[tuple[int, ...]] = [(width, 3, 7, 7), (width,), (width,)]
    inplanes = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = width * 2**stage
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(num_classes, inplanes), (num_classes,)]
    return shapes


@torch.no_grad()
def ema_moco_(target: nn.Module, online: nn.Module, *, momentum: float) -> None:
    """One EMA step as MoCo's ``_momentum_update_key_encoder`` writes it (out of place)."""
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.data = p_t.data * momentum + p_o.data * (1.0 - momentum)


@torch.no_grad()
def ema_loop_(target: nn.Module, online: nn.Module, *, momentum: float) -> None:
    """One EMA step, one tensor at a time, in place: ``p_t <- m p_t + (1 - m) p_o``."""
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.data.mul_(momentum).add_((1 - momentum) * p_o.data)


# --------------------------------------------------------------------------------------------
# Multi-crop: one image and one crop at a time, torchvision's algorithms with tensor ops
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColorJitterConfig:
    """``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability ``p``."""

    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    p: float = 0.8


@dataclass(frozen=True)
class MultiCropConfig:
    """A multi-crop pipeline: crop groups plus the per-crop augmentations.

    The defaults are SwAV's ``2x224 + 6x96`` with its colour distortion (strength 1), random
    grayscale, Gaussian blur (kernel 23, sigma in [0.1, 2], ``p=0.5``) and normalization, and
    an antialiased resize (SwAV resizes PIL images, whose filters antialias).
    """

    crop_sizes: tuple[int, ...] = (224, 96)
    crop_counts: tuple[int, ...] = (2, 6)
    crop_scales: tuple[tuple[float, float], ...] = ((0.14, 1.0), (0.05, 0.14))
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: ColorJitterConfig | None = ColorJitterConfig()
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_kernel: int = 23
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.228, 0.224, 0.225)
    antialias: bool = True  # F.interpolate(..., antialias=...) for each crop


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``: top, left, height, width of one crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _color_jitter(img: Tensor, cfg: ColorJitterConfig, generator: torch.Generator | None) -> Tensor:
    """``ColorJitter``: the four adjustments in a random order, factors drawn per call."""
    for op in torch.randperm(4, generator=generator).tolist():
        if op == 0 and cfg.brightness > 0:
            f = _uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator)
        elif op == 1 and cfg.contrast > 0:
            f = _uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator)
        elif op == 2 and cfg.saturation > 0:
            f = _uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator)
        elif op == 3 and cfg.hue > 0:
            f = _uniform(-cfg.hue, cfg.hue, generator)
        else:
            continue
        img = references.jitter_op(img, op, f)
    return img


def multicrop_loop(
    images: Tensor, cfg: MultiCropConfig, *, generator: torch.Generator | None = None
) -> list[Tensor]:
    """Crop ``(N, 3, H, W)`` images in ``[0, 1]`` one image and one crop at a time.

    Resizing is ``F.interpolate(crop, mode="bilinear", antialias=cfg.antialias)`` per crop,
    the same filter as sslosses' ``resized_crop`` with the same setting, so both do the same
    work.

    Returns one ``(N, 3, size, size)`` tensor per crop, crops of the first group first, as a
    data loader collating per-sample outputs would.
    """
    n, _, height, width = images.shape
    mean = torch.tensor(cfg.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    per_crop: list[list[Tensor]] = [
        [] for _ in range(sum(cfg.crop_counts))
    ]  # crop index -> N crops
    for idx in range(n):
        img = images[idx]
        v = 0
        for size, count, scale in zip(
            cfg.crop_sizes, cfg.crop_counts, cfg.crop_scales, strict=True
        ):
            for _ in range(count):
                top, left, h, w = _resized_crop_box(height, width, scale, cfg.ratio, generator)
                crop = img[:, top : top + h, left : left + w].unsqueeze(0)
                crop = F.interpolate(
                    crop,
                    size=(size, size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=cfg.antialias,
                ).squeeze(0)
                crop = crop.clamp_(0, 1)
                if float(torch.rand((), generator=generator)) < cfg.flip_p:
                    crop = crop.flip(-1)
                if cfg.jitter is not None and float(torch.rand((), generator=generator)) < (
                    cfg.jitter.p
                ):
                    crop = _color_jitter(crop, cfg.jitter, generator)
                if float(torch.rand((), generator=generator)) < cfg.grayscale_p:
                    crop = references.gray(crop).expand(3, -1, -1)
                if float(torch.rand((), generator=generator)) < cfg.blur_p:
                    sigma = _uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], generator)
                    crop = references.gaussian_blur(crop, sigma, cfg.blur_kernel)
                per_crop[v].append((crop - mean) / std)
                v += 1
    return [torch.stack(crops) for crops in per_crop]


def dino_loss(
    student_output: Tensor,
    teacher_output: Tensor,
    center: Tensor,
    *,
    ncrops: int,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """``DINOLoss.forward`` of facebookresearch/dino ``main_dino.py`` (:func:`references.dino`).

    The crops are concatenated (``(ncrops * B, K)`` student, ``(2 * B, K)`` teacher) and the
    student's log-softmax is recomputed for every (teacher, student) pair, as the original does.
    """
    return references.dino(
        student_output, teacher_output, center, ncrops, teacher_temp, student_temp
    )


# --------------------------------------------------------------------------------------------
# NNCLR
# --------------------------------------------------------------------------------------------
def lightly_nearest_neighbours(z: Tensor, bank: Tensor) -> Tensor:
    """lightly ``NNMemoryBankModule.forward(z, update=False)``, one process.

    lightly's ``MemoryBankModule.forward`` returns ``self.bank.clone().detach()``; the module
    normalizes the output and the whole bank, builds the ``(N, K)`` similarity matrix with
    ``einsum("nd,md->nm")``, takes ``argmax`` over the bank and ``index_select``s the rows.
    ``bank`` is ``(K, D)`` (the buffer's layout after lightly's transposes).
    """
    bank = bank.clone().detach()
    output_normed = F.normalize(z, dim=1)
    bank_normed = F.normalize(bank, dim=1)
    similarity = torch.einsum("nd,md->nm", output_normed, bank_normed)  # (N, K)
    index = torch.argmax(similarity, dim=1)
    return torch.index_select(bank, dim=0, index=index)  # (N, D)


def lightly_nt_xent(out0: Tensor, out1: Tensor, *, temperature: float = 0.5) -> Tensor:
    """lightly ``NTXentLoss.forward`` without a memory bank, one process.

    Four ``(N, N)`` einsum blocks over the normalized views, the self-similarities of
    ``out0 @ out0.T`` and ``out1 @ out1.T`` dropped through a boolean mask and ``view``, the
    blocks concatenated into ``(2N, 2N - 1)`` logits, cross-entropy with labels
    ``arange(N).repeat(2)``.
    """
    n = out0.shape[0]
    out0 = F.normalize(out0, dim=1)
    out1 = F.normalize(out1, dim=1)
    diag_mask = torch.eye(n, device=out0.device, dtype=torch.bool)
    logits_00 = torch.einsum("nc,mc->nm", out0, out0) / temperature
    logits_01 = torch.einsum("nc,mc->nm", out0, out1) / temperature
    logits_10 = torch.einsum("nc,mc->nm", out1, out0) / temperature
    logits_11 = torch.einsum("nc,mc->nm", out1, out1) / temperature
    logits_00 = logits_00[~diag_mask].view(n, -1)
    logits_11 = logits_11[~diag_mask].view(n, -1)
    logits = torch.cat(
        [torch.cat([logits_01, logits_00], dim=1), torch.cat([logits_10, logits_11], dim=1)]
    )  # (2N, 2N - 1)
    labels = torch.arange(n, device=out0.device, dtype=torch.long).repeat(2)
    return F.cross_entropy(logits, labels)


def lightly_nnclr(
    z_a: Tensor, z_b: Tensor, p_a: Tensor, p_b: Tensor, bank: Tensor, *, temperature: float = 0.1
) -> Tensor:
    """lightly's NNCLR example: ``0.5 * (criterion(nn(z0), p1) + criterion(nn(z1), p0))`` with
    ``nn = NNMemoryBankModule`` (searched in the bank before its update) and
    ``criterion = NTXentLoss(temperature=0.1)``."""
    nn_a = lightly_nearest_neighbours(z_a.detach(), bank)
    nn_b = lightly_nearest_neighbours(z_b.detach(), bank)
    return 0.5 * (
        lightly_nt_xent(nn_a, p_b, temperature=temperature)
        + lightly_nt_xent(nn_b, p_a, temperature=temperature)
    )


def solo_learn_nnclr(
    z_a: Tensor,
    z_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    queue: Tensor,
    *,
    temperature: float = 0.1,
    symmetric: bool = True,
) -> Tensor:
    """NNCLR's Algorithm 1 as solo-learn writes it, with the paper's symmetric term.

    vturrisi/solo-learn ``solo/methods/nnclr.py``: ``find_nn`` is
    ``queue[(z @ queue.T).max(dim=1)[1]]`` for normalized ``z`` against a queue of normalized
    projections (``(K, D)``); ``solo/losses/nnclr.py`` ``nnclr_loss_func`` is
    ``cross_entropy(normalize(nn) @ normalize(p).T / T, arange(N))``, and the step's loss is
    ``loss(nn1, p2) / 2 + loss(nn2, p1) / 2``. With ``symmetric`` each term is averaged with the
    cross-entropy of the transposed logits (NNCLR Sec. 3.3; not in solo-learn).
    """

    def find_nn(z: Tensor) -> Tensor:
        with torch.no_grad():
            index = (F.normalize(z, dim=-1) @ queue.T).max(dim=1)[1]  # (N,)
        return queue[index]  # (N, D)

    def loss(nn_rows: Tensor, p: Tensor) -> Tensor:
        logits = F.normalize(nn_rows, dim=-1) @ F.normalize(p, dim=-1).T / temperature  # (N, N)
        labels = torch.arange(logits.shape[0], device=logits.device)
        value = F.cross_entropy(logits, labels)
        if symmetric:
            value = (value + F.cross_entropy(logits.T, labels)) / 2
        return value

    return loss(find_nn(z_a), p_b) / 2 + loss(find_nn(z_b), p_a) / 2
