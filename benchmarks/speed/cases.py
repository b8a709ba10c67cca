"""The benchmark case catalogue: what ``python -m benchmarks.speed`` measures.

Each case is one shape of one loss or component (a :class:`harness.Case`), with its
implementations: sslosses (through its public API), the original repositories' formulations
(``benchmarks/speed/baselines.py``, built on ``benchmarks/references.py``) and lightly, torchvision
or Kornia where they import. :func:`build_cases` lists the cases (the issue's shapes, or tiny
ones for a smoke run); :func:`evaluate_targets` judges the project's targets on a run's rows.
How they are timed and measured is ``benchmarks/speed/harness.py``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import sslosses
import sslosses.functional as SF
from benchmarks.speed import baselines
from benchmarks.speed.harness import (
    Case,
    Impl,
    Inputs,
    Prepared,
    lerp_limit,
    matmul_limit,
    pass_limit,
)
from sslosses.functional import select_algorithm
from sslosses.transforms import swav_transform

GROUPS = (
    "barlow",
    "vicreg",
    "ntxent",
    "infonce",
    "swav",
    "dino",
    "koleo",
    "mmcr",
    "tico",
    "wmse",
    "sigreg",
    "supcon",
    "dcl",
    "uniformity",
    "byol",
    "simsiam",
    "ema",
    "multicrop",
    "nnclr",
)

GROUP_TITLES = {
    "barlow": "Barlow Twins",
    "vicreg": "VICReg",
    "ntxent": "NT-Xent (SimCLR)",
    "infonce": "InfoNCE with a queue (MoCo v2)",
    "swav": "SwAV",
    "dino": "DINO",
    "koleo": "KoLeo (DINOv2)",
    "mmcr": "MMCR",
    "tico": "TiCo",
    "wmse": "W-MSE",
    "sigreg": "LeJEPA SIGReg",
    "supcon": "SupCon (supervised contrastive)",
    "dcl": "DCL (decoupled contrastive learning)",
    "uniformity": "Uniformity (Wang & Isola)",
    "byol": "BYOL",
    "simsiam": "SimSiam",
    "ema": "EMA (target network update)",
    "multicrop": "Multi-crop augmentation",
    "nnclr": "NNCLR (nearest-neighbour positives from a support set)",
}


def _leaf(*shape: int, device: torch.device, gen: torch.Generator, scale: float = 1.0) -> Tensor:
    x = torch.randn(*shape, generator=gen)
    if scale != 1.0:
        x.mul_(scale)
    return x.to(device).requires_grad_(True)


def optional_import(module: str, name: str | None = None) -> Any:
    """``import_module(module)`` (or its attribute ``name``) from an optional package
    (lightly, torchvision, Kornia), or ``ImportError`` when the package is absent or broken."""
    package = module.split(".")[0]
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{package} is not installed")
    try:
        mod = importlib.import_module(module)
        return mod if name is None else getattr(mod, name)
    except Exception as exc:  # a broken optional install counts as absent
        what = module if name is None else f"{module}.{name}"
        raise ImportError(f"{what} failed to import: {exc!r}") from exc


def _loss_step(fn: Callable[[], Tensor], inputs: Inputs, *names: str) -> Prepared:
    return Prepared(step=fn, leaves=[inputs[n] for n in names])


def _pair_setup(n: int, d: int) -> Callable[[torch.device], Inputs]:
    """Two ``(N, D)`` embeddings ``z_a``, ``z_b`` that require grad (Barlow Twins, NT-Xent, ...)."""

    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        return {
            "z_a": _leaf(n, d, device=device, gen=gen),
            "z_b": _leaf(n, d, device=device, gen=gen),
        }

    return setup


# Barlow Twins --------------------------------------------------------------------------------


def _barlow_official(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    loss = baselines.OfficialBarlowTwins(z_a.shape[1], lambd=0.0051)
    loss = loss.to(device=z_a.device, dtype=z_a.dtype)
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _barlow_solo(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(
        lambda: baselines.solo_learn_barlow_twins(z_a, z_b, lamb=0.0051, scale_loss=1.0),
        inputs,
        "z_a",
        "z_b",
    )


def _barlow_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "BarlowTwinsLoss")(lambda_param=0.0051)
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _offdiag_ours(
    loss: Callable[..., Tensor], *, symmetric: bool
) -> Callable[[str], Callable[[Inputs], Prepared]]:
    """``algorithm -> prepare`` for an sslosses loss on the off-diagonal primitive; the
    ``"auto"`` row notes what :func:`~sslosses.functional.select_algorithm` picks."""

    def ours(algorithm: str) -> Callable[[Inputs], Prepared]:
        def prepare(inputs: Inputs) -> Prepared:
            z_a, z_b = inputs["z_a"], inputs["z_b"]
            prep = _loss_step(lambda: loss(z_a, z_b, algorithm=algorithm), inputs, "z_a", "z_b")
            if algorithm == "auto":
                n, d = z_a.shape
                picked = select_algorithm(n, d, symmetric=symmetric, device=z_a.device)
                prep.note = f"runs {picked}"
            return prep

        return prepare

    return ours


def _offdiag_case(
    group: str,
    n: int,
    d: int,
    baseline_impls: Sequence[Impl],
    loss: Callable[..., Tensor],
    algorithms: Sequence[str],
    *,
    symmetric: bool,
    estimate: float,
    device: torch.device | None,
    min_repeats: int,
) -> Case:
    """A Barlow Twins or VICReg case: ``baseline_impls`` (the first is the baseline), and
    ``loss`` with ``"auto"`` and the explicit ``algorithms``, each estimated at ``estimate``
    bytes.

    With a ``device``, the explicit algorithm that ``"auto"`` picks there is left out (it would
    time the same code twice).
    """
    ours = _offdiag_ours(loss, symmetric=symmetric)
    impls = list(baseline_impls)
    impls.append(Impl("auto", "sslosses auto", "sslosses", ours("auto"), estimate=estimate))
    choice = (
        None if device is None else str(select_algorithm(n, d, symmetric=symmetric, device=device))
    )
    impls += [
        Impl(alg, f"sslosses {alg}", "sslosses", ours(alg), estimate=estimate)
        for alg in algorithms
        if alg != choice
    ]
    return Case(
        group,
        f"{n}x{d}",
        f"N={n} D={d}",
        _pair_setup(n, d),
        tuple(impls),
        impls[0].key,
        min_repeats=min_repeats,
        # one cross-correlation product in its cheaper form: (N, D) x (D, N) or (D, N) x (N, D)
        limit=matmul_limit(n, d, n) if n <= d else matmul_limit(d, n, d),
    )


def _barlow_case(
    n: int,
    d: int,
    algorithms: Sequence[str],
    *,
    device: torch.device | None = None,
    solo: bool = True,
    min_repeats: int = 3,
) -> Case:
    """The official formulation, solo-learn's (with ``solo``), lightly (where importable),
    ``"auto"`` and ``algorithms`` (see :func:`_offdiag_case`)."""
    dd = 4.0 * d * d  # one D x D float32 matrix
    official = "official main.py (baseline)"
    impls = [Impl("official", official, "baseline", _barlow_official, estimate=4 * dd)]
    if solo:
        impls.append(
            Impl("solo-learn", "solo-learn barlow.py", "baseline", _barlow_solo, estimate=12 * dd)
        )
    impls.append(
        Impl("lightly", "lightly BarlowTwinsLoss", "lightly", _barlow_lightly, estimate=6 * dd)
    )
    return _offdiag_case(
        "barlow",
        n,
        d,
        impls,
        functools.partial(SF.barlow_twins_loss, lambd=0.0051),
        algorithms,
        symmetric=False,
        estimate=4 * dd,
        device=device,
        min_repeats=min_repeats,
    )


# VICReg -------------------------------------------------------------------------------------
def _vicreg_official(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: baselines.official_vicreg(z_a, z_b), inputs, "z_a", "z_b")


def _vicreg_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "VICRegLoss")()
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _vicreg_case(
    n: int,
    d: int,
    algorithms: Sequence[str],
    *,
    device: torch.device | None = None,
    min_repeats: int = 3,
) -> Case:
    """The official formulation, lightly (where importable), ``"auto"`` and ``algorithms``
    (see :func:`_offdiag_case`; VICReg's covariance term uses the rule and kernels of Barlow
    Twins, one shared primitive)."""
    dd = 4.0 * d * d  # one D x D float32 matrix
    impls = [
        Impl("official", "official main_vicreg.py", "baseline", _vicreg_official, estimate=8 * dd),
        Impl("lightly", "lightly VICRegLoss", "lightly", _vicreg_lightly, estimate=8 * dd),
    ]
    return _offdiag_case(
        "vicreg",
        n,
        d,
        impls,
        SF.vicreg_loss,
        algorithms,
        symmetric=True,
        estimate=8 * dd,
        device=device,
        min_repeats=min_repeats,
    )


# NT-Xent ------------------------------------------------------------------------------------
def _ntxent_plain(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(
        lambda: baselines.plain_nt_xent(z_a, z_b, temperature=0.1), inputs, "z_a", "z_b"
    )


def _ntxent_simclr(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(
        lambda: baselines.simclr_nt_xent(z_a, z_b, temperature=0.1), inputs, "z_a", "z_b"
    )


def _ntxent_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "NTXentLoss")(temperature=0.1)
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _ntxent_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b = inputs["z_a"], inputs["z_b"]
        chunk: Any = chunk_size
        prep = _loss_step(
            lambda: SF.nt_xent(z_a, z_b, temperature=0.1, chunk_size=chunk), inputs, "z_a", "z_b"
        )
        if chunk_size == "auto":
            rows = 2 * z_a.shape[0]
            prep.note = f"runs {chunk_auto_choice(rows, rows, z_a.device)}"
        return prep

    return prepare


def chunk_auto_choice(rows: int, cols: int, device: torch.device) -> str:
    """What ``chunk_size="auto"`` runs for these logits: ``"plain"`` or ``"chunk_size=<b>"``."""
    picked = SF.resolve_chunk_size("auto", rows, cols, device)
    return "plain" if picked is None else f"chunk_size={picked}"


def _ntxent_auto_estimate(n: int) -> float:
    """Extra bytes of ``chunk_size="auto"`` under the CPU rule (for skipping what cannot fit)."""
    picked = chunk_auto_choice(2 * n, 2 * n, torch.device("cpu"))
    block = int(picked.split("=")[1]) if picked.startswith("chunk_size=") else 2 * n
    return 4 * 4.0 * block * 2 * n


def _ntxent_case(n: int, d: int, chunk_size: int, *, simclr: bool = True) -> Case:
    full = 4.0 * (2 * n) ** 2  # one (2N, 2N) float32 matrix
    impls = [
        Impl(
            "plain", "plain 2Nx2N logits (baseline)", "baseline", _ntxent_plain, estimate=5 * full
        ),
        Impl("simclr", "SimCLR 4-block logits", "baseline", _ntxent_simclr, estimate=5 * full),
        Impl("lightly", "lightly NTXentLoss", "lightly", _ntxent_lightly, estimate=6 * full),
        Impl(
            "dense", "sslosses chunk_size=None", "sslosses", _ntxent_ours(None), estimate=4 * full
        ),
        Impl(
            "auto",
            'sslosses chunk_size="auto"',
            "sslosses",
            _ntxent_ours("auto"),
            estimate=_ntxent_auto_estimate(n),
        ),
        Impl(
            "chunked",
            f"sslosses chunk_size={chunk_size}",
            "sslosses",
            _ntxent_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * 2 * n,
        ),
    ]
    if not simclr:
        impls = [i for i in impls if i.key != "simclr"]
    shape = f"N={n} D={d}"
    limit = matmul_limit(2 * n, d, 2 * n)  # the 2N x 2N similarities
    return Case("ntxent", str(n), shape, _pair_setup(n, d), tuple(impls), "plain", limit=limit)


# InfoNCE with a queue -----------------------------------------------------------------------
def _infonce_setup(n: int, d: int, k: int) -> Callable[[torch.device], Inputs]:
    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        queue = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1).to(device)
        return {
            "q": _leaf(n, d, device=device, gen=gen),
            # keys come from the momentum encoder: no gradient (as in MoCo)
            "k": torch.randn(n, d, generator=gen).to(device),
            "queue_kd": queue,  # sslosses / MoCoQueue layout (K, D)
            "queue_dk": queue.t().contiguous(),  # the official buffer layout (D, K)
        }

    return setup


def _infonce_moco(inputs: Inputs) -> Prepared:
    q, k, queue = inputs["q"], inputs["k"], inputs["queue_dk"]
    return _loss_step(lambda: baselines.moco_info_nce(q, k, queue, temperature=0.2), inputs, "q")


def _infonce_ours(chunk_size: int | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        q, k, queue = inputs["q"], inputs["k"], inputs["queue_kd"]
        return _loss_step(
            lambda: SF.info_nce(
                q,
                k,
                negatives=queue,
                temperature=0.2,
                in_batch_negatives=False,
                chunk_size=chunk_size,
            ),
            inputs,
            "q",
        )

    return prepare


def _infonce_case(n: int, d: int, k: int, chunk_size: int) -> Case:
    logits = 4.0 * n * (k + 1)
    impls = (
        Impl("moco", "MoCo l_pos/l_neg (baseline)", "baseline", _infonce_moco, estimate=6 * logits),
        Impl(
            "dense",
            "sslosses chunk_size=None",
            "sslosses",
            _infonce_ours(None),
            estimate=5 * logits,
        ),
        Impl("chunked", f"sslosses chunk_size={chunk_size}", "sslosses", _infonce_ours(chunk_size)),
    )
    shape, setup = f"N={n} D={d} K={k}", _infonce_setup(n, d, k)
    limit = matmul_limit(n, d, k)  # the queries against the queue
    return Case("infonce", f"{n}x{k}", shape, setup, impls, "moco", limit=limit)


# SwAV ---------------------------------------------------------------------------------------
def _swav_setup(n: int, k: int, crops: int) -> Callable[[torch.device], Inputs]:
    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        scores = [
            torch.nn.functional.normalize(torch.randn(n, k, generator=gen), dim=1)
            .to(device)
            .requires_grad_(True)
            for _ in range(crops)
        ]
        return {"scores": scores}

    return setup


def _swav_official(inputs: Inputs) -> Prepared:
    scores = inputs["scores"]
    return Prepared(lambda: baselines.swav_loss(scores), list(scores))


def _swav_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "SwaVLoss")(
        temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05
    )
    scores = inputs["scores"]
    # lightly returns shape (1,); reshape to the 0-d loss the other implementations return
    return Prepared(lambda: loss(scores[:2], scores[2:]).reshape(()), list(scores))


def _swav_ours(inputs: Inputs) -> Prepared:
    scores = inputs["scores"]
    return Prepared(lambda: SF.swav_loss(scores), list(scores))


def _swav_case(n: int, k: int, crops: int) -> Case:
    impls = (
        Impl("official", "official main_swav.py (baseline)", "baseline", _swav_official),
        Impl("lightly", "lightly SwaVLoss", "lightly", _swav_lightly),
        Impl("sslosses", "sslosses swav_loss", "sslosses", _swav_ours),
    )
    return Case(
        "swav",
        f"{n}x{k}x{crops}",
        f"N={n} K={k} V={crops}",
        _swav_setup(n, k, crops),
        impls,
        "official",
        limit=pass_limit(crops * n, k),  # every crop's scores read and written once
    )


# DINO ---------------------------------------------------------------------------------------
def _dino_setup(n: int, k: int, local: int) -> Callable[[torch.device], Inputs]:
    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        student = [
            torch.randn(n, k, generator=gen).to(device).requires_grad_(True)
            for _ in range(2 + local)
        ]
        teacher = [torch.randn(n, k, generator=gen).to(device) for _ in range(2)]
        center = 0.1 * torch.randn(k, generator=gen).to(device)
        return {"student": student, "teacher": teacher, "center": center}

    return setup


def _dino_official(inputs: Inputs) -> Prepared:
    student, teacher, center = inputs["student"], inputs["teacher"], inputs["center"]
    # the original takes the crops concatenated; the concatenation is part of its cost
    return Prepared(
        lambda: baselines.dino_loss(
            torch.cat(student), torch.cat(teacher), center[None], ncrops=len(student)
        ),
        list(student),
    )


def _dino_ours(inputs: Inputs) -> Prepared:
    student, teacher, center = inputs["student"], inputs["teacher"], inputs["center"]
    return Prepared(lambda: SF.dino_loss(student, teacher, center=center), list(student))


def _dino_case(n: int, k: int, local: int) -> Case:
    impls = (
        Impl("official", "official main_dino.py DINOLoss (baseline)", "baseline", _dino_official),
        Impl("sslosses", "sslosses dino_loss", "sslosses", _dino_ours),
    )
    return Case(
        "dino",
        f"{n}x{k}x2+{local}",
        f"N={n} K={k} V=2+{local}",
        _dino_setup(n, k, local),
        impls,
        "official",
        limit=pass_limit((2 + local) * n, k),  # every student crop's outputs read and written once
    )


# KoLeo --------------------------------------------------------------------------------------
def _koleo_setup(n: int, d: int) -> Callable[[torch.device], Inputs]:
    """One ``(N, D)`` embedding ``x`` that requires grad."""

    def setup(device: torch.device) -> Inputs:
        return {"x": _leaf(n, d, device=device, gen=torch.Generator().manual_seed(0))}

    return setup


def _koleo_original(inputs: Inputs) -> Prepared:
    x = inputs["x"]
    return _loss_step(lambda: baselines.dinov2_koleo(x), inputs, "x")


def _koleo_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        x = inputs["x"]
        chunk: Any = chunk_size
        prep = _loss_step(lambda: SF.koleo_loss(x, chunk_size=chunk), inputs, "x")
        if chunk_size == "auto":
            prep.note = f"runs {chunk_auto_choice(x.shape[0], x.shape[0], x.device)}"
        return prep

    return prepare


def _koleo_case(n: int, d: int, chunk_size: int) -> Case:
    full = 4.0 * n * n  # the (N, N) float32 inner products
    rows = 4.0 * n * d  # one (N, D) float32 tensor
    picked = chunk_auto_choice(n, n, torch.device("cpu"))
    auto_block = int(picked.split("=")[1]) if picked.startswith("chunk_size=") else n
    impls = (
        Impl(
            "original",
            "DINOv2 KoLeoLoss, N x N (baseline)",
            "baseline",
            _koleo_original,
            estimate=full + 8 * rows,
        ),
        Impl(
            "dense",
            "sslosses chunk_size=None",
            "sslosses",
            _koleo_ours(None),
            estimate=full + 8 * rows,
        ),
        Impl(
            "auto",
            'sslosses chunk_size="auto"',
            "sslosses",
            _koleo_ours("auto"),
            estimate=4.0 * auto_block * n + 8 * rows,
        ),
        Impl(
            "chunked",
            f"sslosses chunk_size={chunk_size}",
            "sslosses",
            _koleo_ours(chunk_size),
            estimate=4.0 * chunk_size * n + 8 * rows,
        ),
    )
    limit = matmul_limit(n, d, n)  # the N x N similarities
    return Case(
        "koleo", f"{n}x{d}", f"N={n} D={d}", _koleo_setup(n, d), impls, "original", limit=limit
    )


# MMCR ---------------------------------------------------------------------------------------
MMCR_LAMBDA = 5e-3  # lightly's default, so that every implementation runs the per-sample SVDs


def _mmcr_setup(n: int, d: int, views: int) -> Callable[[torch.device], Inputs]:
    """``views`` embeddings ``(N, D)`` that require grad."""

    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        return {"views": [_leaf(n, d, device=device, gen=gen) for _ in range(views)]}

    return setup


def _mmcr_original(inputs: Inputs) -> Prepared:
    views = inputs["views"]

    def step() -> Tensor:
        z = torch.stack(views, dim=1).reshape(-1, views[0].shape[1])  # (N V, D), sample-major
        return baselines.original_mmcr(z, len(views), MMCR_LAMBDA)

    return Prepared(step, list(views))


def _mmcr_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "MMCRLoss")(lmda=MMCR_LAMBDA)
    views = inputs["views"]
    half = len(views) // 2
    # lightly takes (B, k, D) online and momentum outputs and does not normalize: normalize
    # first, so that it computes the same value
    return Prepared(
        lambda: loss(
            torch.nn.functional.normalize(torch.stack(views[:half], dim=1), dim=-1),
            torch.nn.functional.normalize(torch.stack(views[half:], dim=1), dim=-1),
        ),
        list(views),
    )


def _mmcr_ours(inputs: Inputs) -> Prepared:
    views = inputs["views"]
    return Prepared(lambda: SF.mmcr_loss(views, lambd=MMCR_LAMBDA), list(views))


def _mmcr_case(n: int, d: int, views: int) -> Case:
    impls = (
        Impl("original", "MMCR loss_mmcr.py MMCR_Loss (baseline)", "baseline", _mmcr_original),
        Impl("lightly", "lightly MMCRLoss", "lightly", _mmcr_lightly),
        Impl("sslosses", "sslosses mmcr_loss", "sslosses", _mmcr_ours),
    )
    return Case(
        "mmcr",
        f"{n}x{d}x{views}",
        f"N={n} D={d} V={views}",
        _mmcr_setup(n, d, views),
        impls,
        "original",
    )


# TiCo ---------------------------------------------------------------------------------------
def _tico_lightly_formula(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    running = torch.zeros(z_a.shape[1], z_a.shape[1], device=z_a.device)
    return Prepared(lambda: baselines.lightly_tico(z_a, z_b, running)[0], [z_a, z_b])


def _tico_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "TiCoLoss")()
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return Prepared(lambda: loss(z_a, z_b, update_covariance_matrix=False), [z_a, z_b])


def _tico_ours(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    covariance = sslosses.TiCoCovariance(z_a.shape[1], device=z_a.device)

    def step() -> Tensor:
        # a fresh state each call, as the baselines (their running C starts at zero)
        covariance.covariance.zero_()
        covariance.update(z_a)
        return SF.tico_loss(z_a, z_b, covariance.covariance)

    return Prepared(step, [z_a, z_b])


def _tico_case(n: int, d: int) -> Case:
    impls = (
        Impl(
            "formula",
            "lightly TiCoLoss formula, written out (baseline)",
            "baseline",
            _tico_lightly_formula,
        ),
        Impl("lightly", "lightly TiCoLoss", "lightly", _tico_lightly),
        Impl("sslosses", "sslosses TiCoCovariance.update + tico_loss", "sslosses", _tico_ours),
    )
    limit = matmul_limit(d, n, d)  # the D x D covariance of a batch
    return Case(
        "tico", f"{n}x{d}", f"N={n} D={d}", _pair_setup(n, d), impls, "formula", limit=limit
    )


# W-MSE --------------------------------------------------------------------------------------
def _wmse_original(w_size: int) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b = inputs["z_a"], inputs["z_b"]

        def step() -> Tensor:
            perm = torch.randperm(z_a.shape[0], device=z_a.device)
            return baselines.original_wmse(torch.cat([z_a, z_b]), 2, w_size, [perm])

        return Prepared(step, [z_a, z_b])

    return prepare


def _wmse_lightly(w_size: int) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b = inputs["z_a"], inputs["z_b"]
        loss = optional_import("lightly.loss", "WMSELoss")(
            embedding_dim=z_a.shape[1], w_size=w_size, num_samples=2
        ).to(z_a.device)
        return Prepared(lambda: loss(torch.cat([z_a, z_b])), [z_a, z_b])

    return prepare


def _wmse_ours(w_size: int) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b = inputs["z_a"], inputs["z_b"]
        return Prepared(lambda: SF.wmse_loss([z_a, z_b], w_size=w_size), [z_a, z_b])

    return prepare


def _wmse_case(n: int, d: int, w_size: int) -> Case:
    impls = (
        Impl(
            "original", "htdt/self-supervised WMSE (baseline)", "baseline", _wmse_original(w_size)
        ),
        Impl("lightly", "lightly WMSELoss", "lightly", _wmse_lightly(w_size)),
        Impl("sslosses", "sslosses wmse_loss", "sslosses", _wmse_ours(w_size)),
    )
    return Case(
        "wmse",
        f"{n}x{d}x{w_size}",
        f"N={n} D={d} w_size={w_size}",
        _pair_setup(n, d),
        impls,
        "original",
    )


# LeJEPA SIGReg ------------------------------------------------------------------------------
def _sigreg_setup(views: int, n: int, d: int, slices: int) -> Callable[[torch.device], Inputs]:
    """A ``(V, N, D)`` stack that requires grad and fixed unit directions ``(D, S)``."""

    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(d, slices, generator=gen)
        return {
            "x": _leaf(views, n, d, device=device, gen=gen),
            "a": (a / a.norm(dim=0)).to(device),
        }

    return setup


def _sigreg_formula(inputs: Inputs) -> Prepared:
    x, a = inputs["x"], inputs["a"]
    return Prepared(lambda: baselines.lightly_sigreg(x, a), [x])


def _sigreg_lightly(inputs: Inputs) -> Prepared:
    x, a = inputs["x"], inputs["a"]
    loss = optional_import("lightly.loss", "SIGReg")(num_vectors=a.shape[1]).to(x.device)
    loss._generate_unit_vectors = lambda device, dtype, num_features: a.to(dtype)  # the same A
    return Prepared(lambda: loss(x), [x])


def _sigreg_ours(inputs: Inputs) -> Prepared:
    x, a = inputs["x"], inputs["a"]
    return Prepared(lambda: SF.sigreg_loss(x, projections=a), [x])


def _sigreg_case(views: int, n: int, d: int, slices: int) -> Case:
    impls = (
        Impl(
            "formula", "lightly SIGReg formula, written out (baseline)", "baseline", _sigreg_formula
        ),
        Impl("lightly", "lightly SIGReg", "lightly", _sigreg_lightly),
        Impl("sslosses", "sslosses sigreg_loss", "sslosses", _sigreg_ours),
    )
    return Case(
        "sigreg",
        f"{views}x{n}x{d}x{slices}",
        f"V={views} N={n} D={d} S={slices}",
        _sigreg_setup(views, n, d, slices),
        impls,
        "formula",
        limit=matmul_limit(views * n, d, slices),  # the projections onto the S directions
    )


# SupCon -------------------------------------------------------------------------------------
def _supcon_setup(n: int, v: int, d: int, classes: int) -> Callable[[torch.device], Inputs]:
    """``features`` ``(N, V, D)`` that require grad and ``labels`` ``(N,)`` from ``classes``."""

    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        features = _leaf(n, v, d, device=device, gen=gen)
        labels = torch.randint(0, classes, (n,), generator=gen).to(device)
        return {"features": features, "labels": labels}

    return setup


def _supcon_original(inputs: Inputs) -> Prepared:
    features, labels = inputs["features"], inputs["labels"]
    return _loss_step(
        lambda: baselines.supcontrast_supcon(
            torch.nn.functional.normalize(features, dim=2), labels
        ),
        inputs,
        "features",
    )


def _supcon_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        features, labels = inputs["features"], inputs["labels"]
        chunk: Any = chunk_size
        prep = _loss_step(
            lambda: SF.supcon_loss(features, labels, chunk_size=chunk), inputs, "features"
        )
        if chunk_size == "auto":
            rows = features.shape[0] * features.shape[1]
            prep.note = f"runs {chunk_auto_choice(rows, rows, features.device)}"
        return prep

    return prepare


def _supcon_case(n: int, v: int, d: int, chunk_size: int, classes: int = 100) -> Case:
    vn = v * n
    full = 4.0 * vn * vn  # one (V N, V N) float32 matrix
    picked = chunk_auto_choice(vn, vn, torch.device("cpu"))
    auto_block = int(picked.split("=")[1]) if picked.startswith("chunk_size=") else vn
    impls = (
        Impl(
            "original",
            "SupContrast SupConLoss, dense (baseline)",
            "baseline",
            _supcon_original,
            estimate=10 * full,
        ),
        Impl(
            "dense", "sslosses chunk_size=None", "sslosses", _supcon_ours(None), estimate=4 * full
        ),
        Impl(
            "auto",
            'sslosses chunk_size="auto"',
            "sslosses",
            _supcon_ours("auto"),
            estimate=4 * 4.0 * auto_block * vn,
        ),
        Impl(
            "chunked",
            f"sslosses chunk_size={chunk_size}",
            "sslosses",
            _supcon_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * vn,
        ),
    )
    return Case(
        "supcon",
        f"{n}x{v}x{d}",
        f"N={n} V={v} D={d}, {classes} classes",
        _supcon_setup(n, v, d, classes),
        impls,
        "original",
        limit=matmul_limit(n * v, d, n * v),  # the NV x NV similarities
    )


# NNCLR --------------------------------------------------------------------------------------
def _nnclr_setup(n: int, d: int, k: int) -> Callable[[torch.device], Inputs]:
    """Projections ``z_a, z_b`` (no gradient reaches them), predictions ``p_a, p_b`` that require
    grad, and a ``(K, D)`` support set of unit rows (a queue of normalized projections)."""

    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        support = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1)
        return {
            "z_a": torch.randn(n, d, generator=gen).to(device),
            "z_b": torch.randn(n, d, generator=gen).to(device),
            "p_a": _leaf(n, d, device=device, gen=gen),
            "p_b": _leaf(n, d, device=device, gen=gen),
            "support": support.to(device),
        }

    return setup


def _nnclr_args(inputs: Inputs) -> tuple[Tensor, ...]:
    return tuple(inputs[name] for name in ("z_a", "z_b", "p_a", "p_b", "support"))


def _nnclr_lightly(inputs: Inputs) -> Prepared:
    args = _nnclr_args(inputs)
    return _loss_step(lambda: baselines.lightly_nnclr(*args), inputs, "p_a", "p_b")


def _nnclr_lightly_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    """lightly's NNCLR loss through sslosses: ``nearest_neighbours`` then ``nt_xent``."""

    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b, p_a, p_b, support = _nnclr_args(inputs)
        chunk: Any = chunk_size

        def step() -> Tensor:
            nn_a = SF.nearest_neighbours(z_a, support, chunk_size=chunk)
            nn_b = SF.nearest_neighbours(z_b, support, chunk_size=chunk)
            return 0.5 * (
                SF.nt_xent(nn_a, p_b, temperature=0.1, chunk_size=chunk)
                + SF.nt_xent(nn_b, p_a, temperature=0.1, chunk_size=chunk)
            )

        prep = _loss_step(step, inputs, "p_a", "p_b")
        if chunk_size == "auto":
            n, k = z_a.shape[0], support.shape[0]
            search = chunk_auto_choice(k, n, z_a.device)
            prep.note = (
                f"search runs {search}, nt_xent {chunk_auto_choice(2 * n, 2 * n, z_a.device)}"
            )
        return prep

    return prepare


