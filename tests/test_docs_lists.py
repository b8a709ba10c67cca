"""The lists of names the docs and README keep by hand, checked against the package.

A new public name, recipe or torch floor must reach the docs' front page (its API index, its
recipe bullet, its install line) and README's table of losses; these tests fail until it does.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

import sslosses
import sslosses.functional
import sslosses.heads
import sslosses.transforms

ROOT = Path(__file__).resolve().parents[1]
INDEX = (ROOT / "docs" / "index.rst").read_text()
README = (ROOT / "README.md").read_text()
SUBMODULES = {"distributed", "functional", "heads", "transforms"}


def _public(module: ModuleType) -> list[str]:
    """The documented API of ``module``: its ``__all__`` without constants and submodules."""
    return [
        name
        for name in module.__all__
        if name not in SUBMODULES and name != "__version__" and not name.isupper()
    ]


def _referenced(text: str, qualified: str) -> bool:
    """Whether reST ``text`` cross-references ``qualified`` (``~``-shortened or in full)."""
    return re.search(r":(?:func|class|mod|data):`~?" + re.escape(qualified) + "`", text) is not None


@pytest.mark.parametrize(
    "module", [sslosses, sslosses.functional, sslosses.heads, sslosses.transforms]
)
def test_front_page_api_index_lists_every_public_name(module: ModuleType) -> None:
    missing = [
        name for name in _public(module) if not _referenced(INDEX, f"{module.__name__}.{name}")
    ]
    assert missing == [], f"docs/index.rst's API reference lacks {module.__name__}: {missing}"


def test_front_page_lists_every_submodule() -> None:
    missing = [m for m in sorted(SUBMODULES) if f"sslosses.{m}" not in INDEX]
    assert missing == []


def _recipe_methods() -> dict[str, str]:
    """Recipe file -> the method its section in the recipes guide is titled with."""
    guide = (ROOT / "docs" / "guides" / "recipes.rst").read_text()
    sections = re.findall(r"\n([^\n]+)\n-+\n(.*?)(?=\n[^\n]+\n-+\n|\Z)", guide, flags=re.S)
    methods = {}
    for title, body in sections:
        for recipe in re.findall(r"literalinclude:: \.\./recipes/(\w+)\.py", body):
            methods[recipe] = re.split(r":| with | \(", title)[0].strip()
    return methods


def test_every_recipe_file_is_in_the_guide_and_on_the_front_page() -> None:
    methods = _recipe_methods()
    files = sorted(p.stem for p in (ROOT / "docs" / "recipes").glob("*.py"))
    assert sorted(methods) == files  # every recipe file has a section in the guide
    bullet = INDEX[INDEX.index("Copy a complete training step") :].split("\n- ")[0]
    bullet = " ".join(bullet.split())
    missing = [method for method in methods.values() if method not in bullet]
    assert missing == [], f"the front page's recipe bullet lacks {missing}"


def test_torch_floor_is_the_same_everywhere() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (floor,) = [d.split(">=")[1] for d in pyproject["project"]["dependencies"] if "torch" in d]
    assert f"``torch >= {floor}``" in INDEX
    assert f"torch >= {floor}." in README
    assert f"``torch>={floor}``" in (ROOT / "docs" / "install.rst").read_text()
    stated = {m for m in re.findall(r"torch ?>= ?(\d+\.\d+)", INDEX + README)}
    assert stated == {floor}, stated


# what README's table leaves to the paragraph below it: components and helpers, not losses
NOT_LOSSES = {
    "EMA", "DINOCenter", "DINOHead", "MoCoQueue", "SwAVPrototypes", "VICRegTerms",
    "cosine_schedule", "linear_warmup_schedule",
    "ema_update_", "resolve_chunk_size", "select_algorithm",
}  # fmt: skip


def test_readme_table_lists_every_loss() -> None:
    table = README[README.index("| function (`sslosses.functional`)") :].split("\n\n")[0]
    names = _public(sslosses) + _public(sslosses.functional)
    missing = [n for n in names if n not in NOT_LOSSES and f"`{n}`" not in table]
    assert missing == [], f"README's table of losses lacks {missing}"


def test_install_commands_do_not_name_an_unpublished_package() -> None:
    # until a release is on PyPI, `pip install sslosses` fails: install from a checkout or git
    install = (ROOT / "docs" / "install.rst").read_text()
    for text in (README, install):
        commands = re.findall(r"^\s*pip install (\S+)", text, flags=re.M)
        assert commands, "no install command found"
        assert "sslosses" not in commands, commands
    assert "not published on PyPI yet" in README and "not published on PyPI yet" in install
