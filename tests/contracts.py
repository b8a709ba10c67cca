"""The contract every loss keeps, as a table: one row per public loss function.

``tests/test_contracts.py`` runs every row through the same checks:

- the module shell built with ``options`` returns exactly what the function returns;
- float16 and bfloat16 inputs are computed in float32 (the value equals the float32 value of the
  same numbers) and their gradients come back finite in the input dtype;
- under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the value is float32 and equals the value
  without autocast;
- float64 inputs give a float64 value;
- ``torch.compile(fullgraph=True)`` matches eager in value and input gradients;
- ``torch.autograd.gradcheck`` holds in float64 on the row's small inputs;
- a row with ``repr`` checks the module's repr; a row with ``plain`` options (another path of
  the same function, e.g. unchunked) also compares its float32 values with that path's.

A row that turns a check off (``gradcheck=False``, ``compile=False``) says why in a comment.

A row says how to build its inputs (``inputs(dtype, seed)`` returns the positional arguments,
whose floating tensors are differentiated, and keyword tensors that are not) and which options
to pass. A public function of ``sslosses.functional`` that returns a loss and has no row fails
``test_every_loss_has_a_row``. What is specific to a loss (its reference values, properties,
distributed exactness, errors) stays in its own test file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import sslosses
from sslosses import functional as Fn

Args = tuple[tuple[Any, ...], dict[str, Any]]


def rows(n: int, d: int, *, dtype: torch.dtype, seed: int, count: int = 1) -> list[Tensor]:
    """``count`` seeded ``(n, d)`` standard-normal tensors in ``dtype`` (drawn in float64)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype) for _ in range(count)]


def pair(n: int = 6, d: int = 5) -> Callable[[torch.dtype, int], Args]:
    """Inputs of a two-view loss: ``(z_a, z_b)`` of shape ``(n, d)``."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        return tuple(rows(n, d, dtype=dtype, seed=seed, count=2)), {}

    return build


def crops(n: int = 4, k: int = 6, count: int = 2) -> Callable[[torch.dtype, int], Args]:
    """Inputs of a multi-crop score loss: one list of ``count`` crops ``(n, k)``."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        return (rows(n, k, dtype=dtype, seed=seed, count=count),), {}

    return build


def student_teacher(
    n: int = 4, k: int = 6, *, student: int = 3, teacher: int = 2, center: bool = True
) -> Callable[[torch.dtype, int], Args]:
    """Inputs of DINO: student crops, teacher crops (lists of ``(n, k)``) and a center."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        views = rows(n, k, dtype=dtype, seed=seed, count=student + teacher)
        kwargs = {"center": 0.1 * rows(1, k, dtype=dtype, seed=seed + 1)[0][0]} if center else {}
        return (views[:student], views[student:]), kwargs

    return build


def patches(b: int = 3, p: int = 4, k: int = 5) -> Callable[[torch.dtype, int], Args]:
    """Inputs of iBOT: student and teacher patch scores ``(b, p, k)`` and a mask ``(b, p)``."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        gen = torch.Generator().manual_seed(seed)
        s, t = (torch.randn(b, p, k, generator=gen, dtype=torch.float64).to(dtype) for _ in "st")
        masks = torch.rand(b, p, generator=gen) < 0.5
        masks[:, 0] = True  # every image has a masked patch
        center = 0.1 * torch.randn(k, generator=gen, dtype=torch.float64).to(dtype)
        return (s, t, masks), {"center": center}

    return build


def single(n: int = 7, d: int = 4) -> Callable[[torch.dtype, int], Args]:
    """Inputs of a one-tensor loss: ``(x,)`` of shape ``(n, d)``."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        return tuple(rows(n, d, dtype=dtype, seed=seed)), {}

    return build


def nnclr_views(n: int = 6, d: int = 5, k: int = 9) -> Callable[[torch.dtype, int], Args]:
    """Inputs of NNCLR: ``(z_a, z_b, p_a, p_b)`` of shape ``(n, d)`` and a ``(k, d)`` support."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        views = rows(n, d, dtype=dtype, seed=seed, count=4)
        return tuple(views), {"support": rows(k, d, dtype=dtype, seed=seed + 1)[0]}

    return build