def _nnclr_solo(inputs: Inputs) -> Prepared:
    args = _nnclr_args(inputs)
    return _loss_step(lambda: baselines.solo_learn_nnclr(*args), inputs, "p_a", "p_b")


def _nnclr_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        args = _nnclr_args(inputs)
        chunk: Any = chunk_size
        prep = _loss_step(lambda: SF.nnclr_loss(*args, chunk_size=chunk), inputs, "p_a", "p_b")
        if chunk_size == "auto":
            n, k = args[0].shape[0], args[4].shape[0]
            search = chunk_auto_choice(k, 2 * n, args[0].device)
            prep.note = f"search runs {search}, logits {chunk_auto_choice(n, n, args[0].device)}"
        return prep

    return prepare


def _nnclr_cases(n: int, d: int, k: int, chunk_size: int) -> list[Case]:
    """Two cases on the same inputs: lightly's NNCLR (NNMemoryBankModule + NTXentLoss) against
    ``nearest_neighbours`` + ``nt_xent``, and the paper's loss (Algorithm 1 with the symmetric
    term, as solo-learn computes it) against ``nnclr_loss``."""
    search = 4.0 * n * k  # one (N, K) float32 similarity matrix
    views = 4.0 * n * d
    lightly = (
        Impl(
            "lightly",
            "lightly NNMemoryBankModule + NTXentLoss formulation (baseline)",
            "baseline",
            _nnclr_lightly,
            estimate=search + 4 * 4.0 * (2 * n) ** 2,
        ),
        Impl(
            "auto",
            'sslosses nearest_neighbours + nt_xent chunk_size="auto"',
            "sslosses",
            _nnclr_lightly_ours("auto"),
            estimate=4 * 4.0 * 1024 * 2 * n + 16 * views,
        ),
        Impl(
            "chunked",
            f"sslosses nearest_neighbours + nt_xent chunk_size={chunk_size}",
            "sslosses",
            _nnclr_lightly_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * 2 * n + 16 * views,
        ),
    )
    paper = (
        Impl(
            "solo",
            "Algorithm 1 + symmetric term, solo-learn's find_nn / nnclr_loss_func (baseline)",
            "baseline",
            _nnclr_solo,
            estimate=search + 8 * 4.0 * n * n,
        ),
        Impl(
            "auto",
            'sslosses nnclr_loss chunk_size="auto"',
            "sslosses",
            _nnclr_ours("auto"),
            estimate=4 * 4.0 * 1024 * n + 16 * views,
        ),
        Impl(
            "chunked",
            f"sslosses nnclr_loss chunk_size={chunk_size}",
            "sslosses",
            _nnclr_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * n + 16 * views,
        ),
    )
    shape = f"N={n} D={d} K={k}"
    setup = _nnclr_setup(n, d, k)
    limit = matmul_limit(n, d, k)  # the nearest-neighbour search over the support set
    return [
        Case("nnclr", f"lightly-{n}x{k}", shape, setup, lightly, "lightly", limit=limit),
        Case("nnclr", f"paper-{n}x{k}", shape, setup, paper, "solo", limit=limit),
    ]


