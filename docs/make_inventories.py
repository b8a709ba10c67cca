"""Write the small intersphinx inventories in ``docs/_inventories/`` (run from the repo root).

The docs build offline (no internet in CI), so intersphinx cannot download PyTorch's, Python's
and NumPy's ``objects.inv``. Instead ``conf.py`` points ``intersphinx_mapping`` at these local
files, each listing exactly the external names our docs reference, with their real locations in
the online documentation; the links in the built HTML are real links. To reference a new
external name, add it below and run ``python docs/make_inventories.py``; commit the output.

An entry is ``(name, domain:role, location)``; the location is relative to the project's base
URL (``conf.py``), and ``$`` stands for the name (expanded here, as intersphinx itself only
expands a trailing ``$``). Aliases map the
spelling autodoc writes for a type hint (its defining module, e.g. ``torch._C.Generator``) onto
the public name's page.
"""

from __future__ import annotations

import zlib
from pathlib import Path

Entry = tuple[str, str, str]

_GEN = "generated/$.html#$"  # PyTorch's one-page-per-object layout

TORCH: list[Entry] = [
    ("torch.Tensor", "py:class", "tensors.html#$"),
    ("torch.dtype", "py:class", "tensor_attributes.html#$"),
    ("torch.device", "py:class", "tensor_attributes.html#$"),
    ("torch.Generator", "py:class", _GEN),
    ("torch.no_grad", "py:class", _GEN),
    ("torch.compile", "py:function", _GEN),
    ("torch.func", "py:module", "func.html"),
    ("torch.distributed", "py:module", "distributed.html#module-torch.distributed"),
    ("torch.amp.GradScaler", "py:class", "amp.html#$"),
    ("torch.nn.Module", "py:class", _GEN),
    ("torch.nn.Module.state_dict", "py:method", "generated/torch.nn.Module.html#$"),
    ("torch.nn.Module.load_state_dict", "py:method", "generated/torch.nn.Module.html#$"),
    ("torch.nn.Linear", "py:class", _GEN),
    ("torch.nn.Sequential", "py:class", _GEN),
    ("torch.nn.SyncBatchNorm", "py:class", _GEN),
    ("torch.nn.parameter.Parameter", "py:class", _GEN),
    ("torch.nn.parallel.DistributedDataParallel", "py:class", _GEN),
    ("torch.nn.functional.grid_sample", "py:function", _GEN),
    ("torch.nn.utils.parametrizations.weight_norm", "py:function", _GEN),
    ("torch.utils.data.distributed.DistributedSampler", "py:class", "data.html#$"),
]
TORCH_ALIASES: dict[str, str] = {
    "torch._C.Generator": "torch.Generator",
    "torch.nn.modules.module.Module": "torch.nn.Module",
    # PyTorch's own ``nn.Module.forward`` docstring, inherited by our modules' ``forward``,
    # says :class:`Module`; our hints that autodoc cannot evaluate read ``nn.Module``.
    "Module": "torch.nn.Module",
    "nn.Module": "torch.nn.Module",
    "torch.nn.modules.container.Sequential": "torch.nn.Sequential",
    "torch.nn.Parameter": "torch.nn.parameter.Parameter",
    "torch.utils.data.DistributedSampler": "torch.utils.data.distributed.DistributedSampler",
}

PYTHON: list[Entry] = [
    ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
    ("colorsys", "py:module", "library/colorsys.html#module-colorsys"),
    ("numbers.Integral", "py:class", "library/numbers.html#$"),
    ("numbers.Real", "py:class", "library/numbers.html#$"),
]

NUMPY: list[Entry] = [
    ("numpy.linspace", "py:function", "reference/generated/$.html#$"),
]

# file stem -> (project, version, entries, aliases)
INVENTORIES: dict[str, tuple[str, str, list[Entry], dict[str, str]]] = {
    "torch": ("PyTorch", "stable", TORCH, TORCH_ALIASES),
    "python": ("Python", "3", PYTHON, {}),
    "numpy": ("NumPy", "stable", NUMPY, {}),
}


def render(project: str, version: str, entries: list[Entry], aliases: dict[str, str]) -> bytes:
    """Return an inventory in Sphinx's version-2 format (four text lines, then zlib)."""
    by_name = {name: (role, location) for name, role, location in entries}
    rows = list(entries)
    for alias, target in aliases.items():
        role, location = by_name[target]
        rows.append((alias, role, location.replace("$", target)))
    lines = []
    for name, role, location in sorted(rows):
        location = location.replace("$", name)
        # name, domain:role, priority (1 = normal), location, display name ("-" = the name)
        lines.append(f"{name} {role} 1 {location} -\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    return header.encode() + zlib.compress("".join(lines).encode(), 9)


def main() -> None:
    out = Path(__file__).resolve().parent / "_inventories"
    out.mkdir(exist_ok=True)
    for stem, (project, version, entries, aliases) in INVENTORIES.items():
        (out / f"{stem}.inv").write_bytes(render(project, version, entries, aliases))


if __name__ == "__main__":
    main()
