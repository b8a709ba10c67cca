"""Sphinx configuration for sslosses."""

from __future__ import annotations

import doctest
from importlib.metadata import version as _version

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
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "furo"
html_title = f"sslosses {release}"
exclude_patterns = ["_build"]
nitpicky = False
# The same option flags as pytest's doctests (pyproject.toml), so both runners accept the same
# examples: Sphinx's defaults plus NORMALIZE_WHITESPACE (long reprs are wrapped in docstrings).
doctest_default_flags = (
    doctest.ELLIPSIS
    | doctest.IGNORE_EXCEPTION_DETAIL
    | doctest.DONT_ACCEPT_TRUE_FOR_1
    | doctest.NORMALIZE_WHITESPACE
)