def supcon_views(n: int = 6, d: int = 5, views: int = 3) -> Callable[[torch.dtype, int], Args]:
    """Inputs of SupCon: a list of ``views`` tensors ``(n, d)`` and the labels (3 classes)."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        labels = torch.tensor([0, 1, 0, 2, 1, 0])[:n]
        return (rows(n, d, dtype=dtype, seed=seed, count=views),), {"labels": labels}

    return build


@dataclass(frozen=True)
class Contract:
    """One loss in the contract table."""

    name: str
    function: Callable[..., Any]
    inputs: Callable[[torch.dtype, int], Args]
    options: Mapping[str, Any] = field(default_factory=dict)
    module: Callable[..., nn.Module] | None = None  # the module shell, built with **options
    output: Callable[[Any], Tensor] = lambda out: out  # the tensor the checks look at
    compile: bool = True  # torch.compile(fullgraph=True) matches eager
    compile_options: Mapping[str, Any] | None = None  # options under compile (default: options)
    gradcheck: bool = True
    half_atol: float = 0.0  # half inputs against their float32 values (0: exact)
    differentiable: tuple[int, ...] | None = None  # positional args with a gradient (None: all)
    has_grad: bool = True  # False: the output carries no gradient (e.g. Sinkhorn's targets)
    repr: str | None = None  # repr of the module built with **options
    # options of the plain path (e.g. ``{"chunk_size": None}``): the float32 value of the half,
    # autocast and compile checks (and compile's gradients) also equal the plain path's
    plain: Mapping[str, Any] | None = None
    plain_tol: float = 0.0  # rtol and atol of the half and autocast values against plain


CONTRACTS: list[Contract] = [
    Contract(
        "barlow_twins_loss",
        Fn.barlow_twins_loss,
        pair(),
        module=sslosses.BarlowTwinsLoss,
        repr="BarlowTwinsLoss(lambd=0.0051, eps=1e-05, gather_distributed=False, algorithm='auto')",
    ),
    *(
        Contract(
            f"barlow_twins_loss[{a}]",
            Fn.barlow_twins_loss,
            pair(),
            {"algorithm": a},
            module=sslosses.BarlowTwinsLoss,
        )
        for a in ("dense", "gram", "fused")
    ),
    Contract(
        "byol_loss",
        Fn.byol_loss,
        pair(),
        module=sslosses.BYOLLoss,
        differentiable=(0,),
        repr="BYOLLoss(reduction='mean')",
    ),
    Contract(
        "byol_loss[none]",
        Fn.byol_loss,
        pair(),
        {"reduction": "none"},
        module=sslosses.BYOLLoss,
        differentiable=(0,),
    ),
    Contract(
        "negative_cosine_similarity",
        Fn.negative_cosine_similarity,
        pair(),
        module=sslosses.NegativeCosineSimilarity,
        differentiable=(0,),
    ),
    Contract(
        "negative_cosine_similarity[no stop-gradient]",
        Fn.negative_cosine_similarity,
        pair(),
        {"stop_gradient": False, "reduction": "sum"},
        module=sslosses.NegativeCosineSimilarity,
        repr="NegativeCosineSimilarity(stop_gradient=False, reduction='sum')",
    ),
    Contract(
        "dino_loss",
        Fn.dino_loss,
        student_teacher(),
        module=sslosses.DINOLoss,
        differentiable=(0,),
    ),
    Contract(
        "dino_loss[sinkhorn]",
        Fn.dino_loss,
        student_teacher(center=False),
        {"centering": "sinkhorn"},
        module=sslosses.DINOLoss,
        differentiable=(0,),
    ),
    Contract(
        "ibot_patch_loss",
        Fn.ibot_patch_loss,
        patches(),
        module=sslosses.IBOTPatchLoss,
        differentiable=(0,),
    ),
    Contract("info_nce", Fn.info_nce, pair(), module=sslosses.InfoNCELoss),
    Contract(
        "info_nce[queue, chunked]",
        Fn.info_nce,
        lambda dtype, seed: (
            tuple(rows(6, 5, dtype=dtype, seed=seed, count=2)),
            {"negatives": rows(9, 5, dtype=dtype, seed=seed + 1)[0]},
        ),
        {"chunk_size": 4, "reduction": "none"},
        module=sslosses.InfoNCELoss,
        plain={"chunk_size": None},
        plain_tol=1e-6,
    ),
    Contract("sinkhorn", Fn.sinkhorn, single(6, 5), gradcheck=False, has_grad=False),
    # gradcheck would move the assignment crops' codes (stop-gradient targets) with their
    # scores: test_swav.py checks it through the predicting crops only
    Contract("swav_loss", Fn.swav_loss, crops(count=4), module=sslosses.SwAVLoss, gradcheck=False),
    Contract(
        "vicreg_loss",
        Fn.vicreg_loss,
        pair(),
        module=sslosses.VICRegLoss,
        repr="VICRegLoss(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=0.0001, "
        "gather_distributed=False, algorithm='auto')",
    ),
    *(
        Contract(
            f"vicreg_loss[{a}]",
            Fn.vicreg_loss,
            pair(),
            {"algorithm": a},
            module=sslosses.VICRegLoss,
        )
        for a in ("dense", "gram", "fused")
    ),
    Contract(
        "vicreg_terms",
        Fn.vicreg_terms,
        pair(),
        output=lambda terms: torch.stack(list(terms)),
    ),
    Contract("nt_xent", Fn.nt_xent, pair(), module=sslosses.NTXentLoss),
    Contract(
        "nt_xent[chunked]",
        Fn.nt_xent,
        pair(),
        {"chunk_size": 4, "reduction": "none"},
        module=sslosses.NTXentLoss,
        plain={"chunk_size": None},
        plain_tol=1e-6,
    ),
    Contract(
        "koleo_loss",
        Fn.koleo_loss,
        single(),
        module=sslosses.KoLeoLoss,
        repr="KoLeoLoss(eps=1e-08, gather_distributed=False, reduction='mean', chunk_size='auto')",
    ),
    Contract(
        "koleo_loss[chunked]",
        Fn.koleo_loss,
        single(),
        {"chunk_size": 3, "reduction": "sum"},
        module=sslosses.KoLeoLoss,
        plain={"chunk_size": None},
    ),
    Contract("mmcr_loss", Fn.mmcr_loss, crops(6, 5, count=3), module=sslosses.MMCRLoss),
    Contract(
        "mmcr_loss[lambd]",
        Fn.mmcr_loss,
        crops(6, 5, count=3),
        {"lambd": 0.05, "normalize": False},
        module=sslosses.MMCRLoss,
    ),
]


def tico_inputs(n: int = 6, d: int = 5) -> Callable[[torch.dtype, int], Args]:
    """Inputs of TiCo: ``(z_a, z_b)`` and a running covariance ``(d, d)`` (not differentiated)."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        a, b, m = rows(n, d, dtype=dtype, seed=seed, count=3)
        return (a, b), {"covariance": (m[:d].T @ m[:d] / d).to(dtype)}

    return build


