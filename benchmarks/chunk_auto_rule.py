"""The measurements behind ``chunk_size="auto"`` of ``nt_xent`` and ``info_nce`` on CPU.

For each shape, forward + backward of the plain path (``chunk_size=None``), of what ``"auto"``
picks, and of fixed block sizes run round-robin on the same float32 inputs (one CPU thread,
one warm-up round, then ``--reps`` rounds; the median per variant). Time is the CPU time of
this single-threaded process (``time.process_time``), which other load on a shared machine
disturbs less than wall-clock time. Ratios are variant / plain (< 1 is faster).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/chunk_auto_rule.py           # the table (~5 min)
    OMP_NUM_THREADS=1 python benchmarks/chunk_auto_rule.py --quick   # smoke run, prints only
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sslosses.functional import info_nce, nt_xent, resolve_chunk_size  # noqa: E402

ChunkSize = int | Literal["auto"] | None
"""A ``chunk_size`` argument of the contrastive losses."""

FIXED = (64, 256, 1024)


def _cases(quick: bool) -> list[tuple[str, int, int, int]]:
    """(loss, N, K, D): NT-Xent has 2N rows and 2N columns; MoCo N rows and K columns."""
    if quick:
        return [("nt_xent", 32, 0, 8), ("nt_xent", 160, 0, 8), ("info_nce", 256, 8192, 8)]
    ntxent = [("nt_xent", n, 0, 128) for n in (64, 128, 256, 512, 1024, 2048, 4096)]
    moco = [("info_nce", n, 65536, 128) for n in (64, 128, 256, 512)]
    return ntxent + moco


def _step(loss: str, n: int, k: int, d: int, chunk: ChunkSize) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=gen, requires_grad=True)
    b = torch.randn(n, d, generator=gen, requires_grad=loss == "nt_xent")
    u = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1)

    def step() -> None:
        a.grad = b.grad = None
        if loss == "nt_xent":
            out = nt_xent(a, b, chunk_size=chunk)
        else:
            out = info_nce(a, b, negatives=u, in_batch_negatives=False, chunk_size=chunk)
        out.backward()

    return step


def _shape(loss: str, n: int, k: int) -> tuple[int, int]:
    return (2 * n, 2 * n) if loss == "nt_xent" else (n, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, no file written")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chunk_auto_rule.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "| loss | N | K | logits (rows x cols) | plain ms | auto picks | auto / plain | "
        + " | ".join(f"{c} / plain" for c in FIXED)
        + " |",
        "|---|---:|---:|---|---:|---|---:|" + "---:|" * len(FIXED),
    ]
    for loss, n, k, d in _cases(args.quick):
        rows, cols = _shape(loss, n, k)
        picked = resolve_chunk_size("auto", rows, cols, torch.device("cpu"))
        variants: dict[str, ChunkSize] = {"plain": None, "auto": "auto"}
        variants.update({str(c): c for c in FIXED if c < rows})
        steps = {name: _step(loss, n, k, d, chunk) for name, chunk in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for rep in range(args.reps + 1):
            for name, step in steps.items():
                start = time.process_time()
                step()
                if rep:  # round 0 warms up
                    times[name].append(time.process_time() - start)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ratio = {name: f"{med[name] / med['plain']:.2f}x" for name in med}
        fixed = " | ".join(ratio.get(str(c), "-") for c in FIXED)
        line = (
            f"| {loss} | {n} | {k or '-'} | {rows} x {cols} | {med['plain'] * 1e3:.1f} | "
            f"{picked or 'plain'} | {ratio['auto']} | {fixed} |"
        )
        lines.append(line)
        print(line, flush=True)
    if not args.quick:
        header = (
            "# chunk_size='auto' measurements\n\n"
            "- Command: `OMP_NUM_THREADS=1 python benchmarks/chunk_auto_rule.py "
            f"--reps {args.reps}`\n"
            f"- torch {torch.__version__}, one CPU thread, float32, D=128, forward + backward, "
            "CPU time, median; ratios < 1 are faster than the plain path\n\n"
        )
        args.out.write_text(header + "\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