# DCL ----------------------------------------------------------------------------------------
def _dcl_lightly_formula(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: baselines.lightly_dcl(z_a, z_b, 0.1), inputs, "z_a", "z_b")


def _dcl_lightly(inputs: Inputs) -> Prepared:
    loss = optional_import("lightly.loss", "DCLLoss")(temperature=0.1)
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _dcl_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        z_a, z_b = inputs["z_a"], inputs["z_b"]
        chunk: Any = chunk_size
        prep = _loss_step(
            lambda: SF.dcl_loss(z_a, z_b, temperature=0.1, chunk_size=chunk), inputs, "z_a", "z_b"
        )
        if chunk_size == "auto":
            rows = 2 * z_a.shape[0]
            prep.note = f"runs {chunk_auto_choice(rows, rows, z_a.device)}"
        return prep

    return prepare


def _dcl_case(n: int, d: int, chunk_size: int) -> Case:
    half = 4.0 * n * 2 * n  # one (N, 2N) float32 matrix: a direction's similarities
    full = 4.0 * (2 * n) ** 2  # the (2N, 2N) float32 logits
    impls = (
        Impl(
            "formula",
            "lightly's formulation, 2 x N x 2N (baseline)",
            "baseline",
            _dcl_lightly_formula,
            estimate=10 * half,
        ),
        Impl("lightly", "lightly DCLLoss", "lightly", _dcl_lightly, estimate=10 * half),
        Impl("dense", "sslosses chunk_size=None", "sslosses", _dcl_ours(None), estimate=4 * full),
        Impl(
            "auto",
            'sslosses chunk_size="auto"',
            "sslosses",
            _dcl_ours("auto"),
            estimate=_ntxent_auto_estimate(n),
        ),
        Impl(
            "chunked",
            f"sslosses chunk_size={chunk_size}",
            "sslosses",
            _dcl_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * 2 * n,
        ),
    )
    limit = matmul_limit(2 * n, d, 2 * n)  # the 2N x 2N similarities
    return Case("dcl", f"{n}x{d}", f"N={n} D={d}", _pair_setup(n, d), impls, "formula", limit=limit)


