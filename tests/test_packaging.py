"""The release check (`.ci/wheel_smoke.py`, run by `make package`) catches a broken wheel."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_smoke", ROOT / ".ci" / "wheel_smoke.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheel_smoke"] = module
    spec.loader.exec_module(module)
    return module


smoke = _load_smoke()


def test_source_package_is_complete_against_itself() -> None:
    names = smoke.module_names(ROOT / "sslosses")
    assert {"sslosses", "sslosses.functional", "sslosses.transforms.crop"} <= names
    assert smoke.missing_modules(ROOT / "sslosses", ROOT / "sslosses") == []


@pytest.mark.parametrize(
    ("removed", "reported"),
    [
        ("transforms/crop.py", "sslosses.transforms.crop"),
        ("kernels", "sslosses.kernels"),
        ("py.typed", "py.typed"),
    ],
)
def test_missing_module_or_marker_is_reported(tmp_path: Path, removed: str, reported: str) -> None:
    installed = tmp_path / "sslosses"
    shutil.copytree(ROOT / "sslosses", installed, ignore=shutil.ignore_patterns("__pycache__"))
    target = installed / removed
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    assert reported in smoke.missing_modules(ROOT / "sslosses", installed)


def test_every_functional_export_has_a_smoke_call_that_runs() -> None:
    import sslosses.functional as SF

    calls = smoke.smoke_calls()
    assert set(SF.__all__) <= set(calls)
    for name in SF.__all__:
        out, inputs = calls[name]()
        assert out.ndim == 0
        if inputs:
            out.backward()
            assert all(t.grad is not None for t in inputs), name
