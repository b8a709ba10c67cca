"""``benchmarks.gpu_check --dry-run``: every code path of the GPU check, on CPU at tiny sizes.

The dry run runs as a subprocess (it sets ``TRITON_INTERPRET=1`` before Triton is imported, so
the Triton kernels run on CPU tensors). What is asserted: it exits 0 and its report holds a
passing check for every loss path and dtype, the Triton kernels, EMA, the transforms, timings
for the ``benchmarks.speed`` cases with what each ``auto`` rule picks, and a finite training
run per ``benchmarks.train`` method. A second test shows a wrong result is reported as a
failure (exit 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.train import config as train_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)  # the script sets it for --dry-run
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    report = json.loads((out / "gpu_check_cpu-dry-run.json").read_text())
    assert (out / "gpu_check_cpu-dry-run.md").read_text().startswith("# GPU check: CPU dry run")
    return proc.returncode, report, proc.stdout + proc.stderr


def _by_name(report: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["results"] if r["section"] == section}


def test_dry_run_passes_every_check(dry_run: tuple[int, dict[str, Any], str]) -> None:
    code, report, output = dry_run
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert code == 0 and not failed, (failed, output[-3000:])
    assert report["machine"]["dry_run"] is True
    assert report["complete"] is True and set(report["section_seconds"]) == set(gpu_check.SECTIONS)
    assert report["machine"]["triton_interpret"] == "1"


def test_dry_run_covers_every_loss_path_and_dtype(dry_run: tuple[int, dict[str, Any], str]) -> None:
    _, report, _ = dry_run
    results = _by_name(report, "correctness")
    for check in gpu_check.loss_checks():
        for shape in check.shapes["dry"]:
            for dtype in check.dtypes:
                for variant in check.variants:
                    name = f"{check.name} {variant} {'x'.join(map(str, shape))} {dtype}"
                    r = results[name]
                    assert r["status"] == "pass", r
                    assert r["detail"]["value_dtype"] == "float32", r  # half in, float32 out
                    if check.n_grad:
                        expected = "float32" if dtype == "autocast" else dtype
                        assert r["detail"]["grad_dtypes"] == [expected], r
    assert {"dense", "gram", "fused", "auto"} <= {n.split()[1] for n in results if "barlow" in n}
    for name in ("EMA (cosine schedule, buffers='average')", "transforms swav_transform"):
        assert results[name]["status"] == "pass"
    triton = [r for n, r in results.items() if n.startswith("triton kernels")]
    if gpu_check.kernels().triton.HAS_TRITON:  # installed with the test extras on Linux
        assert len(triton) == 3 and all(r["status"] == "pass" for r in triton), triton
        assert all(r["detail"]["grad_rel_err"] < 1e-2 for r in triton)


def test_dry_run_times_speed_cases_and_auto_rules(dry_run: tuple[int, dict[str, Any], str]) -> None:
    _, report, _ = dry_run
    timing = _by_name(report, "timing")
    for rule in ("barlow:16x48", "barlow:48x16", "ntxent:24", "infonce:6x40"):
        detail = timing[f"auto rule {rule}"]["detail"]
        assert detail["rule_picks"] and detail["measured_fastest"] in detail["times_ms"]
    assert timing["auto rule barlow:16x48"]["detail"]["rule_picks"] == "gram"  # N <= D / 2
    assert timing["ema:resnet50w4 module"]["detail"]["total_ms"] > 0
    assert timing["multicrop:2x40 sslosses"]["detail"]["backward_ms"] is None
    # the limit column: the device's own throughput, and each case with a limit against it
    limits = timing["device limits"]["detail"]
    assert limits["matmul_float32_tflops"] > 0 and limits["bandwidth_gb_s"] > 0
    assert limits["matmul_bfloat16_tflops"] > 0
    for name in ("barlow:16x48 auto", "ntxent:24 auto", "ema:resnet50w4 module"):
        detail = timing[name]["detail"]
        assert detail["x_limit"] == pytest.approx(detail["total_ms"] / detail["limit_ms"])
    assert timing["multicrop:2x40 sslosses"]["detail"]["limit_ms"] is None  # no limit there


def test_dry_run_trains_every_method(dry_run: tuple[int, dict[str, Any], str]) -> None:
    _, report, _ = dry_run
    training = _by_name(report, "training")
    assert set(training) == set(train_config.METHODS)
    for r in training.values():
        assert r["status"] == "pass", r
        assert r["detail"]["steps"] == 4 and r["detail"]["compile"] is False


def test_a_wrong_path_is_reported_as_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A "fast path" with another temperature than the reference must fail the check."""
    from sslosses.functional import nt_xent

    wrong = gpu_check.LossCheck(
        "nt_xent_wrong",
        lambda x, kw: nt_xent(x[0], x[1], **kw),
        gpu_check._pair,
        {"dry": [(6, 4)], "full": [(6, 4)]},
        {"reference": {"temperature": 0.1}, "wrong": {"temperature": 0.11}},
        reference="reference",
        dtypes=("float32",),
    )
    monkeypatch.setattr(gpu_check, "loss_checks", lambda: [wrong])
    monkeypatch.setattr(gpu_check, "transform_checks", lambda: {})
    argv = ["--dry-run", "--sections", "correctness", "--out", str(tmp_path)]
    assert gpu_check.main(argv) == 1
    report = json.loads((tmp_path / "gpu_check_cpu-dry-run_correctness.json").read_text())
    results = _by_name(report, "correctness")
    assert results["nt_xent_wrong reference 6x4 float32"]["status"] == "pass"
    bad = results["nt_xent_wrong wrong 6x4 float32"]
    assert bad["status"] == "fail" and bad["detail"]["value_rel_err"] > 1e-3
    assert torch.get_default_dtype() == torch.float32  # the check left global state alone