# Uniformity ---------------------------------------------------------------------------------
def _uniformity_pdist(inputs: Inputs) -> Prepared:
    x = inputs["x"]
    return _loss_step(lambda: baselines.uniformity_pdist(x, t=2.0), inputs, "x")


def _uniformity_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        x = inputs["x"]
        chunk: Any = chunk_size
        prep = _loss_step(lambda: SF.uniformity_loss(x, t=2.0, chunk_size=chunk), inputs, "x")
        if chunk_size == "auto":
            prep.note = f"runs {chunk_auto_choice(x.shape[0], x.shape[0], x.device)}"
        return prep

    return prepare


def _uniformity_case(n: int, d: int, chunk_size: int) -> Case:
    pairs = 4.0 * n * (n - 1) / 2  # one float32 value per pair i < j
    full = 4.0 * n * n  # the (N, N) float32 potentials
    picked = chunk_auto_choice(n, n, torch.device("cpu"))
    auto_block = int(picked.split("=")[1]) if picked.startswith("chunk_size=") else n
    impls = (
        Impl(
            "pdist",
            "align_uniform uniform_loss, torch.pdist (baseline)",
            "baseline",
            _uniformity_pdist,
            estimate=8 * pairs,
        ),
        Impl(
            "dense",
            "sslosses chunk_size=None",
            "sslosses",
            _uniformity_ours(None),
            estimate=4 * full,
        ),
        Impl(
            "auto",
            'sslosses chunk_size="auto"',
            "sslosses",
            _uniformity_ours("auto"),
            estimate=4 * 4.0 * auto_block * n,
        ),
        Impl(
            "chunked",
            f"sslosses chunk_size={chunk_size}",
            "sslosses",
            _uniformity_ours(chunk_size),
            estimate=4 * 4.0 * chunk_size * n,
        ),
    )
    shape, limit = f"N={n} D={d}", matmul_limit(n, d, n)  # the N x N similarities
    return Case("uniformity", f"{n}x{d}", shape, _koleo_setup(n, d), impls, "pdist", limit=limit)


