#!/usr/bin/env python
# ruff: noqa: E402  (environment variables are set before torch and Triton are imported)
"""One command that verifies every accelerator path of sslosses on a CUDA device.

A GPU is available to this project rarely and for minutes at a time, so this script turns
those minutes into a complete report, with no manual steps and no downloads:

1. **correctness**: every loss path (the entries of :func:`loss_checks`: Barlow Twins
   ``dense``/``gram``/``fused``/``auto`` with the Triton kernels, NT-Xent and InfoNCE plain vs
   blockwise, Sinkhorn, SwAV) in float32, bfloat16 and float16 inputs and under bf16 autocast,
   against the float64 reference path on the same (rounded) inputs, values and input
   gradients; the Triton kernels called directly; :class:`sslosses.EMA`; the transforms on the
   device against CPU with the same generator;
2. **timing**: the cases of ``python -m benchmarks.speed`` timed with CUDA events (warm-up, median)
   with ``torch.cuda.max_memory_allocated``, and for each ``auto`` rule (Barlow Twins
   ``algorithm``, NT-Xent / InfoNCE ``chunk_size``) the measured times next to what the rule
   picks;
3. **training**: a short ``python -m benchmarks.train`` run per method on the bundled digits with
   ``--compile`` (train.py uses bf16 autocast on CUDA), checking the loss stays finite and falls.

It writes ``benchmarks/results/gpu_check_<device>.json`` and ``.md`` and exits non-zero if a
check failed. ``--dry-run`` runs the same code paths on CPU at tiny sizes (the Triton kernels
under ``TRITON_INTERPRET=1``, training without ``--compile``, where autocast is off) and
writes to a temporary folder; the test suite runs it so the script cannot rot.

Usage::

    python -m benchmarks.gpu_check                  # on a CUDA machine (make gpu-check)
    python -m benchmarks.gpu_check --dry-run        # anywhere, about a minute on one core
    python -m benchmarks.gpu_check --sections correctness,timing --out /tmp/check

Adding a loss (VICReg, DINO, ...) to the correctness section is one :class:`LossCheck` entry
in :func:`loss_checks`; the timing section picks up every case of :mod:`benchmarks.speed.cases`
and the training section every method of :mod:`benchmarks.train` by themselves.
"""

from __future__ import annotations

import os
import sys

# Before torch is imported, as in speed.py: single-threaded CPU work (the CPU side of the
# transform check, the dry run).
os.environ.setdefault("OMP_NUM_THREADS", "1")
DRY_RUN = "--dry-run" in sys.argv[1:]
if DRY_RUN:  # before Triton is imported: the kernels then run on CPU tensors
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import contextlib
import math
import re
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent

import sslosses
import sslosses.functional as SF
from benchmarks.speed import cases, harness
from sslosses.kernels import offdiag_torch, offdiag_triton

SECTIONS = ("correctness", "timing", "training")
DTYPES = ("float32", "bfloat16", "float16", "autocast")

# Relative error bounds, max |x - ref| / max |ref|, of (value, input gradient) per input dtype.
# Values are computed and returned in float32 for every input dtype (the numerics rule);
# gradients come back in the input's dtype, so they carry its rounding (bf16: 2^-8).
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-4),
    "bfloat16": (2e-3, 2e-2),
    "float16": (2e-3, 5e-3),
    "autocast": (2e-3, 2e-3),  # float32 inputs under bf16 autocast
}


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class Result:
    section: str
    name: str
    status: str  # "pass" | "fail" | "skip" | "info"
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    device: torch.device
    dry_run: bool
    out: Path
    train_steps: int = 200
    results: list[Result] = field(default_factory=list)

    @property
    def size(self) -> str:
        return "dry" if self.dry_run else "full"

    def add(self, result: Result) -> None:
        self.results.append(result)
        mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip", "info": "    "}[result.status]
        text = f"[{mark}] {result.section}: {result.name}"
        if result.note:
            text += f"  ({result.note})"
        print(text, flush=True)


