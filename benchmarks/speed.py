"""Speed and memory micro-benchmarks: sslosses against the computations it replaces.

For every loss and component, each implementation runs on the same inputs: sslosses, the
original repositories' formulations (``benchmarks/baselines.py``) and lightly's implementation
when ``import lightly`` works. Reported per case:

- forward and backward time: the median over repeated runs after warm-up, timed separately
  with ``torch.cuda.synchronize`` on GPU; the implementations of a case run round-robin so that
  load changes on a shared machine hit all of them alike;
- peak extra memory: on CPU, the peak resident set size during one forward + backward minus the
  resident set size after setup (inputs allocated), in a fresh subprocess per implementation
  (``python benchmarks/speed.py --memory-case ...``; the high-water mark is reset after setup
  through ``/proc/self/clear_refs``, else ``ru_maxrss`` after minus ``ru_maxrss`` before); on
  CUDA, ``torch.cuda.max_memory_allocated`` minus the memory allocated after setup;
- ratios against the case's baseline (time: baseline / implementation, so > 1 is faster;
  memory: baseline / implementation, so > 1 is smaller), and the issue's targets.

Everything runs single-threaded: ``OMP_NUM_THREADS=1`` is set before torch is imported (here
and in the subprocesses), because 2-thread timings on small shared machines are erratic.

Usage::

    python benchmarks/speed.py                         # everything; writes benchmarks/results/
    python benchmarks/speed.py --only barlow,ntxent --repeats 5
    python benchmarks/speed.py --quick                 # tiny shapes: a smoke check, no files
    python benchmarks/speed.py --list                  # the cases and implementations
"""

from __future__ import annotations

import os

# Before torch is imported (and inherited by the memory subprocesses): 2-thread timings on the
# small shared machines these numbers come from are erratic, so everything is single-threaded.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines

ROOT = Path(__file__).resolve().parent.parent
GROUPS = (
    "barlow",
    "vicreg",
    "ntxent",
    "infonce",
    "swav",
    "dino",
    "byol",
    "simsiam",
    "ema",
    "multicrop",
)
MB = 1024.0 * 1024.0
OPTIONAL_SOURCES = ("lightly", "torchvision", "kornia")  # timed only where they import
SLOW_CALL_S = 2.0


# --------------------------------------------------------------------------------------------
# Cases and implementations
# --------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A ready-to-run implementation: ``step()`` is the measured call."""

    step: Callable[[], Any]
    leaves: list[Tensor] = field(default_factory=list)  # their .grad is reset before each call
    note: str = ""  # shown after the implementation's label, e.g. what "auto" picked


Inputs = dict[str, Any]


@dataclass(frozen=True)
class Impl:
    """One implementation of a case.

    ``prepare`` builds what the call needs beyond the shared inputs (modules, copies) and
    returns the step; it raises ``ImportError`` when the implementation is not available.
    ``exact`` marks implementations that compute the same value as sslosses (checked by the
    smoke test). ``estimate`` is a rough upper bound of the extra memory in bytes, used to skip
    implementations that would not fit.
    """

    key: str
    label: str
    source: str  # "sslosses" | "baseline" | "lightly"
    prepare: Callable[[Inputs], Prepared]
    exact: bool = True
    estimate: float = 0.0


@dataclass(frozen=True)
class Case:
    group: str
    key: str
    shape: str
    setup: Callable[[torch.device], Inputs]
    impls: tuple[Impl, ...]
    baseline: str
    backward: bool = True
    items: int = 0  # images per call, for an images/s column
    min_repeats: int = 3

    @property
    def id(self) -> str:
        return f"{self.group}:{self.key}"


def _leaf(*shape: int, device: torch.device, gen: torch.Generator, scale: float = 1.0) -> Tensor:
    x = torch.randn(*shape, generator=gen)
    if scale != 1.0:
        x.mul_(scale)
    return x.to(device).requires_grad_(True)


def _lightly(module: str, name: str) -> Any:
    """``getattr(import_module(module), name)``, or ``ImportError`` when lightly is absent."""
    if importlib.util.find_spec("lightly") is None:
        raise ImportError("lightly is not installed")
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except Exception as exc:  # a broken optional install counts as absent
        raise ImportError(f"{module}.{name} failed to import: {exc!r}") from exc


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
    loss = _lightly("lightly.loss", "BarlowTwinsLoss")(lambda_param=0.0051)
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _barlow_auto_choice(n: int, d: int, device: torch.device, dtype: torch.dtype) -> str | None:
    """What ``algorithm="auto"`` runs for this shape, or ``None`` if that cannot be asked."""
    try:
        from sslosses.barlow_twins import select_algorithm
    except ImportError:
        return None
    del device, dtype  # the measured rule depends on the shape only
    return str(select_algorithm(n, d))