CONTRACTS += [
    Contract("tico_loss", Fn.tico_loss, tico_inputs(), module=sslosses.TiCoLoss),
    Contract(
        "tico_loss[none]",
        Fn.tico_loss,
        tico_inputs(),
        {"reduction": "none", "normalize": False, "rho": 2.0},
        module=sslosses.TiCoLoss,
    ),
]

CONTRACTS += [
    # w_size = N: one sub-batch, so the value does not depend on the random permutation
    Contract(
        "wmse_loss", Fn.wmse_loss, crops(8, 3, count=3), {"w_size": 8}, module=sslosses.WMSELoss
    ),
    Contract(
        "wmse_loss[mse]",
        Fn.wmse_loss,
        crops(8, 3, count=2),
        {"w_size": 8, "eps": 0.1, "normalize": False},
        module=sslosses.WMSELoss,
    ),
]


def sigreg_inputs(
    views: int | None = None, n: int = 6, d: int = 4
) -> Callable[[torch.dtype, int], Args]:
    """Inputs of SIGReg / LeJEPA: ``x`` (or a list of views) and fixed unit directions ``(d, 5)``
    as ``projections`` (drawn directions would differ between the calls a row compares)."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        a = rows(d, 5, dtype=torch.float64, seed=seed + 1)[0]
        kwargs = {"projections": (a / a.norm(dim=0)).to(dtype)}
        if views is None:
            return tuple(rows(n, d, dtype=dtype, seed=seed)), kwargs
        return (rows(n, d, dtype=dtype, seed=seed, count=views),), kwargs

    return build


CONTRACTS += [
    Contract(
        "sigreg_loss", Fn.sigreg_loss, sigreg_inputs(), {"knots": 5}, module=sslosses.SIGRegLoss
    ),
    Contract(
        "lejepa_loss", Fn.lejepa_loss, sigreg_inputs(3), {"lambd": 0.3}, module=sslosses.LeJEPALoss
    ),
    *(
        Contract(
            f"nnclr_loss[{name}]",
            Fn.nnclr_loss,
            nnclr_views(),
            options,
            module=sslosses.NNCLRLoss,
            differentiable=(2, 3),  # the projections only pick neighbours: no gradient
        )
        for name, options in (
            ("symmetric", {}),
            ("asymmetric, chunked", {"symmetric": False, "chunk_size": 3, "reduction": "none"}),
        )
    ),
]

CONTRACTS += [
    Contract(
        "supcon_loss",
        Fn.supcon_loss,
        supcon_views(),
        module=sslosses.SupConLoss,
        repr=(
            "SupConLoss(temperature=0.07, base_temperature=0.07, contrast_mode='all', "
            "normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')"
        ),
    ),
    *(
        Contract(
            f"supcon_loss[{mode}, chunk_size={chunk}]",
            Fn.supcon_loss,
            supcon_views(),
            {"contrast_mode": mode, "chunk_size": chunk, "temperature": 0.3, "reduction": "none"},
            module=sslosses.SupConLoss,
            plain=None if chunk is None else {"chunk_size": None},
            plain_tol=1e-6,
        )
        for mode in ("all", "one")
        for chunk in (None, 1, 3)
    ),
    Contract(
        "supcon_loss[sum, base temperature, not normalized]",
        Fn.supcon_loss,
        supcon_views(views=2),
        {"temperature": 0.3, "base_temperature": 0.1, "normalize": False, "reduction": "sum"},
        module=sslosses.SupConLoss,
    ),
    Contract(
        "supcon_loss[one, no labels, chunked]",
        Fn.supcon_loss,
        crops(n=6, k=5, count=2),
        {"contrast_mode": "one", "chunk_size": 4, "reduction": "none"},
        module=sslosses.SupConLoss,
    ),
    Contract("dcl_loss", Fn.dcl_loss, pair(), module=sslosses.DCLLoss),
    Contract(
        "dcl_loss[chunked]",
        Fn.dcl_loss,
        pair(),
        {"chunk_size": 4, "reduction": "none"},
        module=sslosses.DCLLoss,
    ),
    # DCLW's von Mises-Fisher weights are constants of the loss (not differentiated), so
    # finite differences, which move them, disagree with its gradient by design:
    # test_dcl.py::test_dclw_weights_are_not_differentiated checks that gradient
    Contract("dclw_loss", Fn.dclw_loss, pair(), module=sslosses.DCLWLoss, gradcheck=False),
    Contract(
        "dclw_loss[chunked]",
        Fn.dclw_loss,
        pair(),
        {"chunk_size": 4, "sigma": 0.3, "reduction": "sum"},
        module=sslosses.DCLWLoss,
        gradcheck=False,
    ),
    Contract("alignment_loss", Fn.alignment_loss, pair(), module=sslosses.AlignmentLoss),
    Contract(
        "alignment_loss[alpha=1, none]",
        Fn.alignment_loss,
        pair(),
        {"alpha": 1.0, "reduction": "none"},
        module=sslosses.AlignmentLoss,
    ),
    Contract("uniformity_loss", Fn.uniformity_loss, single(), module=sslosses.UniformityLoss),
    Contract(
        "uniformity_loss[chunked]",
        Fn.uniformity_loss,
        single(),
        {"chunk_size": 3, "t": 1.0},
        module=sslosses.UniformityLoss,
    ),
]


# Variants the per-loss test files used to check by hand (issue 27): other option values, N < D,
# modules built with non-default options and their repr.
def with_queue(n: int = 6, d: int = 5, k: int = 9) -> Callable[[torch.dtype, int], Args]:
    """Inputs of InfoNCE with a queue: ``(query, key)`` ``(n, d)`` and ``negatives`` ``(k, d)``."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        return tuple(rows(n, d, dtype=dtype, seed=seed, count=2)), {
            "negatives": rows(k, d, dtype=dtype, seed=seed + 1)[0]
        }

    return build