@dataclass(frozen=True)
class Kernels:
    """The Barlow Twins kernels in this sslosses' layout, with one calling convention.

    ``triton_loss(A, B, lambd, start, stop, budget, blocks)`` and ``dense_loss(A, B, lambd,
    start, stop)`` are rows ``[start, stop)`` of the loss from the normalized views.
    """

    triton: Any  # the Triton module: HAS_TRITON, usable(device, dtype)
    triton_loss: Callable[..., Tensor]
    dense_loss: Callable[..., Tensor]


def kernels() -> Kernels:
    """The off-diagonal kernels shared by Barlow Twins and VICReg (private: checked directly)."""

    def triton_loss(A: Tensor, B: Tensor, lambd: float, *rest: Any) -> Tensor:
        return offdiag_triton.triton_loss(A, B, A.shape[0], 1.0, lambd, *rest)

    def dense_loss(A: Tensor, B: Tensor, lambd: float, start: int, stop: int) -> Tensor:
        return offdiag_torch.dense_loss(A, B, A.shape[0], 1.0, lambd, start, stop)

    return Kernels(offdiag_triton, triton_loss, dense_loss)


def _rel(x: Tensor, ref: Tensor) -> float:
    """max |x - ref| / max |ref| in float64 (0 when both are 0)."""
    x, ref = x.detach().double(), ref.detach().double().to(x.device)
    scale = ref.abs().max().item()
    err = (x - ref).abs().max().item()
    return err / scale if scale > 0 else err


# --------------------------------------------------------------------------------------------
# 1. Correctness: the loss paths against the float64 reference
# --------------------------------------------------------------------------------------------
Inputs = list[Tensor]


@dataclass(frozen=True)
class LossCheck:
    """One loss: how to call it, its inputs and the paths (keyword sets) to compare.

    ``call(inputs, kwargs)`` runs the sslosses function; ``make_inputs(shape, generator)``
    returns float64 CPU tensors, the first ``n_grad`` of which get gradients; ``variants`` maps
    a path's name to its keyword arguments, and ``reference`` names the path that is run in
    float64 as the reference for all of them.
    """

    name: str
    call: Callable[[Inputs, Mapping[str, Any]], Tensor]
    make_inputs: Callable[[tuple[int, ...], torch.Generator], Inputs]
    shapes: Mapping[str, Sequence[tuple[int, ...]]]  # "full" / "dry" -> shapes
    variants: Mapping[str, Mapping[str, Any]]
    reference: str
    n_grad: int = 2
    dtypes: tuple[str, ...] = DTYPES


def _pair(shape: tuple[int, ...], gen: torch.Generator) -> Inputs:
    n, d = shape
    z_a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return [z_a, z_a + torch.randn(n, d, generator=gen, dtype=torch.float64)]


def _query_key_queue(shape: tuple[int, ...], gen: torch.Generator) -> Inputs:
    n, d, k = shape
    q, key = _pair((n, d), gen)
    return [q, key, torch.randn(k, d, generator=gen, dtype=torch.float64)]


def _crop_scores(shape: tuple[int, ...], gen: torch.Generator) -> Inputs:
    crops, n, k = shape
    protos = nn.functional.normalize(torch.randn(k, 16, generator=gen, dtype=torch.float64), dim=1)
    feats = [torch.randn(n, 16, generator=gen, dtype=torch.float64) for _ in range(crops)]
    return [nn.functional.normalize(f, dim=1) @ protos.T for f in feats]


def _scores(shape: tuple[int, ...], gen: torch.Generator) -> Inputs:
    return _crop_scores((1, *shape), gen)


