"""README's speed highlights, rendered from the rows of one run (``benchmarks/results/speed.json``)
so that its numbers cannot drift from the run they come from."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.speed.harness import MIN_MEMORY_MB, Row, Targets

# (label, case, our implementation, the original code's, lightly's or None)
HIGHLIGHTS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("Barlow Twins N=256, D=8192 (`auto` runs the Gram identity)", "barlow:256x8192", "auto",
     "official", "lightly"),
    ("Barlow Twins N=2048, D=8192", "barlow:2048x8192", "auto", "official", "lightly"),
    ("Barlow Twins N=8192, D=2048 (`auto` runs the fused path)", "barlow:8192x2048", "auto",
     "official", "lightly"),
    ("VICReg N=256, D=8192 (`auto` runs the Gram identity)", "vicreg:256x8192", "auto",
     "official", "lightly"),
    ("VICReg N=8192, D=2048 (`auto` runs the fused covariance)", "vicreg:8192x2048", "auto",
     "official", "lightly"),
    ("NT-Xent N=8192, D=128, default `chunk_size=\"auto\"`", "ntxent:8192", "auto", "plain",
     "lightly"),
    ("InfoNCE N=256, K=65536 queue, `chunk_size=1024`", "infonce:256x65536", "chunked", "moco",
     None),
    ("SwAV N=256, K=3000, 8 crops", "swav:256x3000x8", "sslosses", "official", "lightly"),
    ("DINO N=64, K=65536, 2 + 8 crops", "dino:64x65536x2+8", "sslosses", "official", None),
    ("EMA over ResNet-50's parameters (vs MoCo's loop)", "ema:resnet50w64", "module", "moco",
     "lightly"),
    ("multi-crop 2x224 + 6x96, 64 images of 256x256 (vs a per-sample loop)", "multicrop:64x256",
     "sslosses", "loop", None),
)  # fmt: skip


def _versus(t: Targets, case: str, ours: str, other: str | None) -> str:
    """How ``ours`` compares with ``other`` in ``case``: time, and memory where it differs."""
    speed = None if other is None else t.ratio(case, other, ours, "total_ms")
    if speed is None:
        return "-"
    if speed >= 1.1:
        text = f"{speed:.0f}x faster" if speed >= 10 else f"{speed:.1f}x faster"
    elif speed >= 0.95:
        text = f"{speed:.2f}x (a tie)"
    else:
        text = f"{1 / speed:.2f}x slower"
    mems = [getattr(t.find(case, impl), "peak_extra_mb", None) for impl in (other, ours)]
    measured = all(m is not None and m >= MIN_MEMORY_MB for m in mems)
    memory = t.ratio(case, other, ours, "peak_extra_mb") if measured else None
    if memory is not None and memory >= 1.1:
        text += f", {memory:.0f}x less memory" if memory >= 10 else f", {memory:.1f}x less memory"
    elif memory is not None and memory < 0.9:
        text += f", {1 / memory:.1f}x more memory"
    return text


def render_highlights(rows: Sequence[Row]) -> str:
    """README's table of :data:`HIGHLIGHTS` from the rows of one run (``speed.json``)."""
    t = Targets(rows)
    lines = [
        "| case | vs the original code | vs lightly 1.6.0 |",
        "|---|---|---|",
    ]
    for label, case, ours, original, lightly in HIGHLIGHTS:
        lines.append(
            f"| {label} | {_versus(t, case, ours, original)} | {_versus(t, case, ours, lightly)} |"
        )
    return "\n".join(lines) + "\n"
