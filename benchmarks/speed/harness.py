"""The measuring harness shared by every benchmark script (``python -m benchmarks.speed``,
``python -m benchmarks.gpu_check``, ``benchmarks/speed/barlow_auto_rule.py``,
``chunk_auto_rule.py``): one home for how things are timed, how memory is measured, what the
report's environment header holds, how results are rendered and how
targets are judged.

- **What is measured**: a :class:`Case` (shared inputs built by ``setup(device)``) with its
  implementations (:class:`Impl`); each implementation's ``prepare(inputs)`` returns a
  :class:`Prepared` whose ``step()`` is the measured call.
- **Time** (:func:`call_once`, :func:`time_impls`): ``time.perf_counter`` around the forward
  and the backward separately, ``torch.cuda.synchronize`` before the clock is read on CUDA (or
  CUDA events with ``events=True``); warm-up, then the median of repeated runs, the
  implementations of a case round-robin so that load changes on a shared machine hit them
  alike.
- **Memory** (:func:`measure_memory_here`, :func:`measure_memory_subprocess`): on CPU, the
  peak resident set size during one call minus the resident set size after setup, in a fresh
  subprocess per implementation (the high-water mark reset through ``/proc/self/clear_refs``,
  else ``ru_maxrss`` differences); on CUDA, ``torch.cuda.max_memory_allocated`` minus the
  memory allocated after setup.
- **Environment** (:func:`machine_info`, :func:`environment_line`): CPU, threads, versions,
  git commit, load average and date.
- **Rendering** (:func:`markdown_table`, :func:`render_markdown`, :func:`write_report`) and
  **targets** (:class:`Targets`: a goal, a measured value and its status).

Every script sets ``OMP_NUM_THREADS=1`` before torch is imported; :func:`child_env` passes it
on to subprocesses.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2]  # the repository
MB = 1024.0 * 1024.0
OPTIONAL_SOURCES = ("lightly", "torchvision", "kornia")  # timed only where they import
SLOW_CALL_S = 2.0


# --------------------------------------------------------------------------------------------
# What is measured
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
    source: str  # "sslosses" | "baseline" | "lightly" | "torchvision" | "kornia"
    prepare: Callable[[Inputs], Prepared]
    exact: bool = True
    estimate: float = 0.0


@dataclass(frozen=True)
class Limit:
    """What the hardware allows for a case: one operation that any implementation needs at least
    once (a matmul of the case's shapes, one pass over its memory), timed on the same device in
    the same run right after the case's implementations, so that each row can say how many of
    them its time is (``time / limit``).

    ``unit`` is ``"FLOP"`` (a compute-bound operation; ``amount`` = 2 m k n for a matmul) or
    ``"B"`` (a bandwidth-bound one; ``amount`` = bytes read + written). ``prepare(device)``
    allocates the operation's own operands and returns the call to time.
    """

    label: str
    unit: str
    amount: float
    prepare: Callable[[torch.device], Callable[[], Any]]

    def rate(self, ms: float) -> str:
        """The machine's throughput on this operation, e.g. ``"95.5 GFLOP/s"``."""
        per_s = self.amount / (ms / 1e3)
        return f"{per_s / 1e9:.1f} G{self.unit}/s"


def matmul_limit(m: int, k: int, n: int, dtype: torch.dtype = torch.float32) -> Limit:
    """One ``A @ B.T`` in ``dtype`` with ``A`` (m, k) and ``B`` (n, k): 2 m k n FLOPs."""

    def prepare(device: torch.device) -> Callable[[], Any]:
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(device, dtype)
        b = torch.randn(n, k, generator=gen).to(device, dtype)
        return lambda: a @ b.T

    name = "" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"
    return Limit(f"one ({m}x{k}) @ ({k}x{n}){name} matmul", "FLOP", 2.0 * m * k * n, prepare)


def lerp_limit(numel: int) -> Limit:
    """One in-place float32 ``lerp_`` over a flat buffer of ``numel`` values: reads two
    buffers and writes one (12 bytes per value): the least an EMA update moves."""

    def prepare(device: torch.device) -> Callable[[], Any]:
        target = torch.zeros(numel, device=device)
        online = torch.ones(numel, device=device)
        return lambda: target.lerp_(online, 0.004)

    return Limit(f"one flat lerp_ over {numel:,} float32 values", "B", 12.0 * numel, prepare)


def pass_limit(rows: int, cols: int) -> Limit:
    """One float32 ``log_softmax`` over a (rows, cols) tensor: reads and writes it once (8 bytes
    per value): the least a cross-entropy over these scores moves."""

    def prepare(device: torch.device) -> Callable[[], Any]:
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(rows, cols, generator=gen).to(device)
        return lambda: torch.log_softmax(x, dim=1)

    return Limit(f"one log_softmax over ({rows}x{cols}) float32", "B", 8.0 * rows * cols, prepare)


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
    limit: Limit | None = None  # the hardware's limit for this case (a "time / limit" column)

    @property
    def id(self) -> str:
        return f"{self.group}:{self.key}"


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_once(
    prepared: Prepared, backward: bool, device: torch.device, *, events: bool = False
) -> tuple[float, float]:
    """One timed call: (forward seconds, backward seconds).

    ``time.perf_counter`` with a device synchronization before each reading; with
    ``events=True`` on CUDA, CUDA events instead (no host synchronization between the parts).
    """
    for t in prepared.leaves:
        t.grad = None
    if events and device.type == "cuda":
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))  # type: ignore[no-untyped-call]
        start.record()
        out = prepared.step()
        mid.record()
        if backward:
            out.backward()
        end.record()
        torch.cuda.synchronize(device)
        del out
        return start.elapsed_time(mid) / 1e3, mid.elapsed_time(end) / 1e3
    sync(device)
    t0 = time.perf_counter()
    out = prepared.step()
    sync(device)
    t1 = time.perf_counter()
    if backward:
        out.backward()
        sync(device)
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
    prepared: Mapping[str, Prepared],
    *,
    backward: bool,
    device: torch.device,
    repeats: int,
    budget_s: float,
    min_repeats: int = 3,
    once_above_s: float = math.inf,
    events: bool = False,
) -> dict[str, Timing]:
    """Warm up, then time every implementation round-robin; medians of the repeats.

    Each implementation gets ``repeats`` runs, cut to what fits in ``budget_s`` seconds (but
    never fewer than ``min_repeats`` unless ``repeats`` is smaller). A first call longer than
    ``SLOW_CALL_S`` is its own warm-up and counts as the first run; one longer than
    ``once_above_s`` is the only run.
    """
    warm: dict[str, int] = {}
    first: dict[str, float] = {}
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in prepared}
    for key, prep in prepared.items():
        f, b = call_once(prep, backward, device, events=events)
        warm[key] = 1
        first[key] = f + b
        # one-time costs are < 1% of a slow call: it counts (and is the only run past the limit)
        if first[key] > min(SLOW_CALL_S, once_above_s):
            samples[key].append((f, b))
            warm[key] = 0
        elif first[key] < 0.5:  # cheap: a couple more warm-up calls
            for _ in range(2):
                f, b = call_once(prep, backward, device, events=events)
                warm[key] += 1
            first[key] = f + b
    counts = {  # further runs: up to `repeats` in all, cut by the budget, >= min_repeats
        k: 0
        if first[k] > once_above_s
        else max(
            0,
            min(repeats, max(min_repeats, int(budget_s / max(first[k], 1e-9)))) - len(samples[k]),
        )
        for k in prepared
    }
    for r in range(max(counts.values(), default=0)):
        for key, prep in prepared.items():
            if r < counts[key]:
                samples[key].append(call_once(prep, backward, device, events=events))
    out: dict[str, Timing] = {}
    for key, runs in samples.items():
        fwd = statistics.median(r[0] for r in runs) * 1e3
        bwd = statistics.median(r[1] for r in runs) * 1e3 if backward else None
        tot = statistics.median(r[0] + r[1] for r in runs) * 1e3
        out[key] = Timing(fwd, bwd, tot, len(runs), warm[key])
    return out


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------
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