# BYOL and SimSiam ---------------------------------------------------------------------------
def _pair_loss_case(
    group: str,
    n: int,
    d: int,
    baseline: tuple[str, Callable[[Tensor, Tensor], Tensor]],
    ours: tuple[str, Callable[[Tensor, Tensor], Tensor]],
) -> Case:
    """A case timing ``loss(prediction, target)`` on a random ``(N, D)`` pair, baseline vs ours."""

    def prepare(loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Inputs], Prepared]:
        def run(inputs: Inputs) -> Prepared:
            p, z = inputs["z_a"], inputs["z_b"]
            return _loss_step(lambda: loss(p, z), inputs, "z_a", "z_b")

        return run

    impls = (
        Impl("official", baseline[0], "baseline", prepare(baseline[1])),
        Impl("sslosses", ours[0], "sslosses", prepare(ours[1])),
    )
    return Case(group, f"{n}x{d}", f"N={n} D={d}", _pair_setup(n, d), impls, "official")


def _byol_case(n: int, d: int) -> Case:
    return _pair_loss_case(
        "byol",
        n,
        d,
        ("deepmind regression_loss (baseline)", baselines.byol_loss),
        ("sslosses byol_loss", SF.byol_loss),
    )


def _simsiam_case(n: int, d: int) -> Case:
    return _pair_loss_case(
        "simsiam",
        n,
        d,
        ("official CosineSimilarity (baseline)", baselines.simsiam_loss),
        ("sslosses negative_cosine_similarity", SF.negative_cosine_similarity),
    )