def _barlow_ours(algorithm: str) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        from sslosses.barlow_twins import barlow_twins_loss

        z_a, z_b = inputs["z_a"], inputs["z_b"]
        alg: Any = algorithm
        prep = _loss_step(
            lambda: barlow_twins_loss(z_a, z_b, lambd=0.0051, algorithm=alg),
            inputs,
            "z_a",
            "z_b",
        )
        if algorithm == "auto":
            choice = _barlow_auto_choice(z_a.shape[0], z_a.shape[1], z_a.device, z_a.dtype)
            prep.note = "" if choice is None else f"runs {choice}"
        return prep

    return prepare


def _barlow_case(
    n: int,
    d: int,
    algorithms: Sequence[str],
    *,
    device: torch.device | None = None,
    solo: bool = True,
    min_repeats: int = 3,
) -> Case:
    """Baselines, ``"auto"`` and the explicit ``algorithms``.

    With a ``device``, the explicit algorithm that ``"auto"`` picks there is left out (it would
    time the same code twice).
    """
    dd = 4.0 * d * d  # one D x D float32 matrix
    impls = [
        Impl(
            "official", "official main.py (baseline)", "baseline", _barlow_official, estimate=4 * dd
        )
    ]
    if solo:
        impls.append(
            Impl("solo-learn", "solo-learn barlow.py", "baseline", _barlow_solo, estimate=12 * dd)
        )
    impls.append(
        Impl("lightly", "lightly BarlowTwinsLoss", "lightly", _barlow_lightly, estimate=6 * dd)
    )
    impls.append(Impl("auto", "sslosses auto", "sslosses", _barlow_ours("auto"), estimate=4 * dd))
    choice = None if device is None else _barlow_auto_choice(n, d, device, torch.float32)
    for alg in algorithms:
        if alg != choice:
            impls.append(
                Impl(alg, f"sslosses {alg}", "sslosses", _barlow_ours(alg), estimate=4 * dd)
            )
    return Case(
        "barlow",
        f"{n}x{d}",
        f"N={n} D={d}",
        _pair_setup(n, d),
        tuple(impls),
        "official",
        min_repeats=min_repeats,
    )


# VICReg -------------------------------------------------------------------------------------
def _vicreg_official(inputs: Inputs) -> Prepared:
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: baselines.official_vicreg(z_a, z_b), inputs, "z_a", "z_b")


def _vicreg_lightly(inputs: Inputs) -> Prepared:
    loss = _lightly("lightly.loss", "VICRegLoss")()
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _vicreg_ours(algorithm: str) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        from sslosses.functional import vicreg_loss

        z_a, z_b = inputs["z_a"], inputs["z_b"]
        alg: Any = algorithm
        prep = _loss_step(lambda: vicreg_loss(z_a, z_b, algorithm=alg), inputs, "z_a", "z_b")
        if algorithm == "auto":
            prep.note = f"runs {_vicreg_auto_choice(z_a.shape[0], z_a.shape[1])}"
        return prep

    return prepare


def _vicreg_auto_choice(n: int, d: int) -> str:
    from sslosses.barlow_twins import select_algorithm

    return str(select_algorithm(n, d, symmetric=True))