def swav_queue(n: int = 4, k: int = 6, count: int = 4) -> Callable[[torch.dtype, int], Args]:
    """Inputs of SwAV: ``count`` crops ``(n, k)`` and a queue of scores per assignment crop."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        queue = rows(7, k, dtype=torch.float64, seed=seed + 1, count=2)
        scores = [(q / q.norm(dim=1, keepdim=True)).to(dtype) for q in queue]
        return (rows(n, k, dtype=dtype, seed=seed, count=count),), {"queue_scores": scores}

    return build


def ibot_sinkhorn(b: int = 3, p: int = 4, k: int = 5) -> Callable[[torch.dtype, int], Args]:
    """Inputs of iBOT's Sinkhorn centering: the patches of :func:`patches`, without a center."""

    def build(dtype: torch.dtype, seed: int) -> Args:
        return patches(b, p, k)(dtype, seed)[0], {}

    return build


CONTRACTS += [
    # N <= D / 2: "gram" computes in float32 there and "auto" picks it
    *(
        Contract(
            f"barlow_twins_loss[{a}, N < D/2]",
            Fn.barlow_twins_loss,
            pair(6, 16),
            {"lambd": 0.2, "eps": 1e-4, "algorithm": a},
            module=sslosses.BarlowTwinsLoss,
        )
        for a in ("auto", "dense", "gram", "fused")
    ),
    *(
        Contract(
            f"vicreg_loss[{a}, N < D/2]",
            Fn.vicreg_loss,
            pair(6, 16),
            {"sim_coeff": 2.0, "std_coeff": 3.0, "cov_coeff": 0.7, "eps": 1e-3, "algorithm": a},
            module=sslosses.VICRegLoss,
        )
        for a in ("auto", "dense", "gram", "fused")
    ),
    Contract(
        "vicreg_terms[gram, N < D/2]",
        Fn.vicreg_terms,
        pair(6, 16),
        {"cov_coeff": 2.0, "algorithm": "gram"},
        output=lambda terms: torch.stack(list(terms)),
    ),
    Contract(
        "byol_loss[sum]",
        Fn.byol_loss,
        pair(),
        {"reduction": "sum"},
        module=sslosses.BYOLLoss,
        differentiable=(0,),
    ),
    Contract(
        "negative_cosine_similarity[no stop-gradient, none]",
        Fn.negative_cosine_similarity,
        pair(),
        {"stop_gradient": False, "reduction": "none"},
        module=sslosses.NegativeCosineSimilarity,
    ),
    Contract(
        "nt_xent[no normalize, sum, gather]",
        Fn.nt_xent,
        pair(),
        {"temperature": 0.3, "normalize": False, "reduction": "sum", "gather_distributed": True},
        module=sslosses.NTXentLoss,
    ),
    *(
        Contract(
            f"nt_xent[chunk {k}, normalize={norm}]",
            Fn.nt_xent,
            pair(),
            {"temperature": 0.3, "normalize": norm, "chunk_size": k, "reduction": "none"},
            module=sslosses.NTXentLoss,
            repr=f"NTXentLoss(temperature=0.3, normalize={norm}, gather_distributed=False, "
            f"reduction='none', chunk_size={k})",
            plain=None if k is None else {"chunk_size": None},
            plain_tol=1e-6,
        )
        for k in (None, 1, 2, 5)
        for norm in (True, False)
    ),
    Contract(
        "info_nce[no normalize, chunked]",
        Fn.info_nce,
        pair(),
        {"temperature": 0.3, "normalize": False, "chunk_size": 2, "reduction": "none"},
        module=sslosses.InfoNCELoss,
        plain={"chunk_size": None},
        plain_tol=1e-6,
    ),
    Contract(
        "info_nce[v2, sum, gather]",
        Fn.info_nce,
        with_queue(),
        {"in_batch_negatives": False, "reduction": "sum", "gather_distributed": True},
        module=sslosses.InfoNCELoss,
    ),
    Contract(
        "info_nce[v2, chunked]",
        Fn.info_nce,
        with_queue(),
        {"in_batch_negatives": False, "temperature": 0.07, "chunk_size": 2, "reduction": "none"},
        module=sslosses.InfoNCELoss,
        repr="InfoNCELoss(temperature=0.07, in_batch_negatives=False, normalize=True, "
        "gather_distributed=False, reduction='none', chunk_size=2)",
        plain={"chunk_size": None},
        plain_tol=1e-6,
    ),
    *(
        Contract(
            f"koleo_loss[chunk {k}, none]",
            Fn.koleo_loss,
            single(),
            {"chunk_size": k, "reduction": "none"},
            module=sslosses.KoLeoLoss,
            plain=None if k is None else {"chunk_size": None},
        )
        for k in (None, 3)
    ),
    Contract(
        "koleo_loss[chunk 1, none, eps]",
        Fn.koleo_loss,
        single(),
        {"eps": 1e-6, "chunk_size": 1, "reduction": "none"},
        module=sslosses.KoLeoLoss,
        repr="KoLeoLoss(eps=1e-06, gather_distributed=False, reduction='none', chunk_size=1)",
        plain={"chunk_size": None},
    ),
    Contract(
        "koleo_loss[plain, sum, gather]",
        Fn.koleo_loss,
        single(),
        {"chunk_size": None, "reduction": "sum", "gather_distributed": True},
        module=sslosses.KoLeoLoss,
    ),
    # gradcheck off as in the swav_loss row (test_swav.py checks the predicting crops)
    Contract(
        "swav_loss[queue, assign_crops]",
        Fn.swav_loss,
        swav_queue(),
        {"temperature": 0.2, "epsilon": 0.03, "sinkhorn_iterations": 5, "assign_crops": [1, 0]},
        module=sslosses.SwAVLoss,
        repr="SwAVLoss(temperature=0.2, epsilon=0.03, sinkhorn_iterations=5, "
        "assign_crops=(1, 0), gather_distributed=False)",
        gradcheck=False,
    ),
    Contract(
        "dino_loss[temperatures]",
        Fn.dino_loss,
        student_teacher(),
        {"student_temperature": 0.2, "teacher_temperature": 0.05},
        module=sslosses.DINOLoss,
        repr="DINOLoss(student_temperature=0.2, teacher_temperature=0.05, centering='center', "
        "gather_distributed=False)",
        differentiable=(0,),
    ),
    Contract(
        "ibot_patch_loss[temperatures]",
        Fn.ibot_patch_loss,
        patches(),
        {"student_temperature": 0.2, "teacher_temperature": 0.05},
        module=sslosses.IBOTPatchLoss,
        repr="IBOTPatchLoss(student_temperature=0.2, teacher_temperature=0.05, "
        "centering='center', gather_distributed=False)",
        differentiable=(0,),
    ),
    Contract(
        "ibot_patch_loss[sinkhorn]",
        Fn.ibot_patch_loss,
        ibot_sinkhorn(),
        {"centering": "sinkhorn", "sinkhorn_iterations": 5},
        module=sslosses.IBOTPatchLoss,
        repr="IBOTPatchLoss(student_temperature=0.1, teacher_temperature=0.07, "
        "centering='sinkhorn', sinkhorn_iterations=5, gather_distributed=False)",
        differentiable=(0,),
    ),
]

# Public functions of ``sslosses.functional`` that are not losses (rules, updates, assignments).
NOT_LOSSES = {"resolve_chunk_size", "select_algorithm", "ema_update_", "nearest_neighbours"}
