"""The measurements behind the ``algorithm="auto"`` rule of Barlow Twins and VICReg.

Both losses run on one off-diagonal primitive with one rule; ``--loss vicreg`` measures VICReg
(the whole loss; its covariance term is where the algorithms differ) against the official
``main_vicreg.py`` formulation instead of Barlow Twins against ``main.py``.

For every case ``(N, D)`` and method, a fresh subprocess (one CPU thread, float32) builds
``z_a, z_b`` with ``requires_grad``, runs forward + backward once at a tiny shape (code
warm-up), then once at full size while reading ``ru_maxrss`` before and after: the difference
is the *extra peak memory* of the loss (normalized views, cross-correlation or Gram matrices,
temporaries and the input gradients). Time is measured in one more subprocess per case, with
the methods interleaved round by round (one warm-up pass each, then ``--reps`` rounds; the
median per method); it is the CPU time of the single-threaded process (``time.process_time``:
user + system, page faults included), which other load on a shared machine disturbs far less
than wall-clock time.

Methods: ``official`` is facebookresearch/barlowtwins ``main.py`` as written there
(``BatchNorm1d(affine=False)``, ``c = bn(z1).T @ bn(z2)``, ``c.div_(N)``, in-place
``diagonal(c).add_(-1).pow_(2)`` and ``off_diagonal(c).pow_(2)``); ``dense``, ``gram`` and
``fused`` are ``sslosses`` algorithms (``gram`` computes in float64 when ``N > D / 2``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/barlow_auto_rule.py            # full table (~15 min)
    OMP_NUM_THREADS=1 python benchmarks/barlow_auto_rule.py --quick    # small smoke run
    OMP_NUM_THREADS=1 python benchmarks/barlow_auto_rule.py --loss vicreg --cases 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import references
import torch

ROOT = Path(__file__).resolve().parents[1]
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
LOSS = os.environ.get("SSLOSSES_AUTO_RULE_LOSS", "barlow")  # passed on to the subprocesses


def _official(d: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The official formulation (``references.py``), built once per case as the official code."""
    if LOSS == "vicreg":
        return references.vicreg
    return references.BarlowTwins(d, lambd=LAMBD)


def _method(name: str, d: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "official":
        return _official(d)
    sys.path.insert(0, str(ROOT))
    from sslosses.barlow_twins import barlow_twins_loss
    from sslosses.vicreg import vicreg_loss

    if LOSS == "vicreg":
        return lambda z1, z2: vicreg_loss(z1, z2, algorithm=name)  # type: ignore[arg-type]

    def loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(z1, z2, lambd=LAMBD, algorithm=name)  # type: ignore[arg-type]

    return loss


def _inputs(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=gen).requires_grad_()
    z2 = (z1.detach() + 0.5 * torch.randn(n, d, generator=gen)).requires_grad_()
    return z1, z2


def _step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n: int, d: int) -> float:
    """CPU seconds of one forward + backward on fresh inputs."""
    z1, z2 = _inputs(n, d)
    start = time.process_time()
    fn(z1, z2).backward()
    return time.process_time() - start


def child_memory(name: str, n: int, d: int) -> None:
    """Extra peak RSS of one forward + backward, in this fresh process; print one JSON line."""
    torch.set_num_threads(1)
    _step(_method(name, 32), 16, 32)  # load the code paths at a tiny shape
    fn = _method(name, d)
    z1, z2 = _inputs(n, d)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(z1, z2).backward()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"extra_mib": peak_kib / 1024}))


def child_time(n: int, d: int, reps: int, slow: float) -> None:
    """Median CPU time of every method on one case; print one JSON line.

    The methods run interleaved, round by round, so that slow drifts of the machine's load hit
    them alike. After one warm-up pass each, ``reps`` rounds follow; a method whose warm-up took
    over ``slow`` seconds is timed in the first round only, and short cases get extra rounds
    (up to 25, about 2 s per method).
    """
    torch.set_num_threads(1)
    fns = {m: _method(m, d) for m in METHODS}
    first = {m: _step(fn, n, d) for m, fn in fns.items()}  # warm-up
    timed = [t for t in first.values() if t <= slow]
    if timed and max(timed) * reps < 2.0:
        reps = min(25, max(reps, int(2.0 / max(max(timed), 1e-3))))
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(reps):
        for m in METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]:
            if r == 0 or first[m] <= slow:
                times[m].append(_step(fns[m], n, d))
    print(json.dumps({m: statistics.median(t) for m, t in times.items()}))


def _run_child(*args: object) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", SSLOSSES_AUTO_RULE_LOSS=LOSS)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
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
    if args.child and args.child[0] == "memory":
        child_memory(args.child[1], int(args.child[2]), int(args.child[3]))
        return
    if args.child:
        n, d, reps, slow = args.child[1:]
        child_time(int(n), int(d), int(reps), float(slow))
        return

    global LOSS
    LOSS = args.loss
    sys.path.insert(0, str(ROOT))
    from sslosses.barlow_twins import select_algorithm

    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.cases:
        cases = [(n, d) for n, d in cases if d == int(args.cases)]
    print(
        f"# {'VICReg' if LOSS == 'vicreg' else 'Barlow Twins'} forward+backward, CPU float32, "
        f"1 thread, torch {torch.__version__}, {platform.processor() or platform.machine()}"
        + ("" if LOSS == "vicreg" else f", lambd={LAMBD}")
    )
    print("# time: median CPU seconds; mem: extra peak RSS in MiB (ru_maxrss, fresh process)")
    header = f"{'N':>6} {'D':>6} {'N/D':>6} {'auto':>6}"
    for m in METHODS:
        header += f" | {m + ' s':>11} {m + ' MiB':>12}"
    header += " | auto speedup  mem ratio"
    print(header)
    for n, d in cases:
        mem = {m: _run_child("memory", m, n, d)["extra_mib"] for m in METHODS}
        sec = _run_child("time", n, d, args.reps, args.slow)
        auto = select_algorithm(n, d, symmetric=LOSS == "vicreg")
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
