"""The committed reference tables of ``make train`` and the software that produced them.

The digits run is deterministic for a given torch build, but not across builds: another torch
(another BLAS, other kernels, another rounding in one reduction) changes the first steps by a
rounding error that 200 steps of training amplify into a different final model, and every
probe moves by up to a point or so. So each committed table records the software it was made
with (``software``), ``benchmarks/results/train_digits*.json`` holds one table per torch build,
and ``make train`` says after its table whether it matches the committed one of its torch, or,
when none was committed for it, how far the committed ones lie apart.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"  # benchmarks/results
DIGITS_TABLES = "train_digits*.json"  # one per torch build, each with its ``software``
PROBES = ("knn200", "knn20", "linear")


def software_versions() -> dict[str, str]:
    """What a training run's numbers depend on beyond the code: Python, torch and its build."""
    cuda = torch.version.cuda
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch build": f"CUDA {cuda}" if cuda else "CPU only",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
    }
    for package in ("numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _cpu_model() -> str:
    """The processor's model name (its kernels' instruction set can change the numbers)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(software: Mapping[str, str]) -> str:
    """One line: ``torch 2.13.0+cpu (CPU only), Python 3.11.7, NumPy ..., scikit-learn ...``."""
    if not software:
        return "software not recorded"
    return (
        f"torch {software.get('torch', '?')} ({software.get('torch build', '?')}), "
        f"Python {software.get('python', '?')}, NumPy {software.get('numpy', '?')}, "
        f"scikit-learn {software.get('scikit-learn', '?')}, {software.get('machine', '?')} "
        f"({software.get('cpu', 'CPU not recorded')})"
    )


def table_rows(summary: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """``results.json`` as rows: ``"raw pixels"``, ``"untrained encoder"``, then each run's title
    (with ``" (seed S)"`` for a seed other than 0), each the probes of :data:`PROBES`."""
    rows: dict[str, tuple[float, ...]] = {}
    raw = summary.get("raw_pixels", {})
    if raw:
        rows["raw pixels"] = tuple(float(raw[p]) for p in PROBES)
    for run in summary["runs"]:
        title = run["title"] if run["seed"] == 0 else f"{run['title']} (seed {run['seed']})"
        if run["seed"] == 0 and "untrained encoder" not in rows:
            rows["untrained encoder"] = tuple(float(run["untrained"][p]) for p in PROBES)
        rows[title] = tuple(float(run["final"][p]) for p in PROBES)
    return rows


def largest_difference(
    a: Mapping[str, tuple[float, ...]], b: Mapping[str, tuple[float, ...]]
) -> float:
    """The largest difference in percentage points between two tables' common cells (at
    two decimals, as printed)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two tables share no row")
    return max(
        abs(round(x, 2) - round(y, 2))
        for row in common
        for x, y in zip(a[row], b[row], strict=True)
    )


def committed_tables(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """The committed digits tables (``results.json`` of ``make train`` with its ``software``)."""
    return [
        {**json.loads(path.read_text()), "path": path.name}
        for path in sorted(folder.glob(DIGITS_TABLES))
    ]


def spread(tables: Sequence[Mapping[str, Any]]) -> float:
    """How far the committed tables lie apart: the largest difference over every pair."""
    rows = [table_rows(t) for t in tables]
    return max(
        (largest_difference(a, b) for i, a in enumerate(rows) for b in rows[i + 1 :]), default=0.0
    )


def compare_with_committed(summary: Mapping[str, Any], folder: Path = RESULTS) -> str:
    """A sentence on how ``summary`` (this run's ``results.json``) relates to the committed ones."""
    tables = committed_tables(folder)
    if not tables:
        return "No committed digits table to compare with."
    mine = table_rows(summary)
    torch_version = summary.get("software", {}).get("torch")
    same = [t for t in tables if t.get("software", {}).get("torch") == torch_version]
    if same:
        reference = same[0]
        theirs = table_rows(reference)
        diff = largest_difference(mine, theirs)
        where = (
            f"benchmarks/results/{reference['path']} (made with the same torch, {torch_version})"
        )
        unshared = sorted(set(mine) ^ set(theirs))
        if unshared:
            return (
                f"This table and {where} do not have the same rows ({', '.join(unshared)} in "
                f"one only); the rows they share differ by up to {diff:.2f} points."
            )
        if diff == 0:
            return f"This table matches {where} exactly."
        mine_sw, theirs_sw = summary.get("software", {}), reference.get("software", {})
        changed = [
            f"{key} {theirs_sw[key]} there, {mine_sw[key]} here"
            for key in ("cpu", "numpy", "scikit-learn", "python")
            if key in mine_sw and key in theirs_sw and mine_sw[key] != theirs_sw[key]
        ]
        if changed:
            return (
                f"This table differs from {where} by up to {diff:.2f} points: same torch, but "
                f"not the same machine or libraries ({'; '.join(changed)}); another CPU's "
                "kernels round differently, and training carries the difference."
            )
        return (
            f"This table differs from {where} by up to {diff:.2f} points: same torch, so "
            "something else differs (the code, NumPy / scikit-learn, or the options)."
        )
    others = "; ".join(f"{t['path']}: torch {t['software']['torch']}" for t in tables)
    return (
        f"No committed digits table was made with torch {torch_version}. The committed ones "
        f"({others}) differ from each other by up to {spread(tables):.2f} points; this table "
        f"differs from the first by up to {largest_difference(mine, table_rows(tables[0])):.2f}."
    )