# EMA ----------------------------------------------------------------------------------------
MOMENTUM = 0.996


def _ema_setup(width: int, classes: int) -> Callable[[torch.device], Inputs]:
    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        shapes = baselines.resnet50_parameter_shapes(width=width, num_classes=classes)
        online = nn.ParameterList(
            [nn.Parameter(0.02 * torch.randn(s, generator=gen).to(device)) for s in shapes]
        )
        return {"online": online}

    return setup


def _ema_copy(online: nn.Module) -> nn.Module:
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def _ema_baseline(update: Callable[..., None]) -> Callable[[Inputs], Prepared]:
    """Timing of ``update(target=..., online=..., momentum=m)`` on a frozen parameter copy."""

    def prepare(inputs: Inputs) -> Prepared:
        online = inputs["online"]
        target = _ema_copy(online)

        def step() -> list[Tensor]:
            update(target=target, online=online, momentum=MOMENTUM)
            return list(target.parameters())

        return Prepared(step)

    return prepare


def _ema_lightly(inputs: Inputs) -> Prepared:
    update_momentum = optional_import("lightly.models.utils", "update_momentum")
    online = inputs["online"]
    target = _ema_copy(online)

    def step() -> list[Tensor]:
        update_momentum(online, target, MOMENTUM)
        return list(target.parameters())

    return Prepared(step)


