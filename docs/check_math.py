"""Check that the built HTML docs typeset their formulas offline.

Two checks, both failing loudly:

- **static** (run by every ``sphinx-build`` through ``conf.py``, and by this script): every page
  with a formula loads MathJax from a file inside the build folder (no network URL), and that
  file exists;
- **browser** (``--browser``): each page with a formula is opened from disk in headless Chromium,
  with networking off, and every formula must have been replaced by MathJax's rendering; a
  formula still shown as raw TeX (``\\(...\\)``, ``\\[...\\]``) fails.

Usage::

    python docs/check_math.py docs/_build/html            # static check
    python docs/check_math.py docs/_build/html --browser  # and the headless-browser check

``--browser`` skips (exit status 0, with a message) when no Chromium is installed, unless
``--require-browser`` is given.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

MATH_CLASS = "math"  # Sphinx marks every formula <span|div class="math notranslate nohighlight">
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    ]
)
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]")


class _Page(HTMLParser):
    """Collects script sources and the text of each formula element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.formulas: list[str] = []  # text left directly in formula elements
        self.rendered = 0  # formula elements holding MathJax output
        self._stack: list[tuple[str, bool]] = []  # (tag, inside a formula element)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"] or "")
        inside = bool(self._stack and self._stack[-1][1])
        is_formula = tag in ("span", "div") and MATH_CLASS in (a.get("class") or "").split()
        if is_formula:
            self.formulas.append("")
        if tag == "mjx-container" and inside and self._stack[-1][0] in ("span", "div"):
            self.rendered += 1
        if tag not in _VOID:
            self._stack.append((tag, inside or is_formula))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        # text directly in a formula element, not inside MathJax's output
        if self.formulas and self._stack and self._stack[-1] in (("span", True), ("div", True)):
            self.formulas[-1] += data


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def is_mathjax(src: str) -> bool:
    return "mathjax" in src.lower() or Path(urlparse(src).path).name.startswith("tex-")


def static_errors(build: Path) -> list[str]:
    """Pages with formulas whose MathJax is not a file inside ``build`` (or is missing)."""
    errors: list[str] = []
    pages = 0
    for html_file in sorted(build.rglob("*.html")):
        page = _parse(html_file.read_text(encoding="utf-8"))
        if not page.formulas:
            continue
        pages += 1
        sources = [s for s in page.scripts if is_mathjax(s)]
        name = html_file.relative_to(build)
        if not sources:
            errors.append(f"{name}: has formulas but loads no MathJax script")
        for src in sources:
            if urlparse(src).scheme or src.startswith("//"):
                errors.append(f"{name}: MathJax is loaded from the network ({src})")
            elif not (html_file.parent / urlparse(src).path).is_file():
                errors.append(f"{name}: MathJax script {src} is missing from the build")
    if pages == 0:
        errors.append(f"{build}: no page with a formula found (is this a built HTML folder?)")
    return errors


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(browser: str, html_file: Path, timeout: float = 120.0) -> str:
    """The DOM of ``html_file`` after its scripts ran, from headless Chromium, offline."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--proxy-server=127.0.0.1:9",  # nothing outside the build folder loads
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                html_file.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0 or "<html" not in result.stdout:
        raise RuntimeError(f"{browser} failed on {html_file}: {result.stderr[-2000:]}")
    return result.stdout


def rendered_errors(html_file: Path, dom: str, name: str) -> list[str]:
    """Formulas of a rendered DOM that are still raw TeX, or not typeset at all."""
    page = _parse(dom)
    errors = [
        f"{name}: formula shown as raw TeX: {text.strip()[:80]!r}"
        for text in page.formulas
        if RAW_TEX.search(text)
    ]
    if page.rendered < len(page.formulas):
        errors.append(f"{name}: {page.rendered} of {len(page.formulas)} formulas were typeset")
    return errors


def browser_errors(build: Path, browser: str) -> list[str]:
    errors: list[str] = []
    for html_file in sorted(build.rglob("*.html")):
        if not _parse(html_file.read_text(encoding="utf-8")).formulas:
            continue
        name = str(html_file.relative_to(build))
        errors += rendered_errors(html_file, render(browser, html_file), name)
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="the built HTML folder")
    parser.add_argument("--browser", action="store_true", help="also render in headless Chromium")
    parser.add_argument("--require-browser", action="store_true", help="fail without Chromium")
    args = parser.parse_args(argv)
    errors = static_errors(args.build)
    if args.browser or args.require_browser:
        browser = find_browser()
        if browser is None:
            if args.require_browser:
                errors.append("no Chromium found for the browser check")
            else:
                print("check_math: no Chromium found; browser check skipped")
        else:
            errors += browser_errors(args.build, browser)
    for error in errors:
        print(f"check_math: {error}", file=sys.stderr)
    if not errors:
        print(f"check_math: {args.build}: every formula renders offline")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
