"""Sphinx configuration for sslosses."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import sys
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

project = "sslosses"
author = "the sslosses developers"
copyright = "2026, the sslosses developers"
release = _version("sslosses")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Links to PyTorch's, Python's and NumPy's docs resolve offline: each project's inventory is a
# small committed file listing only the names these docs reference, with their real locations
# (written by ``docs/make_inventories.py``; add a name there and rerun it). Nothing is fetched.
_INVENTORIES = Path(__file__).resolve().parent / "_inventories"
intersphinx_mapping: dict[str, tuple[str, str]] = {
    "torch": ("https://docs.pytorch.org/docs/stable/", str(_INVENTORIES / "torch.inv")),
    "python": ("https://docs.python.org/3/", str(_INVENTORIES / "python.inv")),
    "numpy": ("https://numpy.org/doc/stable/", str(_INVENTORIES / "numpy.inv")),
}
# Formulas render offline: MathJax 3 (TeX input, SVG output, all TeX extensions, one
# self-contained file) is copied from the installed PyPI package ``django-static-mathjax``
# (pure static files, no dependency; the ``docs`` extra) into ``_static``; no CDN. The
# ``build-finished`` hook below fails the build if a page would load MathJax from elsewhere.
_MATHJAX_FILE = "tex-svg-full.js"


def _mathjax_source() -> str:
    spec = importlib.util.find_spec("mathjax")
    roots = [] if spec is None else list(spec.submodule_search_locations or [])
    for root in roots:
        path = Path(root) / "static" / "mathjax" / "es5" / _MATHJAX_FILE
        if path.is_file():
            return str(path)
    raise RuntimeError(
        f"MathJax ({_MATHJAX_FILE}) not found: the docs render formulas offline from the "
        "django-static-mathjax package; install the docs extra: pip install -e '.[docs]'"
    )


mathjax_path = _MATHJAX_FILE  # relative: served from the build's own _static folder
html_static_path = [_mathjax_source()]
html_theme = "furo"
html_title = f"sslosses {release}"
exclude_patterns = ["_build"]
nitpicky = True
# Every cross-reference must resolve. The type aliases of public signatures live in
# ``sslosses.typing`` (documented on their own page); autodoc writes each under its full name
# there, so a signature shows the alias and links to it instead of expanding the ``Literal``.
_typing = importlib.import_module("sslosses.typing")
autodoc_type_aliases = {name: f"sslosses.typing.{name}" for name in _typing.__all__}
# The same option flags as pytest's doctests (pyproject.toml), so both runners accept the same
# examples: Sphinx's defaults plus NORMALIZE_WHITESPACE (long reprs are wrapped in docstrings).
doctest_default_flags = (
    doctest.ELLIPSIS
    | doctest.IGNORE_EXCEPTION_DETAIL
    | doctest.DONT_ACCEPT_TRUE_FOR_1
    | doctest.NORMALIZE_WHITESPACE
)


sys.path.insert(0, str(Path(__file__).resolve().parent))


def _check_offline_math(app: Any, exception: Exception | None) -> None:
    from check_math import static_errors

    if exception is None and app.builder.format == "html":
        errors = static_errors(Path(app.outdir))
        if errors:
            raise RuntimeError("formulas would not render offline:\n" + "\n".join(errors))


def setup(app: Any) -> None:
    app.connect("build-finished", _check_offline_math)
