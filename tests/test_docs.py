"""The documentation builds (mkdocs, warnings as errors) and every tutorial runs at a small scale."""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))


def test_every_tutorial_has_a_page():
    assert len(TUTORIALS) == 4
    for script in TUTORIALS:
        page = script.with_suffix(".md")
        assert page.is_file(), f"{script.name} has no page"
        assert f'--8<-- "docs/tutorials/{script.name}"' in page.read_text(), f"{page.name} does not include its script"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_small(script, tmp_path):
    env = {**os.environ, "ACTIVA_TUTORIAL_SCALE": "small", "ACTIVA_TUTORIAL_OUT": str(tmp_path),
           "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "summary.json").is_file()
    assert list(tmp_path.glob("*.png")), "the tutorial wrote no figure"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The documentation site, built once with warnings as errors."""
    out = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_docs_build_strict(site):
    assert (site / "tutorials" / "equivalence_class" / "index.html").is_file()
    assert (site / "api" / "model" / "index.html").is_file()


class _Page(HTMLParser):
    """The anchors (``id``, ``<a name>``) of an HTML page and its links (``href``, ``src``)."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(v for k, v in attrs.items() if k == "id" or (tag == "a" and k == "name"))
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v]


def broken_links(site: Path) -> list[str]:
    """``page: link`` for every link inside the site that leads nowhere: a missing file, or an
    ``#anchor`` that is not an ``id`` of its page (external links are not followed)."""
    pages: dict[Path, _Page] = {}

    def page(path: Path) -> _Page:
        if path not in pages:
            pages[path] = _Page(path.read_text(encoding="utf-8"))
        return pages[path]

    broken = []
    for html in sorted(site.rglob("*.html")):
        if html.name == "404.html":  # links relative to the site root, wherever it is served
            continue
        for link in page(html).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:", "javascript:")):
                continue
            target = html if not parts.path else (html.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in (target.resolve(), *target.resolve().parents):
                broken.append(f"{html.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in page(target).ids:
                broken.append(f"{html.relative_to(site)}: {link} (no such anchor)")
    return broken


def test_no_broken_links(site):
    broken = broken_links(site)
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


def test_link_check_finds_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h2 id="x">x</h2><a href="#x">ok</a><a href="../b/">gone</a>'
                                              '<a href="#y">bad anchor</a><a href="https://example.org">out</a>')
    assert broken_links(tmp_path) == ["a/index.html: ../b/ (no such file)", "a/index.html: #y (no such anchor)"]


def test_api_reference_has_links_not_raw_roles(site):
    """Sphinx roles in docstrings (:func:`x`) are rendered as cross-links by docs/scripts/griffe_roles.py."""
    api = "".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("index.html"))
    raw = re.findall(r":(?:func|class|data|meth|mod|attr):(?:`|<code>)", api)
    assert not raw, f"{len(raw)} raw roles in the API reference"
    assert api.count('class="autorefs autorefs-internal"') > 300


def test_tutorial_pages_show_no_jupytext_markers(site):
    for script in TUTORIALS:
        text = re.sub(r"<[^>]+>", "", (site / "tutorials" / script.stem / "index.html").read_text(encoding="utf-8"))
        assert "# %%" not in text and "jupytext" not in text, script.name
        assert "from __future__ import annotations" in text, f"{script.name} is not shown"