def loss_checks() -> list[LossCheck]:
    """The losses the correctness section runs: one entry per loss (a new loss is one more)."""
    checks = [
        LossCheck(
            "barlow_twins",
            lambda x, kw: SF.barlow_twins_loss(x[0], x[1], lambd=0.0051, **kw),
            _pair,
            # N <= D/2 (gram's regime), N > D (dense/fused), both ragged for the kernels' tiles
            {"full": [(256, 2048), (2050, 520)], "dry": [(12, 40), (37, 21)]},
            {
                "dense": {"algorithm": "dense"},
                "gram": {"algorithm": "gram"},
                "fused": {"algorithm": "fused"},
                "auto": {"algorithm": "auto"},
            },
            reference="dense",
        ),
        LossCheck(
            "nt_xent",
            lambda x, kw: SF.nt_xent(x[0], x[1], temperature=0.1, **kw),
            _pair,
            {"full": [(2048, 128)], "dry": [(24, 8)]},
            {
                "plain": {"chunk_size": None},
                "blockwise": {"chunk_size": 500},
                "auto": {"chunk_size": "auto"},
            },
            reference="plain",
        ),
        LossCheck(
            "info_nce",
            lambda x, kw: SF.info_nce(x[0], x[1], negatives=x[2], temperature=0.2, **kw),
            _query_key_queue,
            {"full": [(512, 128, 16384)], "dry": [(6, 8, 40)]},
            {
                "plain": {"chunk_size": None},
                "blockwise": {"chunk_size": 100},
                "auto": {"chunk_size": "auto"},
            },
            reference="plain",
        ),
        LossCheck(
            "sinkhorn",
            lambda x, kw: SF.sinkhorn(x[0], **kw),
            _scores,
            {"full": [(1024, 3000)], "dry": [(12, 20)]},
            {"default": {"epsilon": 0.05, "iterations": 3}},
            reference="default",
            n_grad=0,
        ),
        LossCheck(
            "swav",
            lambda x, kw: SF.swav_loss(x, **kw),
            _crop_scores,
            {"full": [(4, 256, 3000)], "dry": [(4, 12, 20)]},
            {"default": {"temperature": 0.1}},
            reference="default",
            n_grad=4,
        ),
        LossCheck(
            "vicreg",
            lambda x, kw: SF.vicreg_loss(x[0], x[1], **kw),
            _pair,
            {"full": [(256, 2048), (2050, 520)], "dry": [(12, 40), (37, 21)]},
            {a: {"algorithm": a} for a in ("dense", "gram", "fused", "auto")},
            reference="dense",
        ),
        LossCheck(
            "dino",
            # student crops (all but the last input), teacher = the first two, a center
            lambda x, kw: SF.dino_loss(x[:-1], x[:2], center=x[-1].mean(0), **kw),
            _crop_scores,
            {"full": [(5, 256, 4096)], "dry": [(5, 12, 20)]},
            {"default": {"student_temperature": 0.1, "teacher_temperature": 0.04}},
            reference="default",
            n_grad=4,
        ),
    ]
    return checks


