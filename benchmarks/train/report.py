"""The report: every finished run in ``--out`` as a Markdown table, JSON and a PNG plot; the
raw-pixel and untrained baselines shared by the runs of one ``--out``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.train import reference
from benchmarks.train.config import ALL_RUNS, PRESETS, Config, MethodName, parse_args


@dataclass
class MethodResult:
    method: MethodName
    title: str
    seed: int
    steps: int
    final_loss: float
    final: dict[str, float]  # probes of the trained backbone: knn200, knn20, linear
    untrained: dict[str, float]  # the same probes at initialization (same seed)
    headline_k: int  # the preset's kNN column
    seconds: float  # wall-clock training time, evaluations included
    cpu_seconds: float  # CPU time of the same (all threads of this process)
    history: list[dict[str, Any]]  # the JSON lines, one per epoch
    curve: list[tuple[int, float]]  # (step, mean loss) about 100 times per run, for the plot
    finished: bool
    # Python, torch (version and build), NumPy, scikit-learn: the numbers depend on them
    software: dict[str, str] = field(default_factory=dict)

    @property
    def knn_top1(self) -> float:
        return self.final.get(f"knn{self.headline_k}", float("nan"))

    @property
    def baseline_top1(self) -> float:
        return self.untrained[f"knn{self.headline_k}"]


def read_baselines(out: Path) -> dict[str, dict[str, float]]:
    """The baselines computed so far for ``<out>`` (``<out>/baselines.json``; empty if none)."""
    path = out / "baselines.json"
    known: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.is_file() else {}
    return known


def cached_baseline(
    out: Path, key: str, compute: Callable[[], dict[str, float]], *, write: bool
) -> dict[str, float]:
    """A baseline's probe results, computed once per ``<out>`` (``baselines.json``): runs of
    several methods (also in parallel processes) share the raw-pixel and untrained numbers."""
    known = read_baselines(out)
    if key not in known:
        value = compute()
        known = read_baselines(out)  # other processes may have added theirs meanwhile
        known[key] = value
        if write:
            out.mkdir(parents=True, exist_ok=True)
            path = out / "baselines.json"
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
    result: dict[str, float] = known[key]
    return result


def raw_pixels_key(cfg: Config, image_size: int) -> str:
    return f"raw-pixels/{cfg.data}/{image_size}px"


# ------------------------------------------------------------------------------------------------
# 9. Report: Markdown table, JSON and PNG plot of every finished run in --out
# ------------------------------------------------------------------------------------------------

PROBES = (("knn200", "kNN k=200"), ("knn20", "kNN k=20"), ("linear", "linear"))


def load_results(out: Path) -> list[MethodResult]:
    """The finished runs in ``out``, in the order of ``ALL_RUNS`` then seed."""
    results = []
    for path in out.glob("*/result.json"):
        entry = json.loads(path.read_text())
        entry["curve"] = [tuple(point) for point in entry["curve"]]
        results.append(MethodResult(**entry))
    return sorted(results, key=lambda res: (ALL_RUNS.index(res.method), res.seed))


def _cells(values: dict[str, float]) -> str:
    return " | ".join(f"{values[key]:.2f}" if key in values else "-" for key, _ in PROBES)


def _gains(values: dict[str, float], reference: dict[str, float]) -> str:
    return " / ".join(
        f"{values[key] - reference[key]:+.2f}" if key in values and key in reference else "-"
        for key, _ in PROBES
    )


def markdown_table(results: Sequence[MethodResult], raw: dict[str, float], cfg: Config) -> str:
    """One row per run, the raw-pixel and untrained rows first; then, for methods run with
    several seeds, the mean and standard deviation over the seeds."""
    probes = " | ".join(title for _, title in PROBES)
    short = " / ".join(title for _, title in PROBES)
    rows = [
        f"| run | seed | steps | {probes} | vs raw pixels ({short}) | vs untrained ({short}) "
        "| final loss | CPU s |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
        f"| raw pixels | - | - | {_cells(raw)} | - | - | - | - |",
    ]
    untrained = {res.seed: res.untrained for res in results}
    for seed, values in sorted(untrained.items()):
        rows.append(f"| untrained encoder | {seed} | 0 | {_cells(values)} | - | - | - | - |")
    for res in results:
        rows.append(
            f"| {res.title} | {res.seed} | {res.steps} | {_cells(res.final)} | "
            f"{_gains(res.final, raw)} | {_gains(res.final, res.untrained)} | "
            f"{res.final_loss:.4f} | {res.cpu_seconds:.0f} |"
        )
    by_method: dict[str, list[MethodResult]] = {}
    for res in results:
        by_method.setdefault(res.title, []).append(res)
    spread = {title: runs for title, runs in by_method.items() if len(runs) > 1}
    if spread:
        rows += ["", f"| run | seeds | {probes} |", "|---|---:|---:|---:|---:|"]
        for title, runs in spread.items():
            cells = []
            for key, _ in PROBES:
                accs = [run.final[key] for run in runs if key in run.final]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                cells.append(f"{statistics.mean(accs):.2f} ± {sd:.2f}" if accs else "-")
            rows.append(f"| {title} | {len(runs)} | {' | '.join(cells)} |")
    rows += ["", f"Data: {cfg.data}. Gains are percentage points (same probe, test split)."]
    rows += [f"Software: {reference.describe(s)}." for s in _software(results)]
    return "\n".join(rows) + "\n"


def _software(results: Sequence[MethodResult]) -> list[dict[str, str]]:
    """The distinct software the runs were trained with (one entry when they agree)."""
    distinct: list[dict[str, str]] = []
    for res in results:
        if res.software not in distinct:
            distinct.append(res.software)
    return distinct


def plot(results: Sequence[MethodResult], raw: dict[str, float], k: int, path: Path) -> None:
    """kNN accuracy against step for every run, with the raw-pixel and untrained levels, and
    one loss panel per method (their scales differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig = plt.figure(figsize=(4 * cols, 2.4 * rows + 3.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.6])
    ax_acc = fig.add_subplot(grid[rows, :])
    key = f"knn{k}"
    for i, res in enumerate(results):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot([s for s, _ in res.curve], [loss for _, loss in res.curve])
        ax.set_title(f"{res.title} (seed {res.seed}): training loss", fontsize=9)
        ax.tick_params(labelsize=7)
        evals = [h for h in res.history if key in h]
        ax_acc.plot(
            [0] + [h["step"] for h in evals],
            [res.untrained[key]] + [h[key] for h in evals],
            marker="o",
            ms=3,
            label=f"{res.title} (seed {res.seed})",
        )
    if results:
        ax_acc.axhline(results[0].untrained[key], color="gray", ls=":", lw=1.2, label="untrained")
    if key in raw:
        ax_acc.axhline(raw[key], color="black", ls="--", lw=1.2, label="raw pixels")
    ax_acc.set(xlabel="step", ylabel=f"kNN k={k} top-1 (%)", title="kNN accuracy on the test split")
    ax_acc.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(cfg: Config, image_size: int) -> list[MethodResult]:
    """results.md / .json / .png of every finished run in ``cfg.out``."""
    out = Path(cfg.out)
    results = load_results(out)
    raw = read_baselines(out).get(raw_pixels_key(cfg, image_size), {})
    table = markdown_table(results, raw, cfg)
    (out / "results.md").write_text(table)
    software = _software(results)
    summary = {
        "data": cfg.data,
        "raw_pixels": raw,
        # the runs' software when they agree (else see each run's own)
        "software": software[0] if len(software) == 1 else {},
        "runs": [dataclasses.asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    if results:
        plot(results, raw, PRESETS[cfg.data].knn_k, out / "results.png")
    print(table, flush=True)
    if cfg.data == "digits" and cfg == parse_args(["--out", cfg.out]):  # the `make train` run
        print(reference.compare_with_committed(summary), flush=True)
    return results
