"""The measurements behind ``chunk_size="auto"`` of ``nt_xent`` and ``info_nce`` on CPU.

For each shape, forward + backward of the plain path (``chunk_size=None``), of what ``"auto"``
picks, and of fixed block sizes run round-robin on the same float32 inputs (one CPU thread,
after warm-up ``--reps`` rounds; the median per variant), timed by the harness of
``python -m benchmarks.speed``
(``benchmarks/speed/harness.py``: wall-clock ``time.perf_counter``). Ratios are variant / plain
(< 1 is faster).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.speed.chunk_auto_rule           # the table (~5 min)
    OMP_NUM_THREADS=1 python -m benchmarks.speed.chunk_auto_rule --quick   # smoke run, prints only
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
from pathlib import Path

import torch

from benchmarks.speed import harness
from sslosses.functional import info_nce, nt_xent, resolve_chunk_size
from sslosses.typing import ChunkSize

FIXED = (64, 256, 1024)


def _cases(quick: bool) -> list[tuple[str, int, int, int]]:
    """(loss, N, K, D): NT-Xent has 2N rows and 2N columns; MoCo N rows and K columns."""
    if quick:
        return [("nt_xent", 32, 0, 8), ("nt_xent", 160, 0, 8), ("info_nce", 256, 8192, 8)]
    ntxent = [("nt_xent", n, 0, 128) for n in (64, 128, 256, 512, 1024, 2048, 4096)]
    moco = [("info_nce", n, 65536, 128) for n in (64, 128, 256, 512)]
    return ntxent + moco


def _prepared(loss: str, n: int, k: int, d: int, chunk: ChunkSize) -> harness.Prepared:
    """One variant on its own float32 inputs (the same seed for every variant)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=gen, requires_grad=True)
    b = torch.randn(n, d, generator=gen, requires_grad=loss == "nt_xent")
    u = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1)
    if loss == "nt_xent":
        return harness.Prepared(lambda: nt_xent(a, b, chunk_size=chunk), [a, b])
    return harness.Prepared(
        lambda: info_nce(a, b, negatives=u, in_batch_negatives=False, chunk_size=chunk), [a]
    )


def _shape(loss: str, n: int, k: int) -> tuple[int, int]:
    return (2 * n, 2 * n) if loss == "nt_xent" else (n, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, no file written")
    parser.add_argument(
        "--out", type=Path, default=harness.ROOT / "benchmarks/results/chunk_auto_rule.md"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    info = harness.machine_info(cpu)
    header = ["loss", "N", "K", "logits (rows x cols)", "plain ms", "auto picks", "auto / plain"]
    header += [f"{c} / plain" for c in FIXED]
    body: list[list[str]] = []
    for loss, n, k, d in _cases(args.quick):
        rows, cols = _shape(loss, n, k)
        picked = resolve_chunk_size("auto", rows, cols, torch.device("cpu"))
        variants: dict[str, ChunkSize] = {"plain": None, "auto": "auto"}
        variants.update({str(c): c for c in FIXED if c < rows})
        prepared = {name: _prepared(loss, n, k, d, chunk) for name, chunk in variants.items()}
        timings = harness.time_impls(
            prepared,
            backward=True,
            device=cpu,
            repeats=args.reps,
            budget_s=0.0,  # exactly --reps runs
            min_repeats=args.reps,
        )
        med = {name: t.total_ms for name, t in timings.items()}
        ratio = {name: f"{med[name] / med['plain']:.2f}x" for name in med}
        cells = [loss, str(n), str(k or "-"), f"{rows} x {cols}", f"{med['plain']:.1f}"]
        cells += [str(picked or "plain"), ratio["auto"], *(ratio.get(str(c), "-") for c in FIXED)]
        body.append(cells)
        print("| " + " | ".join(cells) + " |", flush=True)
    if not args.quick:
        table = harness.markdown_table(header, body, [False, *[True] * 4, False, *[True] * 4])
        lines = [
            "# chunk_size='auto' measurements",
            "",
            "- Command: `OMP_NUM_THREADS=1 python -m benchmarks.speed.chunk_auto_rule "
            f"--reps {args.reps}`",
            f"- {harness.environment_line(info)}; one CPU thread, float32, D=128, forward + "
            "backward, wall-clock time, median; ratios < 1 are faster than the plain path",
            "",
            *table,
        ]
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