def _run_loss(
    check: LossCheck, inputs: Inputs, kwargs: Mapping[str, Any], autocast: torch.device | None
) -> tuple[Tensor, list[Tensor]]:
    """The value and the gradients of the first ``n_grad`` inputs (fresh leaves)."""
    leaves = [x.detach().clone().requires_grad_(i < check.n_grad) for i, x in enumerate(inputs)]
    ctx: contextlib.AbstractContextManager[Any] = (
        torch.autocast(autocast.type, dtype=torch.bfloat16)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with ctx:
        out = check.call(leaves, kwargs)
    grads: list[Tensor] = []
    if check.n_grad:
        grads = list(torch.autograd.grad(out, leaves[: check.n_grad], allow_unused=False))
    return out.detach(), grads


def check_losses(ctx: Context) -> None:
    for check in loss_checks():
        for shape in check.shapes[ctx.size]:
            gen = torch.Generator().manual_seed(0)
            base = check.make_inputs(shape, gen)
            for dtype in check.dtypes:
                cast = torch.float32 if dtype == "autocast" else getattr(torch, dtype)
                inputs = [x.to(ctx.device, cast) for x in base]
                ref_val, ref_grads = _run_loss(
                    check, [x.double() for x in inputs], check.variants[check.reference], None
                )
                value_tol, grad_tol = TOLERANCES[dtype]
                for variant, kwargs in check.variants.items():
                    name = f"{check.name} {variant} {'x'.join(map(str, shape))} {dtype}"
                    try:
                        autocast = ctx.device if dtype == "autocast" else None
                        val, grads = _run_loss(check, inputs, kwargs, autocast)
                    except Exception as exc:  # a crash is a failed check, reported in full
                        ctx.add(Result("correctness", name, "fail", {"error": _error(exc)}))
                        continue
                    detail: dict[str, Any] = {
                        "value_rel_err": _rel(val, ref_val),
                        "value_dtype": str(val.dtype).removeprefix("torch."),
                        "grad_rel_err": max(
                            (_rel(g, r) for g, r in zip(grads, ref_grads, strict=True)), default=0.0
                        ),
                        "grad_dtypes": sorted({str(g.dtype).removeprefix("torch.") for g in grads}),
                        "tolerance": [value_tol, grad_tol],
                    }
                    if check.name in ("barlow_twins", "vicreg"):
                        detail["triton"] = kernels().triton.usable(ctx.device, cast)
                    ok = (
                        detail["value_rel_err"] <= value_tol
                        and detail["grad_rel_err"] <= grad_tol
                        and val.dtype == torch.float32
                        and all(g.dtype == cast for g in grads)
                        and bool(torch.isfinite(val).all())
                    )
                    note = f"value {detail['value_rel_err']:.1e}, grad {detail['grad_rel_err']:.1e}"
                    ctx.add(Result("correctness", name, "pass" if ok else "fail", detail, note))


def check_triton_kernels(ctx: Context) -> None:
    """The kernels called directly (float32, float16; row range and strips) vs dense float64."""
    k = kernels()
    if not k.triton.HAS_TRITON:
        status = "fail" if ctx.device.type == "cuda" else "skip"
        ctx.add(Result("correctness", "triton kernels", status, note="triton is not installed"))
        return
    if ctx.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        ctx.add(Result("correctness", "triton kernels", "skip", note="no CUDA, no interpreter"))
        return
    configs = {  # n, d, dtype, row range, strip budget (elements), tile sizes
        "float32 whole": (37, 40, torch.float32, (0, 40), 10**6, (16, 16, 16)),
        "float32 rows+strips": (37, 21, torch.float32, (5, 19), 3 * 21, (16, 16, 16)),
        "float16 whole": (10, 40, torch.float16, (0, 40), 10**6, (16, 16, 16)),
    }
    if not ctx.dry_run:
        configs["float32 default tiles"] = (1000, 1030, torch.float32, (0, 1030), 1 << 22, None)
        configs["float16 default tiles"] = (1000, 1030, torch.float16, (0, 1030), 1 << 22, None)
    for label, (n, d, dtype, (start, stop), budget, blocks) in configs.items():
        a, b = _pair((n, d), torch.Generator().manual_seed(1))
        a, b = (nn.functional.batch_norm(x, None, None, training=True) for x in (a, b))
        a, b = a.to(ctx.device, dtype), b.to(ctx.device, dtype)
        ref_a, ref_b = a.double().requires_grad_(), b.double().requires_grad_()
        ref = k.dense_loss(ref_a, ref_b, 0.3, start, stop)
        ref.backward()
        x_a, x_b = a.clone().requires_grad_(), b.clone().requires_grad_()
        extra = () if blocks is None else (blocks,)
        out = k.triton_loss(x_a, x_b, 0.3, start, stop, budget, *extra)
        out.backward()
        value_tol, grad_tol = TOLERANCES[str(dtype).removeprefix("torch.")]
        assert x_a.grad is not None and x_b.grad is not None and ref_a.grad is not None
        detail = {
            "value_rel_err": _rel(out, ref),
            "grad_rel_err": max(_rel(x_a.grad, ref_a.grad), _rel(x_b.grad, ref_b.grad)),  # type: ignore[arg-type]
        }
        ok = detail["value_rel_err"] <= value_tol and detail["grad_rel_err"] <= grad_tol
        note = f"value {detail['value_rel_err']:.1e}, grad {detail['grad_rel_err']:.1e}"
        status = "pass" if ok else "fail"
        ctx.add(Result("correctness", f"triton kernels {label}", status, detail, note))


def check_ema(ctx: Context) -> None:
    """EMA with a cosine schedule and averaged buffers on the device vs the formula in float64."""
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 8)).to(ctx.device)
    ema = sslosses.EMA(online, momentum=0.9, total_steps=5, buffers="average")
    expected = {k: v.detach().double().cpu() for k, v in ema.module.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        m = ema.momentum
        with torch.no_grad():
            for p in online.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(ctx.device))
            online(torch.randn(20, 16, generator=gen).to(ctx.device))  # moves the BN buffers
        for k, v in online.state_dict().items():
            if v.is_floating_point():
                expected[k] = m * expected[k] + (1 - m) * v.double().cpu()
            else:
                expected[k] = v.double().cpu()
        ema.update(online)
    got = ema.module.state_dict()
    err = max(_rel(got[k], expected[k]) for k in expected)
    ok = err <= 1e-6 and ema.step == 5
    name = "EMA (cosine schedule, buffers='average')"
    ctx.add(Result("correctness", name, "pass" if ok else "fail", {"rel_err": err}, f"{err:.1e}"))


