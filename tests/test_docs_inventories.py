"""docs/_inventories: the offline intersphinx inventories match docs/make_inventories.py."""

from __future__ import annotations

import importlib.util
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sslosses_docs_make_inventories", DOCS / "make_inventories.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mi = _script()


def _rows(data: bytes) -> list[list[str]]:
    header = data.split(b"\n", 4)
    assert header[0] == b"# Sphinx inventory version 2"
    return [line.split(" ") for line in zlib.decompress(header[4]).decode().splitlines()]


@pytest.mark.parametrize("stem", sorted(mi.INVENTORIES))
def test_committed_inventory_is_what_the_script_writes(stem: str) -> None:
    project, version, entries, aliases = mi.INVENTORIES[stem]
    committed = (DOCS / "_inventories" / f"{stem}.inv").read_bytes()
    assert committed == mi.render(project, version, entries, aliases), (
        f"docs/_inventories/{stem}.inv is stale: run python docs/make_inventories.py"
    )


@pytest.mark.parametrize("stem", sorted(mi.INVENTORIES))
def test_inventory_rows_are_complete_relative_locations(stem: str) -> None:
    project, version, entries, aliases = mi.INVENTORIES[stem]
    rows = _rows(mi.render(project, version, entries, aliases))
    assert len(rows) == len(entries) + len(aliases)
    names = [row[0] for row in rows]
    assert len(set(names)) == len(names)
    for name, role, priority, location, display in rows:
        assert role.startswith("py:") and priority == "1" and display == "-", name
        # intersphinx expands only a trailing "$"; the base URL is prepended from conf.py
        assert "$" not in location and "://" not in location and " " not in location, name
    by_name = {row[0]: row[3] for row in rows}
    for alias, target in aliases.items():
        assert by_name[alias] == by_name[target]


def test_render_expands_the_name_placeholder() -> None:
    rows = _rows(mi.render("P", "1", [("a.B", "py:class", "g/$.html#$")], {"B": "a.B"}))
    assert rows == [
        ["B", "py:class", "1", "g/a.B.html#a.B", "-"],
        ["a.B", "py:class", "1", "g/a.B.html#a.B", "-"],
    ]
