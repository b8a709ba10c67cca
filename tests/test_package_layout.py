"""Where things live in the package: rules a refactor must not break silently."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslosses"


def _uses_of_torch_distributed(tree: ast.AST) -> list[int]:
    """Line numbers that import ``torch.distributed`` (any form) or reach it as an attribute."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name.startswith("torch.distributed") for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.startswith("torch.distributed") or (
                module == "torch" and any(a.name == "distributed" for a in node.names)
            ):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "distributed"
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            lines.append(node.lineno)
    return lines


def test_only_collectives_py_touches_torch_distributed() -> None:
    # one home for collectives, the share rule and the FSDP probe (DTensor, FSDPModule):
    # sslosses/_collectives.py; sslosses/distributed.py is its public face
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_collectives.py" or path.parent != PACKAGE
        if (lines := _uses_of_torch_distributed(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}


def test_the_scan_sees_every_form() -> None:
    source = (
        "import torch.distributed as dist\n"
        "from torch.distributed.fsdp import FSDPModule\n"
        "from torch import distributed\n"
        "x = torch.distributed.is_available()\n"
        "import torch\n"
    )
    assert _uses_of_torch_distributed(ast.parse(source)) == [1, 2, 3, 4]


# --- the repository's import graph ----------------------------------------------------------
ROOT = PACKAGE.parent
# benchmarks/ in four parts: which of them each part may import (references imports none)
BENCHMARK_PARTS = {
    "references": set(),
    "speed": {"references", "speed"},
    "train": {"train"},
    "gpu_check": {"speed", "train"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved); with
    ``top_level_only``, the imports that run when the module is imported (not those inside
    functions or under ``if TYPE_CHECKING``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imported_names(ast.parse(path.read_text(), str(path)), package, top_level_only)


def _imported_names(tree: ast.Module, package: str, top_level_only: bool) -> set[str]:
    nodes: list[ast.AST] = list(tree.body) if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_sys_path_edits_in_benchmarks_or_tests() -> None:
    # benchmarks/ is a package run with ``python -m`` and pytest's ``pythonpath`` puts the
    # repository root on the path: nothing edits sys.path by hand
    offenders = []
    for path in _python_files("benchmarks", "tests", "sslosses"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_benchmark_parts_import_only_what_they_may() -> None:
    wrong = {}
    for path in _python_files("benchmarks"):
        rel = path.relative_to(ROOT / "benchmarks").parts
        if rel == ("__init__.py",):
            continue
        part = rel[0].removesuffix(".py")
        used = {
            name.split(".")[1]
            for name in _imports(path, top_level_only=False)
            if name.startswith("benchmarks.") and len(name.split(".")) > 1
        }
        if used - BENCHMARK_PARTS[part]:
            wrong[str(path.relative_to(ROOT))] = sorted(used - BENCHMARK_PARTS[part])
    assert wrong == {}
    # and the library never imports the benchmarks
    assert [
        str(p.relative_to(ROOT))
        for p in _python_files("sslosses")
        if any(n.split(".")[0] == "benchmarks" for n in _imports(p, top_level_only=False))
    ] == []


def test_no_import_cycles() -> None:
    """No cycle among the modules' import-time imports (sslosses and benchmarks)."""
    files = {_module_name(p): p for p in _python_files("sslosses", "benchmarks")}
    graph = {
        name: {n for n in _imports(path, top_level_only=True) if n in files and n != name}
        for name, path in files.items()
    }
    # a module importing its own package's __init__ (e.g. ``from sslosses import x`` inside
    # sslosses.foo) is how Python loads the package first: only a cycle through other modules counts
    for name in graph:
        graph[name] = {n for n in graph[name] if not name.startswith(n + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_import_scan_resolves_relative_imports() -> None:
    source = "from . import a\nfrom ..b import c\nimport f.g\ndef h():\n    import inner\n"
    tree = ast.parse(source)
    assert _imported_names(tree, "pkg.sub", True) == {
        "pkg.sub", "pkg.sub.a", "pkg.b", "pkg.b.c", "f.g"
    }  # fmt: skip
    assert "inner" in _imported_names(tree, "pkg.sub", False)