def transform_checks() -> dict[str, Callable[[], nn.Module]]:
    """The transforms compared on the device and on CPU (one entry each)."""
    from sslosses import transforms as T

    return {
        "simclr_transform": lambda: T.simclr_transform(24),
        "byol_transform": lambda: T.byol_transform(24),
        "swav_transform": lambda: T.swav_transform(24, 12, local_count=4),
        "dino_transform": lambda: T.dino_transform(24, 12, local_count=4),
        "swav_transform antialias": lambda: T.swav_transform(24, 12, antialias=True),
    }


def check_transforms(ctx: Context) -> None:
    """Same images, same seeded CPU generator: the crops agree on the device and on CPU.

    Resampling and colour arithmetic differ by float32 rounding between devices; a flipped
    rounding can move a hue across a bin or a pixel across the solarize threshold, so a tiny
    fraction of values may differ by more. The check bounds both.
    """
    n = 6 if ctx.dry_run else 64
    images = torch.rand(n, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    for name, make in transform_checks().items():
        transform = make()
        outs = []
        for device in (torch.device("cpu"), ctx.device):
            crops = transform(images.to(device), generator=torch.Generator().manual_seed(3))
            crops = crops if isinstance(crops, list) else [crops]
            outs.append([c.detach().float().cpu() for c in crops])
        diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(*outs, strict=True)])
        detail = {
            "max_abs_diff": diffs.max().item(),
            "fraction_over_1e-3": (diffs > 1e-3).double().mean().item(),
            "crops": [list(c.shape) for c in outs[0]],
        }
        ok = detail["max_abs_diff"] <= 1e-3 or detail["fraction_over_1e-3"] <= 1e-4
        note = f"max {detail['max_abs_diff']:.1e}, >1e-3: {detail['fraction_over_1e-3']:.1e}"
        ctx.add(Result("correctness", f"transforms {name}", "pass" if ok else "fail", detail, note))


# --------------------------------------------------------------------------------------------
# 2. Timing: the speed.py cases, and what the auto rules pick
# --------------------------------------------------------------------------------------------
def _barlow_rule(inputs: harness.Inputs, device: torch.device) -> str:
    n, d = inputs["z_a"].shape
    return SF.select_algorithm(n, d, device=device)


def _chunk_rule(rows: int, cols: int, device: torch.device) -> str:
    block = SF.resolve_chunk_size("auto", rows, cols, device)
    return "dense" if block is None else f"chunked ({block} rows)"