def _vicreg_case(
    n: int,
    d: int,
    algorithms: Sequence[str],
    *,
    device: torch.device | None = None,
    min_repeats: int = 3,
) -> Case:
    """The official formulation, lightly (where importable), ``"auto"`` and ``algorithms``.

    VICReg's covariance term uses the rule and kernels of Barlow Twins (one shared primitive).
    With a ``device``, the explicit algorithm that ``"auto"`` picks is left out.
    """
    dd = 4.0 * d * d  # one D x D float32 matrix
    impls = [
        Impl("official", "official main_vicreg.py", "baseline", _vicreg_official, estimate=8 * dd),
        Impl("lightly", "lightly VICRegLoss", "lightly", _vicreg_lightly, estimate=8 * dd),
        Impl("auto", "sslosses auto", "sslosses", _vicreg_ours("auto"), estimate=8 * dd),
    ]
    choice = None if device is None else _vicreg_auto_choice(n, d)
    for alg in algorithms:
        if alg != choice:
            impls.append(
                Impl(alg, f"sslosses {alg}", "sslosses", _vicreg_ours(alg), estimate=8 * dd)
            )
    return Case(
        "vicreg",
        f"{n}x{d}",
        f"N={n} D={d}",
        _pair_setup(n, d),
        tuple(impls),
        "official",
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
    loss = _lightly("lightly.loss", "NTXentLoss")(temperature=0.1)
    z_a, z_b = inputs["z_a"], inputs["z_b"]
    return _loss_step(lambda: loss(z_a, z_b), inputs, "z_a", "z_b")


def _ntxent_ours(chunk_size: int | str | None) -> Callable[[Inputs], Prepared]:
    def prepare(inputs: Inputs) -> Prepared:
        from sslosses.nt_xent import nt_xent

        z_a, z_b = inputs["z_a"], inputs["z_b"]
        chunk: Any = chunk_size
        prep = _loss_step(
            lambda: nt_xent(z_a, z_b, temperature=0.1, chunk_size=chunk), inputs, "z_a", "z_b"
        )
        if chunk_size == "auto":
            rows = 2 * z_a.shape[0]
            picked = _chunk_auto_choice(rows, rows, z_a.device)
            prep.note = "" if picked == "?" else f"runs {picked}"
        return prep

    return prepare


def _chunk_auto_choice(rows: int, cols: int, device: torch.device) -> str:
    """What ``chunk_size="auto"`` runs for these logits: ``"plain"``, a block size, or ``"?"``."""
    try:
        from sslosses.functional import resolve_chunk_size
    except ImportError:  # an sslosses without the "auto" rule
        return "?"
    picked = resolve_chunk_size("auto", rows, cols, device)
    return "plain" if picked is None else f"chunk_size={picked}"


def _ntxent_auto_estimate(n: int) -> float:
    """Extra bytes of ``chunk_size="auto"`` under the CPU rule (for skipping what cannot fit)."""
    picked = _chunk_auto_choice(2 * n, 2 * n, torch.device("cpu"))
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
    return Case("ntxent", str(n), f"N={n} D={d}", _pair_setup(n, d), tuple(impls), "plain")


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
        from sslosses.info_nce import info_nce

        q, k, queue = inputs["q"], inputs["k"], inputs["queue_kd"]
        return _loss_step(
            lambda: info_nce(
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
    return Case("infonce", f"{n}x{k}", f"N={n} D={d} K={k}", _infonce_setup(n, d, k), impls, "moco")


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
    loss = _lightly("lightly.loss", "SwaVLoss")(
        temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05
    )
    scores = inputs["scores"]
    # lightly returns shape (1,); reshape to the 0-d loss the other implementations return
    return Prepared(lambda: loss(scores[:2], scores[2:]).reshape(()), list(scores))


def _swav_ours(inputs: Inputs) -> Prepared:
    from sslosses.swav import swav_loss

    scores = inputs["scores"]
    return Prepared(lambda: swav_loss(scores), list(scores))


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
    from sslosses.dino import dino_loss

    student, teacher, center = inputs["student"], inputs["teacher"], inputs["center"]
    return Prepared(lambda: dino_loss(student, teacher, center=center), list(student))


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
    )


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
    from sslosses.byol import byol_loss

    return _pair_loss_case(
        "byol",
        n,
        d,
        ("deepmind regression_loss (baseline)", baselines.byol_loss),
        ("sslosses byol_loss", byol_loss),
    )


def _simsiam_case(n: int, d: int) -> Case:
    from sslosses.simsiam import negative_cosine_similarity

    return _pair_loss_case(
        "simsiam",
        n,
        d,
        ("official CosineSimilarity (baseline)", baselines.simsiam_loss),
        ("sslosses negative_cosine_similarity", negative_cosine_similarity),
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
    update_momentum = _lightly("lightly.models.utils", "update_momentum")
    online = inputs["online"]
    target = _ema_copy(online)

    def step() -> list[Tensor]:
        update_momentum(online, target, MOMENTUM)
        return list(target.parameters())

    return Prepared(step)


def _ema_functional(inputs: Inputs) -> Prepared:
    from sslosses.ema import ema_update_

    return _ema_baseline(ema_update_)(inputs)


def _ema_module(inputs: Inputs) -> Prepared:
    from sslosses.ema import EMA

    online = inputs["online"]
    ema = EMA(online, momentum=MOMENTUM)

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
        from sslosses.transforms import swav_transform

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


def _optional(module: str) -> Any:
    """``import_module(module)``, or ``ImportError`` when it is absent or broken."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ImportError(f"{module.split('.')[0]} is not installed")
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a broken optional install counts as absent
        raise ImportError(f"{module} failed to import: {exc!r}") from exc


def _multicrop_torchvision(
    sizes: tuple[int, int], counts: tuple[int, int], blur_kernel: int, antialias: bool
) -> Callable[[Inputs], Prepared]:
    """SwAV's recipe (``src/multicropdataset.py``) with torchvision's ``transforms.v2`` on uint8
    tensors, one image and one crop at a time, then stacked: what a DataLoader does."""

    def prepare(inputs: Inputs) -> Prepared:
        v2 = _optional("torchvision.transforms.v2")
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
        K = _optional("kornia.augmentation")
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
            _byol_case(10, 8),
            _simsiam_case(10, 8),
            _ema_case(width=4, classes=10),
            _multicrop_case(2, 40, (24, 12), (2, 2), blur_kernel=5),
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
        _byol_case(4096, 256),
        _simsiam_case(4096, 256),
        _ema_case(),
        _multicrop_case(64, 256, (224, 96), (2, 6)),
        _multicrop_case(64, 512, (224, 96), (2, 6)),
    ]


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_once(prepared: Prepared, backward: bool, device: torch.device) -> tuple[float, float]:
    """One timed call: (forward seconds, backward seconds)."""
    for t in prepared.leaves:
        t.grad = None
    _sync(device)
    t0 = time.perf_counter()
    out = prepared.step()
    _sync(device)
    t1 = time.perf_counter()
    if backward:
        out.backward()
        _sync(device)
    t2 = time.perf_counter()
    del out
    return t1 - t0, t2 - t1


@dataclass
class Timing:
    forward_ms: float
    backward_ms: float | None
    total_ms: float
    repeats: int
    warmup: int


def time_impls(
    prepared: dict[str, Prepared],
    *,
    backward: bool,
    device: torch.device,
    repeats: int,
    budget_s: float,
    min_repeats: int = 3,
) -> dict[str, Timing]:
    """Warm up, then time every implementation round-robin; medians of the repeats.

    Each implementation gets ``repeats`` runs, cut to what fits in ``budget_s`` seconds (but
    never fewer than ``min_repeats`` unless ``repeats`` is smaller). A first call longer than
    ``SLOW_CALL_S`` is its own warm-up and counts as the first run.
    """
    warm: dict[str, int] = {}
    first: dict[str, float] = {}
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in prepared}
    for key, prep in prepared.items():
        f, b = call_once(prep, backward, device)
        warm[key] = 1
        first[key] = f + b
        if first[key] > SLOW_CALL_S:  # one-time costs are < 1% of such a call: it counts
            samples[key].append((f, b))
            warm[key] = 0
        elif first[key] < 0.5:  # cheap: a couple more warm-up calls
            for _ in range(2):
                f, b = call_once(prep, backward, device)
                warm[key] += 1
            first[key] = f + b
    counts = {  # further runs: up to `repeats` in all, cut by the budget, >= min_repeats
        k: max(
            0,
            min(repeats, max(min_repeats, int(budget_s / max(first[k], 1e-9)))) - len(samples[k]),
        )
        for k in prepared
    }
    for r in range(max(counts.values(), default=0)):
        for key, prep in prepared.items():
            if r < counts[key]:
                samples[key].append(call_once(prep, backward, device))
    out: dict[str, Timing] = {}
    for key, runs in samples.items():
        fwd = statistics.median(r[0] for r in runs) * 1e3
        bwd = statistics.median(r[1] for r in runs) * 1e3 if backward else None
        tot = statistics.median(r[0] + r[1] for r in runs) * 1e3
        out[key] = Timing(fwd, bwd, tot, len(runs), warm[key])
    return out


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure_memory_here(case: Case, impl: Impl, device: torch.device) -> dict[str, Any]:
    """Peak extra memory of one call, in this process (the ``--memory-case`` child, or CUDA)."""
    # Run every implementation of the group once on tiny inputs first: the first use of a
    # kernel maps its code pages into RSS (about 1 MB each), which is not the case's memory.
    for tiny in build_cases(quick=True):
        if tiny.group == case.group:
            tiny_inputs = tiny.setup(device)
            for tiny_impl in tiny.impls:
                with contextlib.suppress(ImportError):
                    call_once(tiny_impl.prepare(tiny_inputs), tiny.backward, device)
            del tiny_inputs
    inputs = case.setup(device)
    prep = impl.prepare(inputs)
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call_once(prep, case.backward, device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_extra_mb": (peak - base) / MB, "method": "cuda max_memory_allocated"}
    rss_kb = _proc_status_kb("VmRSS")
    if _reset_peak_rss() and rss_kb is not None:
        base_kb = _proc_status_kb("VmRSS") or rss_kb
        call_once(prep, case.backward, device)
        peak_kb = _proc_status_kb("VmHWM") or _maxrss_kb()
        method = "peak RSS (VmHWM reset after setup) - RSS after setup"
    else:
        base_kb = _maxrss_kb()
        call_once(prep, case.backward, device)
        peak_kb = _maxrss_kb()
        method = "ru_maxrss after - ru_maxrss after setup"
    return {
        "peak_extra_mb": max(peak_kb - base_kb, 0) / 1024.0,
        "setup_rss_mb": base_kb / 1024.0,
        "method": method,
    }


def measure_memory_subprocess(
    case: Case, impl: Impl, *, quick: bool, device: torch.device, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Run ``speed.py --memory-case`` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-case", case.id, "--impl"]
    cmd += [impl.key, "--device", str(device)]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    # Return freed blocks to the OS at once, so that RSS follows live allocations.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"memory subprocess timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"memory subprocess failed (rc={proc.returncode}): {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _available_bytes(device: torch.device) -> float:
    """Free memory where the case will run: GPU memory on CUDA, else ``MemAvailable``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


# --------------------------------------------------------------------------------------------
# Running the suite
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    group: str
    case: str
    shape: str
    impl: str
    label: str
    source: str
    status: str  # "ok" | "missing" | "unavailable" | "skipped" | "error"
    reason: str = ""
    forward_ms: float | None = None
    backward_ms: float | None = None
    total_ms: float | None = None
    repeats: int = 0
    warmup: int = 0
    peak_extra_mb: float | None = None
    memory_method: str = ""
    items_per_s: float | None = None
    speedup: float | None = None  # baseline time / this time
    memory_ratio: float | None = None  # baseline memory / this memory
    baseline: bool = False


def run_case(
    case: Case,
    *,
    device: torch.device,
    repeats: int,
    budget_s: float,
    memory: bool,
    quick: bool,
    memory_limit: float,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Time (and measure memory of) every implementation of one case."""
    rows: dict[str, Row] = {}
    inputs = case.setup(device)
    prepared: dict[str, Prepared] = {}
    for impl in case.impls:
        row = Row(case.group, case.id, case.shape, impl.key, impl.label, impl.source, "ok")
        row.baseline = impl.key == case.baseline
        rows[impl.key] = row
        if impl.estimate > memory_limit:
            row.status = "skipped"
            row.reason = (
                f"needs ~{impl.estimate / 2**30:.1f} GiB, limit {memory_limit / 2**30:.1f} GiB"
            )
            continue
        try:
            prepared[impl.key] = impl.prepare(inputs)
            if prepared[impl.key].note:
                row.label += f" ({prepared[impl.key].note})"
        except ImportError as exc:
            optional = impl.source in OPTIONAL_SOURCES
            row.status = "unavailable" if optional else "missing"
            row.reason = str(exc) or type(exc).__name__
        except Exception as exc:
            row.status = "error"
            row.reason = f"{type(exc).__name__}: {exc}"
    runnable = dict(prepared)
    timing_args: dict[str, Any] = {
        "backward": case.backward,
        "device": device,
        "repeats": repeats,
        "budget_s": budget_s,
        "min_repeats": case.min_repeats,
    }
    try:
        timings = time_impls(runnable, **timing_args)
    except Exception as exc:  # one failing implementation: time the others alone
        timings = {}
        for key, prep in runnable.items():
            try:
                timings.update(time_impls({key: prep}, **timing_args))
            except Exception as inner:
                rows[key].status = "error"
                rows[key].reason = f"{type(inner).__name__}: {inner}"
        log(f"  note: round-robin timing failed ({exc!r}); timed one by one")
    for key, t in timings.items():
        row = rows[key]
        row.forward_ms, row.backward_ms, row.total_ms = t.forward_ms, t.backward_ms, t.total_ms
        row.repeats, row.warmup = t.repeats, t.warmup
        if case.items:
            row.items_per_s = case.items / (t.total_ms / 1e3)
    del prepared, runnable, inputs
    gc.collect()
    if memory:
        impls = {impl.key: impl for impl in case.impls}
        for key in timings:
            if device.type == "cuda":
                res = measure_memory_here(case, impls[key], device)
                gc.collect()
                torch.cuda.empty_cache()
            else:
                res = measure_memory_subprocess(case, impls[key], quick=quick, device=device)
            if "error" in res:
                rows[key].reason = (rows[key].reason + " " + res["error"]).strip()
            else:
                rows[key].peak_extra_mb = float(res["peak_extra_mb"])
                rows[key].memory_method = str(res["method"])
    base = rows[case.baseline]
    for row in rows.values():
        if row.total_ms and base.total_ms:
            row.speedup = base.total_ms / row.total_ms
        # below 0.1 MB (RSS moves in 4 KiB pages) a ratio means nothing: left empty
        if (
            row.peak_extra_mb is not None
            and base.peak_extra_mb is not None
            and (row.peak_extra_mb >= 0.1)
        ):
            row.memory_ratio = base.peak_extra_mb / row.peak_extra_mb
    return list(rows.values())


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
def _find(rows: Sequence[Row], case: str, impl: str) -> Row | None:
    for row in rows:
        if row.case == case and row.impl == impl and row.status == "ok":
            return row
    return None


def evaluate_targets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The issue's targets, measured in this run (``None`` where a case did not run)."""
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, ok: bool | None, unit: str = "x") -> None:
        shown = (
            "n/a"
            if value is None
            else f"{value:.2f}{unit}"
            if unit == "x"
            else f"{value:.0f} {unit}"
        )
        status = "not run" if ok is None else "reached" if ok else "NOT reached"
        if goal == "(measured)" and value is not None:  # a measurement, not a target
            status = "measured"
        out.append(
            {"target": name, "goal": goal, "measured": value, "shown": shown, "status": status}
        )

    def ratio(case: str, num: str, den: str, attr: str) -> float | None:
        a, b = _find(rows, case, num), _find(rows, case, den)
        if a is None or b is None:
            return None
        va, vb = getattr(a, attr), getattr(b, attr)
        if va is None or vb is None:
            return None
        return float(va) / max(float(vb), 0.01)

    for group, title in (("barlow", "Barlow Twins"), ("vicreg", "VICReg")):
        # the same targets for both losses on the shared off-diagonal kernel
        t = ratio(f"{group}:256x8192", "official", "auto", "total_ms")
        add(
            f"{title} N=256 D=8192: time, official / sslosses auto",
            ">= 20x",
            t,
            None if t is None else t >= 20,
        )
        m = ratio(f"{group}:256x8192", "official", "auto", "peak_extra_mb")
        add(
            f"{title} N=256 D=8192: peak extra memory, official / sslosses auto",
            ">= 10x",
            m,
            None if m is None else m >= 10,
        )
        for case in dict.fromkeys(r.case for r in rows if r.group == group):
            t = ratio(case, "official", "auto", "total_ms")
            shape = next(r.shape for r in rows if r.case == case)
            add(
                f"{title} {shape}: sslosses auto never slower than official",
                ">= 1x",
                t,
                None if t is None else t >= 1,
            )
    for den, what in (
        ("plain", "the plain logits baseline"),
        ("dense", "sslosses chunk_size=None"),
    ):
        m = ratio("ntxent:8192", den, "chunked", "peak_extra_mb")
        add(
            f"NT-Xent N=8192: peak extra memory, {what} / chunked",
            ">= 10x",
            m,
            None if m is None else m >= 10,
        )
        t = ratio("ntxent:8192", "chunked", den, "total_ms")
        add(
            f"NT-Xent N=8192: time, chunked / {what}", "<= 1.1x", t, None if t is None else t <= 1.1
        )
    row = _find(rows, "ntxent:16384", "chunked")
    mem = None if row is None else row.peak_extra_mb
    add(
        "NT-Xent N=16384: chunked peak extra memory",
        "<= 1024 MB",
        mem,
        None if mem is None else mem <= 1024,
        unit="MB",
    )
    ema_case = next((r.case for r in rows if r.group == "ema"), "ema:resnet50w64")
    for base, base_what in (("moco", "MoCo's loop"), ("loop", "in-place loop")):
        for impl, what in (("module", "EMA.update"), ("functional", "ema_update_")):
            t = ratio(ema_case, base, impl, "total_ms")
            add(
                f"EMA ResNet-50: time, {base_what} / {what}",
                ">= 3x",
                t,
                None if t is None else t >= 3,
            )
    mc_cases = list(dict.fromkeys(r.case for r in rows if r.group == "multicrop"))
    for mc_case in mc_cases or ["multicrop:64x256"]:
        images = mc_case.split(":")[1]
        t = ratio(mc_case, "loop", "sslosses", "total_ms")
        add(
            f"Multi-crop {images}: images/s, sslosses / per-sample loop (both antialiased)",
            ">= 3x",
            t,
            None if t is None else t >= 3,
        )
        for other, what in (
            ("torchvision", "torchvision v2 per sample (antialias)"),
            ("torchvision-noaa", "torchvision v2 per sample (antialias=False)"),
            ("kornia", "Kornia batched"),
        ):
            t = ratio(mc_case, other, "sslosses", "total_ms")
            add(
                f"Multi-crop {images}: images/s, sslosses default / {what}",
                ">= 1x",
                t,
                None if t is None else t >= 1,
            )
        t = ratio(mc_case, "sslosses", "sslosses-noaa", "total_ms")
        add(
            f"Multi-crop {images}: cost of antialiasing, sslosses time True / False",
            "(measured)",
            t,
            None,
        )
    return out


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": "float32",
        "lightly": _lightly_version(),
        "kornia": _package_version("kornia"),
        "torchvision": _package_version("torchvision"),
        "git": commit,
        "load_average_start": _load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return info


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine shows up here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _lightly_version() -> str | None:
    return _package_version("lightly")


def _package_version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def _fmt_load(load: list[float] | None) -> str:
    return "n/a" if not load else "/".join(f"{x:.1f}" for x in load)


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _table(
    header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]
) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return [line(header), sep, *(line(r) for r in body)]


GROUP_TITLES = {
    "barlow": "Barlow Twins",
    "vicreg": "VICReg",
    "ntxent": "NT-Xent (SimCLR)",
    "infonce": "InfoNCE with a queue (MoCo v2)",
    "swav": "SwAV",
    "dino": "DINO",
    "byol": "BYOL",
    "simsiam": "SimSiam",
    "ema": "EMA (target network update)",
    "multicrop": "Multi-crop augmentation",
}


def results_table(rows: Sequence[Row], group: str) -> list[str]:
    sel = [r for r in rows if r.group == group]
    if not sel:
        return []
    items = any(r.items_per_s is not None for r in sel)
    backward = any(r.backward_ms is not None for r in sel)
    header = ["shape", "implementation"]
    header += ["forward ms", "backward ms", "total ms"] if backward else ["time ms"]
    if items:
        header.append("images/s")
    header += ["speed-up", "peak extra MB", "memory saving"]
    right = [False, False] + [True] * (len(header) - 2)
    body: list[list[str]] = []
    for r in sel:
        name = r.label
        if r.status != "ok":
            cells = [r.shape, f"{name}: {r.status} ({r.reason})"] + ["-"] * (len(header) - 2)
            body.append(cells)
            continue
        cells = [r.shape, name]
        cells += (
            [_fmt(r.forward_ms), _fmt(r.backward_ms), _fmt(r.total_ms)]
            if backward
            else [_fmt(r.total_ms)]
        )
        if items:
            cells.append(_fmt(r.items_per_s))
        cells += [
            _fmt(r.speedup, 2, "x"),
            _fmt(r.peak_extra_mb),
            _fmt(r.memory_ratio, 2, "x"),
        ]
        body.append(cells)
    return _table(header, body, right)


def render_markdown(report: dict[str, Any], rows: Sequence[Row]) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        "# sslosses speed benchmark",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; {m['platform']}",
        f"- Software: Python {m['python']}, torch {m['torch']}, lightly "
        f"{m['lightly'] or 'not installed'}, kornia {m.get('kornia') or 'not installed'}, "
        f"torchvision {m.get('torchvision') or 'not installed'}; git {m['git'] or 'n/a'}; "
        f"{m['date']}",
        f"- Device: {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}, {m['dtype']}",
        f"- Load average (1/5/15 min) at start {_fmt_load(m.get('load_average_start'))}, at end "
        f"{_fmt_load(report.get('load_average_end'))}; run took {report['elapsed_s'] / 60:.1f} min",
        f"- Threads: OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, torch.get_num_threads()="
        f"{m['torch_threads']} (single-threaded on purpose: 2-thread timings on small shared "
        "machines are erratic)",
        f"- Time: median of up to {s['repeats']} runs after warm-up, cut to about "
        f"{s['budget_s']:.0f} s per implementation but never below 3 (5 for Barlow Twins "
        "N=8192 D=2048); a first call over 2 s counts as a run; forward and backward timed "
        "separately; the implementations of a case run round-robin",
        "- Memory: " + s["memory_method"],
        "- Speed-up = baseline time / time; memory saving = baseline peak extra / peak extra "
        "(> 1 is better); the baseline of each case is marked (baseline)",
        "",
    ]
    if report["targets"]:
        tbody = [[t["target"], t["goal"], t["shown"], t["status"]] for t in report["targets"]]
        lines += ["## Targets", ""]
        lines += _table(["target", "goal", "measured", "status"], tbody, [False, True, True, False])
    for group in GROUPS:
        table = results_table(rows, group)
        if table:
            lines += ["", f"## {GROUP_TITLES[group]}", "", *table]
    return "\n".join(lines) + "\n"


def _print_rows(rows: Sequence[Row], log: Callable[[str], None]) -> None:
    for r in rows:
        if r.status != "ok":
            log(f"  {r.label:40s} {r.status}: {r.reason}")
            continue
        bwd = "" if r.backward_ms is None else f" bwd {r.backward_ms:10.2f}"
        mem = "" if r.peak_extra_mb is None else f"  mem {r.peak_extra_mb:9.1f} MB"
        sp = "" if r.speedup is None else f"  x{r.speedup:7.2f}"
        mr = "" if r.memory_ratio is None else f" (mem x{r.memory_ratio:.2f})"
        log(
            f"  {r.label:40s} fwd {r.forward_ms:10.2f}{bwd} total {r.total_ms:10.2f} ms"
            f" [{r.repeats}]{sp}{mem}{mr}"
        )


def run_suite(
    cases: Sequence[Case],
    *,
    device: torch.device,
    repeats: int,
    budget_s: float,
    memory: bool,
    quick: bool,
    memory_limit: float,
    log: Callable[[str], None] = print,
) -> list[Row]:
    rows: list[Row] = []
    for case in cases:
        start = time.perf_counter()
        log(f"{GROUP_TITLES[case.group]} {case.shape}")
        case_rows = run_case(
            case,
            device=device,
            repeats=repeats,
            budget_s=budget_s,
            memory=memory,
            quick=quick,
            memory_limit=memory_limit,
            log=log,
        )
        _print_rows(case_rows, log)
        log(f"  ({time.perf_counter() - start:.0f} s)")
        rows += case_rows
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Forward/backward time and peak extra memory of sslosses vs baselines."
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated groups to run, from: {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per case (default 20)")
    parser.add_argument(
        "--budget",
        type=float,
        default=8.0,
        help="seconds of timed runs per implementation and case before repeats are cut "
        "(never below 3 runs; default 8)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke check")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for speed.json and speed.md (default benchmarks/results; "
        "with --quick nothing is written unless --out is given)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="skip implementations whose estimated extra memory exceeds this "
        "(default: half of the free memory: MemAvailable, or free GPU memory on CUDA)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="SPEED_JSON",
        help="rewrite speed.md next to an existing speed.json from its numbers, and exit",
    )
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    groups = [g for g in args.only.split(",") if g]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(
            f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    args.groups = groups or list(GROUPS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file
    torch.set_num_threads(1)
    device = torch.device(args.device)
    cases = [c for c in build_cases(args.quick, device) if c.group in args.groups]

    if args.memory_case is not None:  # child process: one memory measurement, one JSON line
        case = next((c for c in build_cases(args.quick, device) if c.id == args.memory_case), None)
        if case is None:
            print(f"unknown case {args.memory_case!r}", file=sys.stderr)
            return 2
        impl = next((i for i in case.impls if i.key == args.impl), None)
        if impl is None:
            print(f"unknown implementation {args.impl!r} for {case.id}", file=sys.stderr)
            return 2
        print(json.dumps(measure_memory_here(case, impl, device)))
        return 0

    if args.render is not None:
        saved: dict[str, Any] = json.loads(args.render.read_text())
        out_md = args.render.with_suffix(".md")
        out_md.write_text(render_markdown(saved, [Row(**r) for r in saved["results"]]))
        print(f"wrote {out_md}")
        return 0

    if args.list:
        for case in cases:
            impls = ", ".join(f"{i.key} ({i.source})" for i in case.impls)
            print(f"{case.id:24s} {case.shape:40s} {impls}")
        return 0

    limit = (
        args.max_memory_gb * 2**30
        if args.max_memory_gb is not None
        else 0.5 * _available_bytes(device)
    )
    info = machine_info(device)
    command = "OMP_NUM_THREADS=1 python benchmarks/speed.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    print(f"command: {command}")
    print(
        f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
        f"device {info['device']}, lightly {info['lightly'] or 'not installed'}"
    )
    print(
        f"threads: OMP_NUM_THREADS={info['OMP_NUM_THREADS']}, torch threads "
        f"{info['torch_threads']} (single-threaded: 2-thread timings here are erratic)"
    )
    start = time.perf_counter()
    rows = run_suite(
        cases,
        device=device,
        repeats=args.repeats,
        budget_s=args.budget,
        memory=not args.no_memory,
        quick=args.quick,
        memory_limit=limit,
    )
    # The targets are stated for the full shapes; quick shapes say nothing about them.
    targets = [] if args.quick else evaluate_targets(rows)
    memory_method = (
        "not measured"
        if args.no_memory
        else "peak extra of one forward + backward: "
        + (
            "torch.cuda.max_memory_allocated minus allocated after setup"
            if device.type == "cuda"
            else "peak RSS during the call minus RSS after setup (inputs allocated), "
            "in a fresh subprocess per implementation and case "
            "(high-water mark reset via /proc/self/clear_refs; glibc "
            "MALLOC_MMAP_THRESHOLD_=65536 so freed blocks leave RSS)"
        )
    )
    report: dict[str, Any] = {
        "command": command,
        "machine": info,
        "settings": {
            "repeats": args.repeats,
            "budget_s": args.budget,
            "quick": args.quick,
            "groups": args.groups,
            "memory_method": memory_method,
            "memory_limit_gb": limit / 2**30,
        },
        "elapsed_s": time.perf_counter() - start,
        "load_average_end": _load_average(),
        "targets": targets,
        "results": [r.__dict__ for r in rows],
    }
    print()
    for t in targets:
        print(f"{t['status']:12s} {t['target']}: {t['shown']} (goal {t['goal']})")
    print(f"elapsed {report['elapsed_s']:.0f} s")
    out = (
        args.out
        if args.out is not None
        else (None if args.quick else ROOT / "benchmarks" / "results")
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "speed.md").write_text(render_markdown(report, rows))
        print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