def _ema_functional(inputs: Inputs) -> Prepared:
    return _ema_baseline(SF.ema_update_)(inputs)


def _ema_module(inputs: Inputs) -> Prepared:
    online = inputs["online"]
    ema = sslosses.EMA(online, momentum=MOMENTUM)

    def step() -> list[Tensor]:
        ema.update(online)
        return list(ema.module.parameters())

    return Prepared(step)


def _ema_case(width: int = 64, classes: int = 1000) -> Case:
    shapes = baselines.resnet50_parameter_shapes(width=width, num_classes=classes)
    numel = sum(math.prod(s) for s in shapes)
    impls = (
        Impl(
            "moco",
            "MoCo per-parameter loop, out of place (baseline)",
            "baseline",
            _ema_baseline(baselines.ema_moco_),
        ),
        Impl(
            "loop",
            "per-parameter loop, in place",
            "baseline",
            _ema_baseline(baselines.ema_loop_),
        ),
        Impl("lightly", "lightly update_momentum", "lightly", _ema_lightly),
        Impl("functional", "sslosses ema_update_", "sslosses", _ema_functional),
        Impl("module", "sslosses EMA.update", "sslosses", _ema_module),
    )
    name = "ResNet-50" if (width, classes) == (64, 1000) else f"ResNet-50/width {width}"
    return Case(
        "ema",
        f"resnet50w{width}",
        f"{name}: {len(shapes)} tensors, {numel / 1e6:.1f}M values",
        _ema_setup(width, classes),
        impls,
        "moco",
        backward=False,
        limit=lerp_limit(numel),  # the same values as one contiguous buffer
    )


# Multi-crop ---------------------------------------------------------------------------------
def _multicrop_setup(n: int, size: int) -> Callable[[torch.device], Inputs]:
    def setup(device: torch.device) -> Inputs:
        gen = torch.Generator().manual_seed(0)
        return {"images": torch.rand(n, 3, size, size, generator=gen).to(device)}

    return setup


def _multicrop_loop(
    sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int, antialias: bool
) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        images = inputs["images"]
        cfg = baselines.MultiCropConfig(
            crop_sizes=sizes, crop_counts=counts, blur_kernel=blur_kernel, antialias=antialias
        )
        gen = torch.Generator().manual_seed(1)  # parameters drawn on the CPU, one by one
        return Prepared(lambda: baselines.multicrop_loop(images, cfg, generator=gen))

    return prepare


def _multicrop_ours(
    sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int, antialias: bool
) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        images = inputs["images"]
        transform = swav_transform(
            sizes[0],
            sizes[1],
            global_count=counts[0],
            local_count=counts[1],
            blur_kernel_size=blur_kernel,
            antialias=antialias,
        )
        gen = torch.Generator(device=images.device).manual_seed(1)
        return Prepared(lambda: transform(images, generator=gen))

    return prepare


_SWAV_MEAN, _SWAV_STD = (0.485, 0.456, 0.406), (0.228, 0.224, 0.225)


def _multicrop_torchvision(
    sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int, antialias: bool
) -> Callable[[Inputs], Prepared]:
    """SwAV's recipe (``src/multicropdataset.py``) with torchvision's ``transforms.v2`` on uint8
    tensors, one image and one crop at a time, then stacked: what a DataLoader does."""

    def prepare(inputs: Inputs) -> Prepared:
        v2 = optional_import("torchvision.transforms.v2")
        images = (inputs["images"] * 255).round_().to(torch.uint8)  # the loader's input
        scales = ((0.14, 1.0), (0.05, 0.14))
        pipelines = [
            v2.Compose(
                [
                    v2.RandomResizedCrop(size, scale=scale, antialias=antialias),
                    v2.RandomHorizontalFlip(p=0.5),
                    v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                    v2.RandomGrayscale(p=0.2),
                    v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=0.5),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(_SWAV_MEAN, _SWAV_STD),
                ]
            )
            for size, scale in zip(sizes, scales, strict=True)
        ]

        def step() -> list[Tensor]:
            per_image = [
                [t(img) for t, c in zip(pipelines, counts, strict=True) for _ in range(c)]
                for img in images
            ]
            return [torch.stack(crops) for crops in zip(*per_image, strict=True)]

        torch.manual_seed(1)
        return Prepared(step)

    return prepare