# What each "auto" rule picks for a speed.py case's inputs (one entry per rule).
AUTO_RULES: dict[str, Callable[[harness.Inputs, torch.device], str]] = {
    "barlow": _barlow_rule,
    "ntxent": lambda x, dev: _chunk_rule(2 * x["z_a"].shape[0], 2 * x["z_a"].shape[0], dev),
    "infonce": lambda x, dev: _chunk_rule(x["q"].shape[0], 1 + x["queue_kd"].shape[0], dev),
}


def check_timing(ctx: Context) -> None:
    """Each implementation alone (an out-of-memory one is skipped): ``harness.time_impls`` with
    CUDA events, the median of up to 10 runs (3 for calls over 0.6 s; dry run: 2)."""
    repeats = 2 if ctx.dry_run else 10
    timing_args: dict[str, Any] = {
        "device": ctx.device,
        "repeats": repeats,
        "budget_s": 6.0,
        "min_repeats": min(3, repeats),
        "events": True,
    }
    device_limits(ctx, timing_args)
    for case in cases.build_cases(quick=ctx.dry_run):
        inputs = case.setup(ctx.device)
        timings: dict[str, float] = {}
        limit_ms = _limit_ms(ctx, case.limit, timing_args)
        for impl in case.impls:
            if impl.source == "lightly":
                continue
            name = f"{case.id} {impl.key}"
            try:
                prep = impl.prepare(inputs)
                if ctx.device.type == "cuda" and impl.estimate > harness.available_bytes(
                    ctx.device
                ):
                    ctx.add(Result("timing", name, "skip", note="would not fit in memory"))
                    continue
                (timing,) = harness.time_impls(
                    {impl.key: prep}, backward=case.backward, **timing_args
                ).values()
                peak = (
                    harness.cuda_peak_extra_mb(prep, case.backward, ctx.device)
                    if ctx.device.type == "cuda"
                    else None
                )
            except Exception as exc:
                if _is_oom(exc):
                    ctx.add(Result("timing", name, "skip", note="out of memory"))
                    continue
                if isinstance(exc, ImportError) and impl.source in harness.OPTIONAL_SOURCES:
                    note = f"{impl.source} not importable here: {exc}"
                    ctx.add(Result("timing", name, "skip", note=note))
                    continue
                ctx.add(Result("timing", name, "fail", {"error": _error(exc)}))
                continue
            finally:
                _free(ctx.device)
            total = timing.total_ms
            timings[impl.key] = total
            detail = {
                "shape": case.shape,
                "source": impl.source,
                "forward_ms": timing.forward_ms,
                "backward_ms": timing.backward_ms,
                "total_ms": total,
                "peak_mb": peak,
                "repeats": timing.repeats,
                "warmup": timing.warmup,
                "limit_ms": limit_ms,
                "x_limit": None if limit_ms is None else total / limit_ms,
            }
            mem = "" if peak is None else f", peak {peak:.1f} MB"
            lim = "" if limit_ms is None else f", {total / limit_ms:.2f}x the limit"
            ctx.add(Result("timing", name, "info", detail, f"{total:.3f} ms{mem}{lim}"))
        rule = AUTO_RULES.get(case.group)
        if rule is not None:
            paths = {k: v for k, v in timings.items() if k != "auto" and not _baseline(case, k)}
            picked = rule(inputs, ctx.device)
            fastest = min(paths, key=paths.__getitem__) if paths else None
            detail = {"shape": case.shape, "times_ms": paths, "rule_picks": picked}
            detail["measured_fastest"] = fastest
            detail["auto_ms"] = timings.get("auto")
            times = ", ".join(f"{k} {v:.3f} ms" for k, v in paths.items())
            note = f"rule picks {picked}; fastest measured {fastest} ({times})"
            ctx.add(Result("timing", f"auto rule {case.id}", "info", detail, note))
        del inputs
        _free(ctx.device)


