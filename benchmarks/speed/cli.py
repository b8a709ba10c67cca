"""Speed and memory micro-benchmarks: sslosses against the computations it replaces.

The command-line entry point: the cases are ``benchmarks/speed/cases.py``, the timing, memory
measurement, rendering and target checking ``benchmarks/speed/harness.py``. For every loss and
component, each implementation runs on the same inputs: sslosses, the
original repositories' formulations (``benchmarks/speed/baselines.py``) and lightly's implementation
when ``import lightly`` works. Reported per case:

- forward and backward time: the median over repeated runs after warm-up, timed separately
  with ``torch.cuda.synchronize`` on GPU; the implementations of a case run round-robin so that
  load changes on a shared machine hit all of them alike;
- peak extra memory: on CPU, the peak resident set size during one forward + backward minus the
  resident set size after setup (inputs allocated), in a fresh subprocess per implementation
  (``python -m benchmarks.speed --memory-case ...``; the high-water mark is reset after setup
  through ``/proc/self/clear_refs``, else ``ru_maxrss`` after minus ``ru_maxrss`` before); on
  CUDA, ``torch.cuda.max_memory_allocated`` minus the memory allocated after setup;
- ratios against the case's baseline (time: baseline / implementation, so > 1 is faster;
  memory: baseline / implementation, so > 1 is smaller), and the issue's targets.

Everything runs single-threaded: ``OMP_NUM_THREADS=1`` is set before torch is imported (here
and in the subprocesses), because 2-thread timings on small shared machines are erratic.

Usage::

    python -m benchmarks.speed                         # everything; writes benchmarks/results/
    python -m benchmarks.speed --only barlow,ntxent --repeats 5
    python -m benchmarks.speed --quick                 # tiny shapes: a smoke check, no files
    python -m benchmarks.speed --list                  # the cases and implementations
"""

from __future__ import annotations

import os

# Before torch is imported (and inherited by the memory subprocesses): 2-thread timings on the
# small shared machines these numbers come from are erratic, so everything is single-threaded.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.speed import harness
from benchmarks.speed.cases import GROUP_TITLES, GROUPS, build_cases
from benchmarks.speed.readme import render_highlights
from benchmarks.speed.targets import evaluate_targets

ROOT = harness.ROOT
# The memory child: this command line in a fresh interpreter (harness.measure_memory_subprocess)
MEMORY_COMMAND = (sys.executable, "-m", "benchmarks.speed")


def run_suite(
    cases: Sequence[harness.Case],
    options: harness.RunOptions,
    log: Callable[[str], None] = print,
) -> list[harness.Row]:
    """:func:`harness.run_suite` with this script's group titles and memory child."""
    options = dataclasses.replace(options, memory_command=MEMORY_COMMAND)
    return harness.run_suite(cases, options, titles=GROUP_TITLES, log=log)


def render_markdown(report: dict[str, Any], rows: Sequence[harness.Row]) -> str:
    return harness.render_markdown(report, rows, GROUP_TITLES)


README = ROOT / "README.md"
README_START = "<!-- highlights: written by `python -m benchmarks.speed --readme`"
README_END = "<!-- end of highlights -->"


def readme_with_highlights(readme: str, rows: Sequence[harness.Row]) -> str:
    """``readme`` with the table between its highlight markers rendered from ``rows``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START!r} ... {README_END!r} block")
    start = readme.index("\n", start) + 1
    return readme[:start] + render_highlights(rows) + readme[end:]


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
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="SPEED_JSON",
        help="rewrite README.md's highlights table from an existing speed.json, and exit",
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
        warmup = [c for c in build_cases(quick=True) if c.group == case.group]
        print(json.dumps(harness.measure_memory_here(case, impl, device, warmup)))
        return 0

    if args.readme is not None:
        _, saved_rows = harness.read_report(args.readme)
        README.write_text(readme_with_highlights(README.read_text(), saved_rows))
        print(f"wrote the highlights of {args.readme} into {README}")
        return 0

    if args.render is not None:
        saved, saved_rows = harness.read_report(args.render)
        out_md = args.render.with_suffix(".md")
        out_md.write_text(render_markdown(saved, saved_rows))
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
        else 0.5 * harness.available_bytes(device)
    )
    info = harness.machine_info(device)
    command = "OMP_NUM_THREADS=1 python -m benchmarks.speed" + "".join(
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
    options = harness.RunOptions(
        device=device,
        repeats=args.repeats,
        budget_s=args.budget,
        memory=not args.no_memory,
        quick=args.quick,
        memory_limit=limit,
    )
    rows = run_suite(cases, options)
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
        "load_average_end": harness.load_average(),
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
        harness.write_report(out / "speed", report, render_markdown(report, rows))
        print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
        if args.out is None:  # the committed results: README's highlights follow them
            README.write_text(readme_with_highlights(README.read_text(), rows))
            print(f"wrote the highlights into {README}")
    return 0