def _multicrop_kornia(
    sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int
) -> Callable[[Inputs], Prepared]:
    """SwAV's recipe with Kornia's batched augmentations: one ``AugmentationSequential`` per
    crop size, called once on the batch repeated ``count`` times (per-sample parameters).
    Kornia's ``RandomResizedCrop`` has no antialias option."""

    def prepare(inputs: Inputs) -> Prepared:
        K = optional_import("kornia.augmentation")
        images = inputs["images"]
        scales = ((0.14, 1.0), (0.05, 0.14))
        mean = torch.tensor(_SWAV_MEAN, device=images.device)
        std = torch.tensor(_SWAV_STD, device=images.device)
        pipelines = [
            K.AugmentationSequential(
                K.RandomResizedCrop((size, size), scale=scale),
                K.RandomHorizontalFlip(p=0.5),
                K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
                K.RandomGrayscale(p=0.2),
                K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 2.0), p=0.5),
                K.Normalize(mean=mean, std=std),
            )
            for size, scale in zip(sizes, scales, strict=True)
        ]

        def step() -> list[Tensor]:
            out: list[Tensor] = []
            for pipeline, count in zip(pipelines, counts, strict=True):
                batch = pipeline(images.repeat(count, 1, 1, 1))
                out.extend(batch.chunk(count))
            return out

        torch.manual_seed(1)
        return Prepared(step)

    return prepare


def _multicrop_case(
    n: int, size: int, sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int = 23
) -> Case:
    """SwAV's multi-crop; the baseline is the per-sample loop with SwAV's (antialiased) resize.

    Every implementation with a resize setting runs with both (``antialias=True``, the
    default of sslosses and of the PyTorch originals, and ``False``), in the same run.
    """
    label = " + ".join(f"{c}x{s}" for s, c in zip(sizes, counts, strict=True))
    args = (sizes, counts, blur_kernel)
    impls = (
        Impl(
            "loop",
            "per-sample loop, antialias (baseline)",
            "baseline",
            _multicrop_loop(*args, True),
        ),
        Impl(
            "loop-noaa",
            "per-sample loop, antialias=False",
            "baseline",
            _multicrop_loop(*args, False),
        ),
        Impl(
            "sslosses",
            "sslosses swav_transform (default: antialias)",
            "sslosses",
            _multicrop_ours(*args, True),
        ),
        Impl(
            "sslosses-noaa",
            "sslosses swav_transform, antialias=False",
            "sslosses",
            _multicrop_ours(*args, False),
        ),
        Impl(
            "torchvision",
            "torchvision v2 per sample, uint8, antialias",
            "torchvision",
            _multicrop_torchvision(*args, True),
            exact=False,
        ),
        Impl(
            "torchvision-noaa",
            "torchvision v2 per sample, uint8, antialias=False",
            "torchvision",
            _multicrop_torchvision(*args, False),
            exact=False,
        ),
        Impl(
            "kornia",
            "Kornia batched (no antialias option)",
            "kornia",
            _multicrop_kornia(*args),
            exact=False,
        ),
    )
    return Case(
        "multicrop",
        f"{n}x{size}",
        f"{n} images {size}x{size}, {label}",
        _multicrop_setup(n, size),
        impls,
        "loop",
        backward=False,
        items=n,
    )


def build_cases(quick: bool = False, device: torch.device | None = None) -> list[Case]:
    """The benchmark cases: the issue's shapes, or tiny ones with ``quick=True``.

    Barlow Twins at full size: ``"auto"`` and the algorithms it does not pick on ``device``,
    except those that cost the most and are never picked on CPU (``"dense"`` and ``"fused"``
    at N=2048/D=8192, ``"gram"`` at N > D); solo-learn at N=256/D=8192 only. These cuts keep
    the whole run near 15 minutes on one core.
    """
    if quick:
        return [
            _barlow_case(16, 48, ("dense", "gram", "fused")),
            _barlow_case(48, 16, ("dense", "gram", "fused")),
            _vicreg_case(16, 48, ("dense", "gram", "fused")),
            _vicreg_case(48, 16, ("dense", "gram", "fused")),
            _ntxent_case(24, 8, chunk_size=5),
            _infonce_case(6, 8, 40, chunk_size=4),
            _swav_case(12, 20, 4),
            _dino_case(6, 16, 3),
            _koleo_case(40, 8, chunk_size=7),
            _dcl_case(24, 8, chunk_size=5),
            _uniformity_case(40, 8, chunk_size=7),
            _mmcr_case(12, 6, 4),
            _tico_case(10, 6),
            _sigreg_case(2, 6, 3, 4),
            _wmse_case(16, 3, 16),  # one sub-batch: the draws do not change the value
            _supcon_case(12, 3, 8, chunk_size=5, classes=4),
            _byol_case(10, 8),
            _simsiam_case(10, 8),
            _ema_case(width=4, classes=10),
            _multicrop_case(2, 40, (24, 12), (2, 2), blur_kernel=5),
            *_nnclr_cases(6, 8, 40, chunk_size=7),
        ]
    return [
        _barlow_case(256, 8192, ("dense", "gram", "fused"), device=device),
        _barlow_case(2048, 8192, ("gram",), device=device, solo=False),
        # auto runs the official algorithm here: more runs, so that noise does not decide
        _barlow_case(8192, 2048, ("dense", "fused"), device=device, solo=False, min_repeats=5),
        _vicreg_case(256, 8192, ("dense", "fused"), device=device),
        _vicreg_case(2048, 8192, (), device=device),
        _vicreg_case(8192, 2048, ("dense",), device=device, min_repeats=5),
        _ntxent_case(4096, 128, chunk_size=1024),
        _ntxent_case(8192, 128, chunk_size=1024, simclr=False),
        _ntxent_case(16384, 128, chunk_size=1024, simclr=False),
        _infonce_case(256, 128, 65536, chunk_size=1024),
        _swav_case(256, 3000, 8),
        _dino_case(64, 65536, 8),
        _koleo_case(4096, 384, chunk_size=256),
        _koleo_case(16384, 384, chunk_size=256),
        _dcl_case(4096, 128, chunk_size=1024),
        _dcl_case(8192, 128, chunk_size=1024),
        _uniformity_case(4096, 128, chunk_size=256),
        _uniformity_case(16384, 128, chunk_size=256),
        _mmcr_case(512, 512, 4),
        _tico_case(4096, 256),
        _wmse_case(1024, 64, 128),
        _sigreg_case(8, 256, 512, 1024),
        _supcon_case(8192, 2, 128, chunk_size=1024),
        _supcon_case(16384, 2, 128, chunk_size=1024),
        _byol_case(4096, 256),
        _simsiam_case(4096, 256),
        _ema_case(),
        _multicrop_case(64, 256, (224, 96), (2, 6)),
        _multicrop_case(64, 512, (224, 96), (2, 6)),
        *_nnclr_cases(8192, 128, 65536, chunk_size=1024),
    ]