def device_limits(ctx: Context, timing_args: dict[str, Any]) -> None:
    """The device's own limits, as one result: float32 and bfloat16 matmul throughput (square
    matmuls of side 8192; dry run: 256) and memory bandwidth (one flat ``lerp_`` over 2^28
    float32 values, 12 bytes moved per value; dry run: 2^16)."""
    side, numel = (256, 2**16) if ctx.dry_run else (8192, 2**28)
    detail: dict[str, Any] = {}
    notes = []
    for dtype in (torch.float32, torch.bfloat16):
        matmul = harness.matmul_limit(side, side, side, dtype)
        ms = _limit_ms(ctx, matmul, timing_args)
        if ms is not None:
            name = str(dtype).removeprefix("torch.")
            detail[f"matmul_{name}_tflops"] = matmul.amount / (ms / 1e3) / 1e12
            notes.append(f"matmul {name} {detail[f'matmul_{name}_tflops']:.2f} TFLOP/s")
    bandwidth = harness.lerp_limit(numel)
    ms = _limit_ms(ctx, bandwidth, timing_args)
    if ms is not None:
        detail["bandwidth_gb_s"] = bandwidth.amount / (ms / 1e3) / 1e9
        notes.append(f"memory {detail['bandwidth_gb_s']:.0f} GB/s ({bandwidth.label})")
    _free(ctx.device)
    ctx.add(Result("timing", "device limits", "info", detail, "; ".join(notes)))


def _limit_ms(
    ctx: Context, limit: harness.Limit | None, timing_args: dict[str, Any]
) -> float | None:
    """The time of a case's :class:`harness.Limit` operation on the device (``None`` if none)."""
    if limit is None:
        return None
    prep = harness.Prepared(limit.prepare(ctx.device))
    (timing,) = harness.time_impls({"limit": prep}, backward=False, **timing_args).values()
    del prep
    _free(ctx.device)
    return timing.total_ms


def _baseline(case: harness.Case, key: str) -> bool:
    return any(i.key == key and i.source != "sslosses" for i in case.impls)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# 3. Training: the reference training app per method on digits