def cuda_peak_extra_mb(prep: Prepared, backward: bool, device: torch.device) -> float:
    """``max_memory_allocated`` during one call, above what was allocated before it, in MB."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call_once(prep, backward, device)
    return (torch.cuda.max_memory_allocated(device) - base) / MB


def measure_memory_here(
    case: Case, impl: Impl, device: torch.device, warmup: Sequence[Case] = ()
) -> dict[str, Any]:
    """Peak extra memory of one call, in this process (a fresh child process on CPU).

    Every implementation of the ``warmup`` cases (tiny shapes of the same group) runs once
    first: the first use of a kernel maps its code pages into RSS (about 1 MB each), which is
    not the case's memory.
    """
    for tiny in warmup:
        tiny_inputs = tiny.setup(device)
        for tiny_impl in tiny.impls:
            with contextlib.suppress(ImportError):
                call_once(tiny_impl.prepare(tiny_inputs), tiny.backward, device)
        del tiny_inputs
    inputs = case.setup(device)
    prep = impl.prepare(inputs)
    gc.collect()
    if device.type == "cuda":
        peak_mb = cuda_peak_extra_mb(prep, case.backward, device)
        return {"peak_extra_mb": peak_mb, "method": "cuda max_memory_allocated"}
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


def child_env() -> dict[str, str]:
    """The environment of a measuring subprocess: one thread, freed blocks returned at once."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    # Return freed blocks to the OS at once, so that RSS follows live allocations.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    return env


