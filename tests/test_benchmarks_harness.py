"""``benchmarks/speed/harness.py``: the target checker, the Markdown rendering and the repeat logic.

Timings are never asserted: the timing test counts calls, not seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.speed import cli as speed
from benchmarks.speed import harness

CPU = torch.device("cpu")


def _row(case: str, impl: str, total_ms: float | None, status: str = "ok") -> harness.Row:
    row = harness.Row("g", case, "N=1", impl, impl, "sslosses", status)
    row.total_ms = total_ms
    return row


def test_target_status() -> None:
    assert harness.target_status(">= 3x", 4.0, True) == "reached"
    assert harness.target_status(">= 3x", 2.0, False) == "NOT reached"
    assert harness.target_status(">= 3x", None, None) == "not run"
    assert harness.target_status("(measured)", 1.3, None) == "measured"
    assert harness.target_status("(measured)", None, None) == "not run"


def test_targets_ratio_and_add() -> None:
    rows = [
        _row("g:a", "base", 30.0),
        _row("g:a", "ours", 10.0),
        _row("g:a", "broken", 1.0, status="error"),
        _row("g:a", "zero", 0.0),
    ]
    t = harness.Targets(rows)
    assert t.ratio("g:a", "base", "ours", "total_ms") == pytest.approx(3.0)
    assert t.ratio("g:a", "base", "broken", "total_ms") is None  # only rows that ran count
    assert t.ratio("g:b", "base", "ours", "total_ms") is None  # a case that did not run
    assert t.ratio("g:a", "ours", "zero", "total_ms") == pytest.approx(1000.0)  # floor 0.01
    t.at_least("three times", 3, 3.0)
    t.at_least("five times", 5, 3.0)
    t.at_least("missing", 5, None)
    t.add("memory", "<= 1024 MB", 900.4, True, unit="MB")
    assert [(r["goal"], r["shown"], r["status"]) for r in t.results] == [
        (">= 3x", "3.00x", "reached"),
        (">= 5x", "3.00x", "NOT reached"),
        (">= 5x", "n/a", "not run"),
        ("<= 1024 MB", "900 MB", "reached"),
    ]


def test_markdown_table_pads_and_aligns() -> None:
    lines = harness.markdown_table(
        ["name", "ms"], [["a", "1.5"], ["longer", "12,345"]], [False, True]
    )
    assert lines == [
        "| name   |     ms |",
        "|--------|-------:|",
        "| a      |    1.5 |",
        "| longer | 12,345 |",
    ]
    assert harness.fmt(None) == "-"
    assert harness.fmt(12345.6) == "12,346"
    assert harness.fmt(2.345, 2, "x") == "2.35x"


def test_results_table_shows_why_a_row_did_not_run() -> None:
    ok = _row("g:a", "ours", 2.0)
    ok.forward_ms, ok.speedup = 1.5, 1.0
    missing = _row("g:a", "lightly", None, status="unavailable")
    missing.reason = "lightly is not installed"
    table = harness.results_table([ok, missing], "g")
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    assert header == [
        "shape",
        "implementation",
        "time ms",
        "speed-up",
        "peak extra MB",
        "memory saving",
    ]
    assert [c.strip() for c in table[2].split("|")[1:-1]] == [
        "N=1",
        "ours",
        "2.0",
        "1.00x",
        "-",
        "-",
    ]
    assert "lightly: unavailable (lightly is not installed)" in table[3]
    assert harness.results_table([ok], "other") == []


def test_time_impls_repeat_counts() -> None:
    calls = {"fast": 0}

    def step() -> torch.Tensor:
        calls["fast"] += 1
        return torch.zeros(())

    prep = {"fast": harness.Prepared(step)}
    t = harness.time_impls(prep, backward=False, device=CPU, repeats=7, budget_s=0.0)
    # a cheap call: three warm-up calls, then max(min_repeats=3, budget / time) = 3 runs
    assert (t["fast"].warmup, t["fast"].repeats, calls["fast"]) == (3, 3, 6)
    assert t["fast"].backward_ms is None and t["fast"].total_ms >= 0
    calls["fast"] = 0
    t = harness.time_impls(
        prep, backward=False, device=CPU, repeats=7, budget_s=0.0, once_above_s=0.0
    )
    # past once_above_s the first call is the only run
    assert (t["fast"].warmup, t["fast"].repeats, calls["fast"]) == (0, 1, 1)


def test_run_case_needs_a_memory_command_on_cpu() -> None:
    case = harness.Case("g", "a", "N=1", lambda d: {}, (), "base")
    with pytest.raises(ValueError, match="memory_command"):
        harness.run_case(
            case, harness.RunOptions(device=CPU, repeats=1, budget_s=0.0, memory=True, quick=True)
        )


def test_readme_highlights_are_the_committed_speed_json() -> None:
    """README's highlights table is rendered from benchmarks/results/speed.json, so its numbers
    cannot drift from the run they come from (``python -m benchmarks.speed --readme``)."""
    root = Path(__file__).resolve().parent.parent
    _, rows = harness.read_report(root / "benchmarks" / "results" / "speed.json")
    readme = (root / "README.md").read_text()
    assert speed.readme_with_highlights(readme, rows) == readme
    # and the table is there with a number from that run (Barlow Twins N=256 D=8192)
    official = next(r for r in rows if r.case == "barlow:256x8192" and r.impl == "official")
    auto = next(r for r in rows if r.case == "barlow:256x8192" and r.impl == "auto")
    assert official.total_ms is not None and auto.total_ms is not None
    assert f"| {official.total_ms / auto.total_ms:.0f}x faster" in readme


def test_readme_highlights_need_their_markers() -> None:
    with pytest.raises(ValueError, match="highlights"):
        speed.readme_with_highlights("# a README without the block\n", [])


def test_limits_count_what_they_say() -> None:
    mm = harness.matmul_limit(8, 4, 6)
    assert (mm.unit, mm.amount) == ("FLOP", 2 * 8 * 4 * 6)
    assert tuple(mm.prepare(CPU)().shape) == (8, 6)  # A (8, 4) @ B.T, B (6, 4)
    assert mm.rate(1.0) == f"{2 * 8 * 4 * 6 / 1e-3 / 1e9:.1f} GFLOP/s"
    lerp = harness.lerp_limit(10)
    assert (lerp.unit, lerp.amount) == ("B", 120.0)
    out = lerp.prepare(CPU)()
    assert torch.allclose(out, torch.full((10,), 0.004))  # zeros moved 0.004 towards ones
    softmax = harness.pass_limit(3, 5)
    assert (softmax.unit, softmax.amount) == ("B", 8.0 * 15)
    assert torch.allclose(softmax.prepare(CPU)().exp().sum(1), torch.ones(3))


def test_run_case_reports_time_over_limit() -> None:
    def setup(device: torch.device) -> harness.Inputs:
        return {"x": torch.randn(64, 64)}

    impl = harness.Impl(
        "mm",
        "two matmuls",
        "sslosses",
        lambda i: harness.Prepared(lambda: i["x"] @ i["x"] @ i["x"]),
    )
    case = harness.Case(
        "g",
        "a",
        "N=64",
        setup,
        (impl,),
        "mm",
        backward=False,
        limit=harness.matmul_limit(64, 64, 64),
    )
    options = harness.RunOptions(device=CPU, repeats=3, budget_s=0.0, memory=False, quick=True)
    (row,) = harness.run_case(case, options, log=lambda _: None)
    assert row.limit_ms is not None and row.total_ms is not None
    assert row.x_limit == pytest.approx(row.total_ms / row.limit_ms)
    assert row.limit_label.startswith("one (64x64) @ (64x64) matmul: ")
    table = "\n".join(harness.results_table([row], "g"))
    assert "time / limit" in table and f"N=64: {row.limit_label}" in table
