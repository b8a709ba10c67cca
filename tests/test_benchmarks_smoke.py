"""Smoke test of ``python -m benchmarks.speed`` (its cases ``benchmarks/speed/cases.py``, its
harness ``benchmarks/speed/harness.py``) and honesty checks of ``benchmarks/speed/baselines.py``.

Timings are never asserted. What is checked: every ``--quick`` case runs in-process for one
repeat; each baseline computes the same value (and input gradient) as the sslosses function it
is timed against; the memory measurement sees an allocation; the CLI writes its report.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from benchmarks import references
from benchmarks.speed import baselines, cases, harness
from benchmarks.speed import cli as speed

CPU = torch.device("cpu")
QUICK = cases.build_cases(quick=True)


def _double(value: Any) -> Any:
    """A float64 copy of benchmark inputs (tensors keep their ``requires_grad``)."""
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            return value
        return value.detach().double().requires_grad_(value.requires_grad)
    if isinstance(value, nn.Module):
        return copy.deepcopy(value).double()
    if isinstance(value, list):
        return [_double(v) for v in value]
    if isinstance(value, dict):
        return {k: _double(v) for k, v in value.items()}
    return value


def _outputs(case: harness.Case, impl: harness.Impl, inputs: harness.Inputs) -> list[Tensor]:
    """The value(s) of one call and, for losses, the gradients of the inputs."""
    prep = impl.prepare(inputs)
    for leaf in prep.leaves:
        leaf.grad = None
    out = prep.step()
    if not case.backward:
        return [t.detach().clone() for t in out]
    out.backward()
    grads = [torch.zeros_like(x) if x.grad is None else x.grad.clone() for x in prep.leaves]
    return [out.detach(), *grads]


@pytest.mark.parametrize("case", [c for c in QUICK if c.group != "multicrop"], ids=lambda c: c.id)
def test_baselines_equal_sslosses(case: harness.Case) -> None:
    inputs = _double(case.setup(CPU))
    if "queue_kd" in inputs:  # unit rows in float64: sslosses normalizes negatives, MoCo does not
        inputs["queue_kd"] = nn.functional.normalize(inputs["queue_kd"], dim=1)
        inputs["queue_dk"] = inputs["queue_kd"].t().contiguous()
    ours = [i for i in case.impls if i.source == "sslosses"]
    reference = _outputs(case, ours[0], inputs)
    checked = 0
    for impl in case.impls:
        if not impl.exact or (impl.source == "lightly" and not _lightly_importable()):
            continue
        got = _outputs(case, impl, inputs)
        assert len(got) == len(reference), impl.key
        for g, r in zip(got, reference, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9, msg=f"{case.id} {impl.key}")
        checked += 1
    baseline_keys = {i.key for i in case.impls if i.source == "baseline"}
    assert case.baseline in baseline_keys
    assert checked >= len(ours) + len(baseline_keys)


def _lightly_importable() -> bool:
    try:
        cases.optional_import("lightly.loss", "NTXentLoss")
    except ImportError:
        return False
    return True


def test_barlow_baselines_equal_reference_at_a_wide_shape() -> None:
    gen = torch.Generator().manual_seed(3)
    z_a, z_b = (3 * torch.randn(7, 19, generator=gen, dtype=torch.float64) for _ in range(2))
    from sslosses.barlow_twins import barlow_twins_loss

    expected = barlow_twins_loss(z_a, z_b, algorithm="dense")
    official = baselines.OfficialBarlowTwins(19).double()(z_a, z_b)
    solo = baselines.solo_learn_barlow_twins(z_a, z_b, lamb=0.0051, scale_loss=1.0)
    torch.testing.assert_close(official, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(solo, expected, rtol=1e-10, atol=1e-12)


def test_resnet50_parameter_shapes() -> None:
    shapes = baselines.resnet50_parameter_shapes()
    assert len(shapes) == 161
    assert sum(math.prod(s) for s in shapes) == 25_557_032


def test_multicrop_loop_crop_equals_sslosses_resized_crop() -> None:
    """Full-image boxes, no augmentation: the loop's resize equals sslosses' (both settings)."""
    from sslosses.transforms import MultiCrop

    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    cfg = baselines.MultiCropConfig(
        crop_sizes=(12, 7),
        crop_counts=(1, 2),
        crop_scales=((1.0, 1.0), (1.0, 1.0)),
        ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter=None,
        grayscale_p=0.0,
        blur_p=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    for antialias in (False, True):
        loop = baselines.multicrop_loop(images, dataclasses.replace(cfg, antialias=antialias))
        ours = MultiCrop(
            (12, 7),
            (1, 2),
            ((1.0, 1.0), (1.0, 1.0)),
            ratio=(1.0, 1.0),
            flip_prob=0.0,
            antialias=antialias,
        )(images)
        assert [tuple(t.shape) for t in loop] == [tuple(t.shape) for t in ours]
        for a, b in zip(loop, ours, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the two settings differ when downscaling, so each comparison above tests its own path
    plain = baselines.multicrop_loop(images, dataclasses.replace(cfg, antialias=False))
    aa = baselines.multicrop_loop(images, dataclasses.replace(cfg, antialias=True))
    assert float((aa[1] - plain[1]).abs().max()) > 1e-3


def test_multicrop_loop_colour_ops_equal_sslosses() -> None:
    from sslosses.transforms import functional as TF

    # the multi-crop baseline's colour operations are the originals of references.py
    img = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(references.adjust_hue(img, 0.13), TF.adjust_hue(img, 0.13))
    torch.testing.assert_close(references.gray(img), TF.rgb_to_grayscale(img))
    torch.testing.assert_close(references.jitter_op(img, 1, 0.6), TF.adjust_contrast(img, 0.6))
    torch.testing.assert_close(references.jitter_op(img, 2, 1.7), TF.adjust_saturation(img, 1.7))
    torch.testing.assert_close(references.gaussian_blur(img, 1.3, 5), TF.gaussian_blur(img, 1.3, 5))


def test_quick_suite_runs_every_case() -> None:
    lines: list[str] = []
    options = harness.RunOptions(device=CPU, repeats=1, budget_s=0.0, memory=False, quick=True)
    rows = speed.run_suite(QUICK, options, log=lines.append)
    assert {r.group for r in rows} == set(cases.GROUPS)
    for row in rows:
        if row.source in ("lightly", "torchvision", "kornia") and row.status == "unavailable":
            continue
        assert row.status == "ok", (row.case, row.impl, row.reason)
        assert row.repeats == 1
        assert row.total_ms is not None and row.total_ms > 0
        assert (row.backward_ms is None) == (row.group in ("ema", "multicrop"))
        assert row.speedup is not None and row.speedup > 0
    for row in rows:
        if row.baseline:
            assert row.speedup == pytest.approx(1.0)
    shapes = [r for r in rows if r.group == "multicrop" and r.status == "ok"]
    assert all(r.items_per_s is not None and r.items_per_s > 0 for r in shapes)
    assert any("NT-Xent" in line for line in lines)


def test_memory_measurement_sees_an_allocation() -> None:
    size = 32 * 2**20  # 128 MiB of float32

    def setup(device: torch.device) -> harness.Inputs:
        return {}

    def prepare(inputs: harness.Inputs) -> harness.Prepared:
        return harness.Prepared(lambda: torch.ones(size).sum())

    impl = harness.Impl("alloc", "alloc", "baseline", prepare)
    case = harness.Case("simsiam", "alloc", "alloc", setup, (impl,), "alloc", backward=False)
    result = harness.measure_memory_here(case, impl, CPU)
    assert 120 <= result["peak_extra_mb"] <= 200
    assert "RSS" in result["method"] or "ru_maxrss" in result["method"]


def test_memory_subprocess_reports_json() -> None:
    case = next(c for c in QUICK if c.group == "simsiam")
    result = harness.measure_memory_subprocess(
        case, case.impls[0], command=speed.MEMORY_COMMAND, quick=True, device=CPU
    )
    assert "error" not in result, result
    assert 0 <= result["peak_extra_mb"] < 50


def test_cli_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--quick", "--only", "byol,simsiam", "--repeats", "1", "--no-memory"]
    assert speed.main([*argv, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "OMP_NUM_THREADS=1" in printed
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["machine"]["OMP_NUM_THREADS"] == "1"
    assert report["command"].startswith("OMP_NUM_THREADS=1 python -m benchmarks.speed --quick")
    assert {r["group"] for r in report["results"]} == {"byol", "simsiam"}
    markdown = (tmp_path / "speed.md").read_text()
    assert "## BYOL" in markdown and "## SimSiam" in markdown and "## Barlow" not in markdown
    assert "Threads: OMP_NUM_THREADS=1" in markdown
    (tmp_path / "speed.md").unlink()
    assert speed.main(["--render", str(tmp_path / "speed.json")]) == 0
    assert (tmp_path / "speed.md").read_text() == markdown


def test_cli_rejects_unknown_group() -> None:
    with pytest.raises(SystemExit):
        speed.main(["--only", "nope"])


def test_chunk_auto_rule_quick_run_reports_what_auto_picks() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed.chunk_auto_rule", "--quick", "--reps", "1"],
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("|")]
    assert [(r[0].strip(), r[1].strip(), r[5].strip()) for r in rows] == [
        ("nt_xent", "32", "plain"),
        ("nt_xent", "160", "plain"),
        ("info_nce", "256", "128"),
    ]
    for r in rows:  # every ratio is a positive number
        assert float(r[6].strip().rstrip("x")) > 0
