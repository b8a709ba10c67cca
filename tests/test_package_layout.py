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