def run_json_child(cmd: Sequence[str], *, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run ``cmd`` with :func:`child_env` in the repository root (where ``python -m
    benchmarks...`` finds the package) and parse the last JSON line it prints.

    Returns ``{"error": ...}`` when it fails, times out or prints no JSON line.
    """
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=ROOT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"subprocess timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"subprocess failed (rc={proc.returncode}): {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_memory_subprocess(
    case: Case,
    impl: Impl,
    *,
    command: Sequence[str],
    quick: bool,
    device: torch.device,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run ``<command> --memory-case <case> --impl <impl>`` in a fresh interpreter.

    ``command`` (e.g. ``[sys.executable, "-m", "benchmarks.speed"]``) answers with
    :func:`measure_memory_here` as one JSON line (``python -m benchmarks.speed`` does).
    """
    cmd = [*command, "--memory-case", case.id, "--impl", impl.key]
    cmd += ["--device", str(device)]
    if quick:
        cmd.append("--quick")
    result = run_json_child(cmd, timeout_s=timeout_s)
    if "error" in result:
        result["error"] = "memory " + result["error"]
    return result


def available_bytes(device: torch.device) -> float:
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
# Running cases
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
    limit_ms: float | None = None  # time of the case's Limit operation, same run
    x_limit: float | None = None  # total_ms / limit_ms: how many limit operations this time is
    limit_label: str = ""  # the Limit and the machine's rate on it


MIN_MEMORY_MB = 0.1
"""Peak extra memory below which a memory ratio means nothing (RSS moves in 4 KiB pages)."""


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_case` measures each implementation of a case."""

    device: torch.device
    repeats: int  # timed runs at most
    budget_s: float  # seconds of timed runs per implementation before repeats are cut
    memory: bool  # also measure the peak extra memory
    quick: bool  # tiny shapes (passed on to the memory child)
    memory_limit: float = math.inf  # bytes: implementations estimated above it are skipped
    memory_command: tuple[str, ...] | None = None  # the command whose child measures CPU memory


def run_case(case: Case, options: RunOptions, *, log: Callable[[str], None] = print) -> list[Row]:
    """Time (and measure memory of) every implementation of one case.

    On CPU the memory of each implementation is measured by ``options.memory_command`` (see
    :func:`measure_memory_subprocess`); it is required when ``options.memory`` is true.
    """
    device, memory_command = options.device, options.memory_command
    if options.memory and device.type != "cuda" and memory_command is None:
        raise ValueError("run_case: memory=True on CPU needs memory_command, got None")
    rows: dict[str, Row] = {}
    inputs = case.setup(device)
    prepared: dict[str, Prepared] = {}
    for impl in case.impls:
        row = Row(case.group, case.id, case.shape, impl.key, impl.label, impl.source, "ok")
        row.baseline = impl.key == case.baseline
        rows[impl.key] = row
        if impl.estimate > options.memory_limit:
            row.status = "skipped"
            limit_gib = options.memory_limit / 2**30
            row.reason = f"needs ~{impl.estimate / 2**30:.1f} GiB, limit {limit_gib:.1f} GiB"
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
        "repeats": options.repeats,
        "budget_s": options.budget_s,
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
    if case.limit is not None and timings:
        limit = time_impls(
            {"limit": Prepared(case.limit.prepare(device))}, **{**timing_args, "backward": False}
        )["limit"].total_ms
        label = f"{case.limit.label}: {limit:.3g} ms, {case.limit.rate(limit)}"
        for key in timings:
            row = rows[key]
            row.limit_ms, row.limit_label = limit, label
            row.x_limit = None if row.total_ms is None else row.total_ms / limit
        gc.collect()
    if options.memory:
        impls = {impl.key: impl for impl in case.impls}
        for key in timings:
            if device.type == "cuda":
                res = measure_memory_here(case, impls[key], device)
                gc.collect()
                torch.cuda.empty_cache()
            else:
                assert memory_command is not None  # checked above
                res = measure_memory_subprocess(
                    case, impls[key], command=memory_command, quick=options.quick, device=device
                )
            if "error" in res:
                rows[key].reason = (rows[key].reason + " " + res["error"]).strip()
            else:
                rows[key].peak_extra_mb = float(res["peak_extra_mb"])
                rows[key].memory_method = str(res["method"])
    base = rows[case.baseline]
    for row in rows.values():
        if row.total_ms and base.total_ms:
            row.speedup = base.total_ms / row.total_ms
        # below MIN_MEMORY_MB a ratio means nothing: left empty
        if (
            row.peak_extra_mb is not None
            and base.peak_extra_mb is not None
            and (row.peak_extra_mb >= MIN_MEMORY_MB)
        ):
            row.memory_ratio = base.peak_extra_mb / row.peak_extra_mb
    return list(rows.values())


def print_rows(rows: Sequence[Row], log: Callable[[str], None]) -> None:
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
    options: RunOptions,
    *,
    titles: Mapping[str, str],
    log: Callable[[str], None] = print,
) -> list[Row]:
    """:func:`run_case` for every case, with progress (``titles`` names the groups)."""
    rows: list[Row] = []
    for case in cases:
        start = time.perf_counter()
        log(f"{titles[case.group]} {case.shape}")
        case_rows = run_case(case, options, log=log)
        print_rows(case_rows, log)
        log(f"  ({time.perf_counter() - start:.0f} s)")
        rows += case_rows
    return rows


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
def target_status(goal: str, value: float | None, ok: bool | None) -> str:
    """``"measured"`` for a ``"(measured)"`` goal with a value, else ``"not run"`` when ``ok``
    is ``None``, ``"reached"`` or ``"NOT reached"``."""
    if goal == "(measured)" and value is not None:  # a measurement, not a target
        return "measured"
    return "not run" if ok is None else "reached" if ok else "NOT reached"


class Targets:
    """Targets judged on the rows of one run: ``add`` a goal with its measured value."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        self.results: list[dict[str, Any]] = []

    def find(self, case: str, impl: str) -> Row | None:
        """The row of ``impl`` in ``case`` if it ran (status ``"ok"``)."""
        for row in self.rows:
            if row.case == case and row.impl == impl and row.status == "ok":
                return row
        return None

    def ratio(self, case: str, num: str, den: str, attr: str) -> float | None:
        """``num.attr / den.attr`` in ``case`` (the denominator floored at 0.01)."""
        a, b = self.find(case, num), self.find(case, den)
        if a is None or b is None:
            return None
        va, vb = getattr(a, attr), getattr(b, attr)
        if va is None or vb is None:
            return None
        return float(va) / max(float(vb), 0.01)

    def add(
        self, name: str, goal: str, value: float | None, ok: bool | None, unit: str = "x"
    ) -> None:
        if value is None:
            shown = "n/a"
        elif unit == "x":
            shown = f"{value:.2f}{unit}"
        else:
            shown = f"{value:.0f} {unit}"
        self.results.append(
            {
                "target": name,
                "goal": goal,
                "measured": value,
                "shown": shown,
                "status": target_status(goal, value, ok),
            }
        )

    def at_least(self, name: str, goal: float, value: float | None) -> None:
        """A ratio target ``value >= goal`` (shown as ``">= {goal}x"``)."""
        self.add(name, f">= {goal:g}x", value, None if value is None else value >= goal)

    def at_most(self, name: str, goal: float, value: float | None) -> None:
        """A ratio target ``value <= goal`` (shown as ``"<= {goal}x"``), e.g. time / limit."""
        self.add(name, f"<= {goal:g}x", value, None if value is None else value <= goal)

    def x_limit(self, case: str, impl: str) -> float | None:
        """``impl``'s time over its case's limit operation, same run (``None`` if not run)."""
        row = self.find(case, impl)
        return None if row is None else row.x_limit


# --------------------------------------------------------------------------------------------
# Environment header
# --------------------------------------------------------------------------------------------
def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine shows up here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def package_version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """The environment of a run: CPU, threads, versions, device, git commit, load, date."""
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
    return {
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
        "lightly": package_version("lightly"),
        "kornia": package_version("kornia"),
        "torchvision": package_version("torchvision"),
        "git": commit,
        "load_average_start": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def environment_line(info: Mapping[str, Any]) -> str:
    """One line of :func:`machine_info` for the header of a printed table."""
    return (
        f"torch {info['torch']}, {info['cpu']} ({info['logical_cpus']} logical CPUs), "
        f"{info['torch_threads']} torch thread(s), OMP_NUM_THREADS={info['OMP_NUM_THREADS']}, "
        f"git {info['git'] or 'n/a'}, {info['date']}"
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def fmt_load(load: Sequence[float] | None) -> str:
    return "n/a" if not load else "/".join(f"{x:.1f}" for x in load)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def markdown_table(
    header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]
) -> list[str]:
    """A Markdown table padded to its widest cells; ``right`` marks right-aligned columns."""
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


def results_table(rows: Sequence[Row], group: str) -> list[str]:
    """The Markdown table of one group's rows (empty when the group did not run)."""
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
    limits = any(r.x_limit is not None for r in sel)
    if limits:
        header.append("time / limit")
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
            [fmt(r.forward_ms), fmt(r.backward_ms), fmt(r.total_ms)]
            if backward
            else [fmt(r.total_ms)]
        )
        if items:
            cells.append(fmt(r.items_per_s))
        cells += [
            fmt(r.speedup, 2, "x"),
            fmt(r.peak_extra_mb),
            fmt(r.memory_ratio, 2, "x"),
        ]
        if limits:
            cells.append(fmt(r.x_limit, 2, "x"))
        body.append(cells)
    table = markdown_table(header, body, right)
    notes = dict.fromkeys(f"{r.shape}: {r.limit_label}" for r in sel if r.limit_label)
    if notes:
        table += ["", "Limit (time / limit = total time / the limit's time, same run):", ""]
        table += [f"- {note}" for note in notes]
    return table


def render_markdown(
    report: Mapping[str, Any], rows: Sequence[Row], titles: Mapping[str, str]
) -> str:
    """The Markdown report of a suite run: header, targets, one table per group of ``titles``
    (in its order)."""
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
        f"- Load average (1/5/15 min) at start {fmt_load(m.get('load_average_start'))}, at end "
        f"{fmt_load(report.get('load_average_end'))}; run took {report['elapsed_s'] / 60:.1f} min",
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
        lines += markdown_table(
            ["target", "goal", "measured", "status"], tbody, [False, True, True, False]
        )
    for group, title in titles.items():
        table = results_table(rows, group)
        if table:
            lines += ["", f"## {title}", "", *table]
    return "\n".join(lines) + "\n"


def read_report(path: Path) -> tuple[dict[str, Any], list[Row]]:
    """A report written by :func:`write_report` (its ``.json``) and its rows."""
    report: dict[str, Any] = json.loads(path.read_text())
    return report, [Row(**r) for r in report["results"]]


def write_report(stem: Path, report: Mapping[str, Any], markdown: str, *, indent: int = 2) -> None:
    """``stem.json`` (the report) and ``stem.md`` (its rendering)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=indent, default=str) + "\n"
    stem.with_suffix(".json").write_text(text)
    stem.with_suffix(".md").write_text(markdown)