# --------------------------------------------------------------------------------------------
def check_training(ctx: Context) -> None:
    from benchmarks.train import config, loop  # imports the training app only when it runs

    steps = 4 if ctx.dry_run else ctx.train_steps
    runs = Path(tempfile.mkdtemp(prefix="gpu_check_train_"))  # checkpoints stay out of results/
    for method in config.METHODS:
        argv = ["--method", method, "--data", "digits", "--steps", str(steps)]
        argv += ["--eval-every", str(steps), "--out", str(runs / method), "--quiet"]
        argv += ["--device", ctx.device.type, "--no-resume"]
        if ctx.dry_run:  # tiny, and torch.compile on CPU would need minutes per method
            argv += ["--width", "4", "--batch-size", "64", "--small-crops", "2"]
        else:
            argv += ["--compile"]
        t0 = time.perf_counter()
        try:
            (result,) = loop.main(argv)
        except Exception as exc:  # NonFiniteLossError included
            ctx.add(Result("training", method, "fail", {"argv": argv, "error": _error(exc)}))
            continue
        losses = [loss for _, loss in result.curve]
        k = max(1, len(losses) // 10)
        first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
        finite = all(math.isfinite(v) for v in losses)
        falls = last < first
        detail = {
            "argv": argv,
            "steps": result.steps,
            "first_losses_mean": first,
            "last_losses_mean": last,
            "final_loss": result.final_loss,
            "knn_top1": result.knn_top1,
            "untrained_knn_top1": result.baseline_top1,
            "seconds": time.perf_counter() - t0,
            "compile": not ctx.dry_run,
            "bf16_autocast": ctx.device.type == "cuda",
        }
        # a 4-step dry run checks the plumbing and finiteness; a fall is required on CUDA only
        ok = finite and (falls or ctx.dry_run)
        note = f"loss {first:.3f} -> {last:.3f}, kNN {result.knn_top1:.1f}%"
        if ctx.dry_run and not falls:
            note += " (no fall required in --dry-run)"
        ctx.add(Result("training", method, "pass" if ok else "fail", detail, note))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu-dry-run"


def machine(device: torch.device, dry_run: bool) -> dict[str, Any]:
    info = harness.machine_info(device)
    info.update(
        {
            "dry_run": dry_run,
            "cuda": torch.version.cuda,
            "triton": _triton_version(),
            "triton_interpret": os.environ.get("TRITON_INTERPRET"),
            "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gb"] = round(props.total_memory / 1e9, 1)
        info["capability"] = f"{props.major}.{props.minor}"
    return info


def _triton_version() -> str | None:
    k = kernels()
    if not k.triton.HAS_TRITON:
        return None
    import triton

    return str(triton.__version__)


def render_markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    lines = [
        f"# GPU check: {info.get('gpu') or 'CPU dry run'}",
        "",
        f"Generated by `benchmarks.gpu_check{' --dry-run' if info['dry_run'] else ''}` on "
        f"{info['date']} (torch {info['torch']}, CUDA {info['cuda']}, Triton {info['triton']}, "
        f"git {info['git']}), {report['seconds']:.0f} s"
        + ("." if report["complete"] else ", INCOMPLETE (the run stopped early)."),
        "",
        f"**{report['counts']}**",
    ]
    for section in SECTIONS:
        rows = [r for r in report["results"] if r["section"] == section]
        if not rows:
            continue
        lines += ["", f"## {section}", "", "| check | status | result |", "|---|---|---|"]
        for r in rows:
            text = r["note"] or r["detail"].get("error", "")
            lines.append(f"| {r['name']} | {r['status']} | {str(text).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (no CUDA needed)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated subset of " + ", ".join(SECTIONS),
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: benchmarks/results; dry run: a temp dir)",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="steps per method in the training section (the digits preset's; dry run: 4)",
    )
    return parser.parse_args(argv)


def write_report(
    ctx: Context, info: dict[str, Any], sections: list[str], seconds: dict[str, float], t0: float
) -> tuple[dict[str, int], Path]:
    """Write the JSON and Markdown report as it stands (called after every step, so that a run
    cut short by a time limit still leaves what it measured)."""
    counts = {s: sum(r.status == s for r in ctx.results) for s in ("pass", "fail", "skip", "info")}
    report = {
        "machine": info,
        "sections": sections,
        "complete": len(seconds) == len(sections),
        "seconds": time.perf_counter() - t0,
        "section_seconds": seconds,
        "counts": ", ".join(f"{v} {k}" for k, v in counts.items()),
        "results": [r.__dict__ for r in ctx.results],
    }
    name = f"gpu_check_{device_slug(ctx.device)}"
    if sections != list(SECTIONS):  # a partial run does not overwrite another part's report
        name += "_" + "-".join(sections)
    stem = ctx.out / name
    harness.write_report(stem, report, render_markdown(report), indent=1)
    return counts, stem


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device: run with --dry-run to check the code paths on CPU", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif args.dry_run:
        out = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    else:
        out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(device, args.dry_run, out, args.train_steps)
    info = machine(device, args.dry_run)
    t0 = time.perf_counter()
    steps: dict[str, list[Callable[[Context], None]]] = {
        "correctness": [check_losses, check_triton_kernels, check_ema, check_transforms],
        "timing": [check_timing],
        "training": [check_training],
    }
    seconds: dict[str, float] = {}
    for section in sections:
        t_section = time.perf_counter()
        for step in steps[section]:
            try:
                step(ctx)
            except Exception as exc:  # one broken step must not lose the rest of the report
                ctx.add(Result(section, step.__name__, "fail", {"error": _error(exc)}))
            if section != sections[-1] or step is not steps[section][-1]:
                write_report(ctx, info, sections, seconds, t0)
        seconds[section] = round(time.perf_counter() - t_section, 1)
        print(f"--- {section}: {seconds[section]:.0f} s", flush=True)
    counts, stem = write_report(ctx, info, sections, seconds, t0)
    total = time.perf_counter() - t0
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"{summary} in {total:.0f} s; report: {stem}.{{json,md}}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
