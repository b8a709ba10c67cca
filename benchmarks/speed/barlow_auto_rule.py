"""The measurements behind the ``algorithm="auto"`` rule of Barlow Twins and VICReg.

Both losses run on one off-diagonal primitive with one rule; ``--loss vicreg`` measures VICReg
(the whole loss; its covariance term is where the algorithms differ) against the official
``main_vicreg.py`` formulation instead of Barlow Twins against ``main.py``.

Measured with the harness of ``python -m benchmarks.speed`` (``benchmarks/speed/harness.py``).
For every case
``(N, D)`` and method, a fresh subprocess (one CPU thread, float32) builds ``z_a, z_b`` with
``requires_grad``, runs every method forward + backward once at a tiny shape (code warm-up),
then the method once at full size: the peak resident set size during the call minus the one
after setup is the *extra peak memory* of the loss (normalized views, cross-correlation or
Gram matrices, temporaries and the input gradients). Time is measured in one more subprocess
per case: wall-clock (``time.perf_counter``) forward + backward, the methods round-robin after
warm-up, at least ``--reps`` runs each (more for short calls, up to 25 or about 2 s per
method), the median per method; a method whose first call takes over ``--slow`` seconds is
timed by that call alone.

Methods: ``official`` is facebookresearch/barlowtwins ``main.py`` as written there
(``BatchNorm1d(affine=False)``, ``c = bn(z1).T @ bn(z2)``, ``c.div_(N)``, in-place
``diagonal(c).add_(-1).pow_(2)`` and ``off_diagonal(c).pow_(2)``); ``dense``, ``gram`` and
``fused`` are ``sslosses`` algorithms (``gram`` computes in float64 when ``N > D / 2``).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.speed.barlow_auto_rule            # full table (~15 min)
    OMP_NUM_THREADS=1 python -m benchmarks.speed.barlow_auto_rule --quick    # small smoke run
    OMP_NUM_THREADS=1 python -m benchmarks.speed.barlow_auto_rule --loss vicreg --cases 1024
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, as in speed.py

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import references
from benchmarks.speed import harness
from sslosses.functional import barlow_twins_loss, select_algorithm, vicreg_loss

METHODS = ("official", "dense", "gram", "fused")
# The D = 1024 sweep over N/D locates the gram crossover; the last three are the project's
# performance targets.
FULL_CASES = [
    (128, 1024),
    (256, 1024),
    (512, 1024),
    (768, 1024),
    (1024, 1024),
    (2048, 1024),
    (256, 8192),
    (2048, 8192),
    (8192, 2048),
]
QUICK_CASES = [(64, 512), (256, 512), (1024, 256)]
LAMBD = 0.0051
CPU = torch.device("cpu")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _loss_fn(loss: str, name: str, d: int) -> Loss:
    """The official formulation (``references.py``, built once per case as the official code
    does) or an sslosses algorithm."""
    alg: Any = name
    if name == "official":
        return references.vicreg if loss == "vicreg" else references.BarlowTwins(d, lambd=LAMBD)
    if loss == "vicreg":
        return lambda z1, z2: vicreg_loss(z1, z2, algorithm=alg)
    return lambda z1, z2: barlow_twins_loss(z1, z2, lambd=LAMBD, algorithm=alg)


def _case(loss: str, n: int, d: int) -> harness.Case:
    """One shape, every method, as a harness case (the inputs: a correlated pair)."""

    def setup(device: torch.device) -> harness.Inputs:
        gen = torch.Generator().manual_seed(0)
        z1 = torch.randn(n, d, generator=gen)
        z2 = z1 + 0.5 * torch.randn(n, d, generator=gen)
        return {"z1": z1.to(device).requires_grad_(), "z2": z2.to(device).requires_grad_()}

    def prepare(name: str) -> Callable[[harness.Inputs], harness.Prepared]:
        def run(inputs: harness.Inputs) -> harness.Prepared:
            fn = _loss_fn(loss, name, d)
            z1, z2 = inputs["z1"], inputs["z2"]
            return harness.Prepared(lambda: fn(z1, z2), [z1, z2])

        return run

    impls = tuple(
        harness.Impl(m, m, "baseline" if m == "official" else "sslosses", prepare(m))
        for m in METHODS
    )
    return harness.Case(loss, f"{n}x{d}", f"N={n} D={d}", setup, impls, "official")


def child_memory(loss: str, name: str, n: int, d: int) -> None:
    """Extra peak RSS of one forward + backward, in this fresh process; print one JSON line."""
    torch.set_num_threads(1)
    case = _case(loss, n, d)
    impl = next(i for i in case.impls if i.key == name)
    res = harness.measure_memory_here(case, impl, CPU, warmup=[_case(loss, 16, 32)])
    print(json.dumps({"extra_mib": res["peak_extra_mb"], "method": res["method"]}))


def child_time(loss: str, n: int, d: int, reps: int, slow: float) -> None:
    """Median wall-clock seconds of every method on one case; print one JSON line."""
    torch.set_num_threads(1)
    case = _case(loss, n, d)
    inputs = case.setup(CPU)
    prepared = {impl.key: impl.prepare(inputs) for impl in case.impls}
    timings = harness.time_impls(
        prepared,
        backward=True,
        device=CPU,
        repeats=max(25, reps),
        budget_s=2.0,
        min_repeats=reps,
        once_above_s=slow,
    )
    print(json.dumps({m: t.total_ms / 1e3 for m, t in timings.items()}))


def _run_child(*args: object) -> dict[str, float]:
    result = harness.run_json_child(
        [sys.executable, "-m", "benchmarks.speed.barlow_auto_rule", "--child", *map(str, args)]
    )
    if "error" in result:
        raise RuntimeError(f"barlow_auto_rule child {args}: {result['error']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--loss", choices=("barlow", "vicreg"), default="barlow")
    parser.add_argument("--cases", default="", help="only the cases with this D (e.g. 1024)")
    parser.add_argument("--slow", type=float, default=40.0, help="time once above this")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.child[1] == "memory":
        loss, _, name, n, d = args.child
        child_memory(loss, name, int(n), int(d))
        return
    if args.child:
        loss, _, n, d, reps, slow = args.child
        child_time(loss, int(n), int(d), int(reps), float(slow))
        return

    loss = args.loss
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.cases:
        cases = [(n, d) for n, d in cases if d == int(args.cases)]
    torch.set_num_threads(1)
    print(
        f"# {'VICReg' if loss == 'vicreg' else 'Barlow Twins'} forward+backward, CPU float32, "
        f"1 thread, {harness.environment_line(harness.machine_info(CPU))}"
        + ("" if loss == "vicreg" else f", lambd={LAMBD}")
    )
    print(
        "# time: median wall-clock seconds (perf_counter); mem: extra peak RSS in MiB "
        "(peak minus after setup, fresh process)"
    )
    header = f"{'N':>6} {'D':>6} {'N/D':>6} {'auto':>6}"
    for m in METHODS:
        header += f" | {m + ' s':>11} {m + ' MiB':>12}"
    header += " | auto speedup  mem ratio"
    print(header)
    for n, d in cases:
        mem = {m: _run_child(loss, "memory", m, n, d)["extra_mib"] for m in METHODS}
        sec = _run_child(loss, "time", n, d, args.reps, args.slow)
        auto = select_algorithm(n, d, symmetric=loss == "vicreg")
        line = f"{n:>6} {d:>6} {n / d:>6.3g} {auto:>6}"
        for m in METHODS:
            line += f" | {sec[m]:>11.4g} {mem[m]:>12.1f}"
        line += (
            f" | {sec['official'] / sec[auto]:>11.2f}x"
            f" {mem['official'] / max(mem[auto], 1e-3):>9.1f}x"
        )
        print(line, flush=True)


if __name__ == "__main__":
    main()
