"""docs/check_math.py: the check that fails when built docs would show raw TeX offline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sslosses_docs_check_math", DOCS / "check_math.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cm = _checker()

PAGE = """<!DOCTYPE html><html><head>{script}</head><body>
<p>An embedding <span class="math notranslate nohighlight">\\(z^v_n\\)</span> and</p>
<div class="math notranslate nohighlight">\\[\\mathcal{{L}} = \\sum_n \\ell_n\\]</div>
</body></html>"""


def _site(tmp_path: Path, script: str, js: str | None = None) -> Path:
    (tmp_path / "losses").mkdir()
    (tmp_path / "losses" / "page.html").write_text(PAGE.format(script=script))
    (tmp_path / "_static").mkdir()
    if js is not None:
        (tmp_path / "_static" / "tex-svg-full.js").write_text(js)
    return tmp_path


LOCAL = '<script defer src="../_static/tex-svg-full.js?v=1"></script>'


def test_static_check_accepts_a_local_mathjax(tmp_path: Path) -> None:
    assert cm.static_errors(_site(tmp_path, LOCAL, js="// MathJax")) == []


@pytest.mark.parametrize(
    ("script", "js", "message"),
    [
        (
            '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>',
            None,
            "MathJax is loaded from the network (https://cdn.jsdelivr.net",
        ),
        (LOCAL, None, "MathJax script ../_static/tex-svg-full.js?v=1 is missing from the build"),
        ("", None, "has formulas but loads no MathJax script"),
    ],
)
def test_static_check_fails(tmp_path: Path, script: str, js: str | None, message: str) -> None:
    errors = cm.static_errors(_site(tmp_path, script, js))
    assert len(errors) == 1 and message in errors[0]


def test_static_check_fails_on_a_folder_without_formulas(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html><body><p>no math</p></body></html>")
    assert "no page with a formula found" in cm.static_errors(tmp_path)[0]


def test_rendered_dom_with_raw_tex_fails_and_typeset_dom_passes() -> None:
    raw = PAGE.format(script="")
    errors = cm.rendered_errors(Path("p.html"), raw, "p.html")
    assert errors[0] == "p.html: formula shown as raw TeX: '\\\\(z^v_n\\\\)'"
    assert errors[-1] == "p.html: 0 of 2 formulas were typeset"
    typeset = (
        '<html><body><span class="math"><mjx-container><svg><path d="M0"></path></svg>'
        "<mjx-assistive-mml><math><mi>z</mi></math></mjx-assistive-mml></mjx-container></span>"
        '<div class="math"><mjx-container><svg></svg></mjx-container></div></body></html>'
    )
    assert cm.rendered_errors(Path("p.html"), typeset, "p.html") == []


def test_browser_shows_raw_tex_without_mathjax(tmp_path: Path) -> None:
    browser = cm.find_browser()
    if browser is None:
        pytest.skip("no Chromium installed")
    site = _site(tmp_path, LOCAL, js="/* not MathJax: nothing is typeset */")
    errors = cm.browser_errors(site, browser)
    assert "formula shown as raw TeX" in errors[0]
    assert errors[-1].endswith("0 of 2 formulas were typeset")


def test_browser_typesets_with_the_packaged_mathjax(tmp_path: Path) -> None:
    browser = cm.find_browser()
    spec = importlib.util.find_spec("mathjax")
    if browser is None or spec is None or not spec.submodule_search_locations:
        pytest.skip("needs Chromium and the docs extra (django-static-mathjax)")
    root = Path(next(iter(spec.submodule_search_locations)))
    js = (root / "static" / "mathjax" / "es5" / "tex-svg-full.js").read_text()
    assert cm.browser_errors(_site(tmp_path, LOCAL, js=js), browser) == []
