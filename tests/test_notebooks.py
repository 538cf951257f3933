"""Colab and Binder: the generated notebooks and the environment files, checked offline.

The publishing workflow turns every notebook chapter into ``book/<chapter>.ipynb`` on the branch
``notebooks`` (``tools/make_notebooks.py``) and points the pages' Colab and Binder buttons at it.
These tests generate each notebook in memory and check that it is a valid notebook without outputs,
holds exactly the chapter's cells, and starts with a cell that installs leafkit when it is missing
(run here with leafkit present and with leafkit "missing", pip stubbed out); that the launch links
are rewritten as the theme writes them; and that Binder's files install what the chapters need.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_notebooks  # noqa: E402

CHAPTERS = make_notebooks.notebook_chapters()


def run_install_cell(source: str, monkeypatch, *, leafkit_present: bool) -> list[list[str]]:
    """Execute the install cell with pip stubbed out; return the commands it would have run."""
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    if not leafkit_present:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "leafkit" else real(name, *a))
    exec(compile(source, "<install cell>", "exec"), {})
    return calls


def test_there_are_chapters():
    assert "setup.md" in [c.name for c in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_is_the_chapter_plus_install_cell(chapter):
    nb = make_notebooks.make_notebook(chapter)
    nbformat.validate(nb)
    source = jupytext.read(chapter)
    assert [c.source for c in nb.cells[1:]] == [c.source for c in source.cells]
    assert [c.cell_type for c in nb.cells[1:]] == [c.cell_type for c in source.cells]
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "code" and make_notebooks.INSTALL_TAG in first.metadata["tags"]


def test_install_cell_installs_leafkit_only_when_missing(monkeypatch):
    source = make_notebooks.install_source(ref="0123abc")
    assert run_install_cell(source, monkeypatch, leafkit_present=True) == []
    (cmd,) = run_install_cell(source, monkeypatch, leafkit_present=False)
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    url = make_notebooks.book_config()["repository"]["url"]
    assert cmd[-1] == f"leafkit[data,widgets] @ git+{url}@0123abc"
    # the extras named there exist in pyproject.toml (data: torchvision + mlxtend; widgets)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ("data", "widgets"):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra


def test_launch_links_open_the_generated_notebooks():
    html = ('<a href="https://mybinder.org/v2/gh/leafkit/leafkit/main?urlpath=tree/book/setup.md">'
            '<a href="https://colab.research.google.com/github/leafkit/leafkit/blob/main/'
            'book/setup.md">')
    new = make_notebooks.launch_links(html, "leafkit/leafkit")
    assert "mybinder.org/v2/gh/leafkit/leafkit/notebooks?urlpath=tree/book/setup.ipynb" in new
    assert "colab.research.google.com/github/leafkit/leafkit/blob/notebooks/book/setup.ipynb" in new
    assert make_notebooks.launch_links(new, "leafkit/leafkit") == new


@pytest.mark.site
def test_built_pages_have_rewritable_launch_buttons(tmp_path):
    """On the real build, each notebook chapter has Colab and Binder buttons to rewrite."""
    html_dir = ROOT / "_build" / "html"
    if not (html_dir / "index.html").is_file():
        pytest.skip("no built site")
    pages = {c: html_dir / c.relative_to(ROOT).with_suffix(".html") for c in CHAPTERS}
    if any(not p.is_file() or p.stat().st_mtime < c.stat().st_mtime for c, p in pages.items()):
        pytest.skip("the built site is older than the chapters (the book build runs first)")
    org_repo = make_notebooks.book_config()["repository"]["url"].split("github.com/")[-1]
    for chapter, page in pages.items():
        new = make_notebooks.launch_links(page.read_text(encoding="utf-8"), org_repo)
        path = chapter.relative_to(ROOT).with_suffix(".ipynb").as_posix()
        assert f"colab.research.google.com/github/{org_repo}/blob/notebooks/{path}" in new, page
        assert f"/v2/gh/{org_repo}/notebooks?urlpath=tree/{path}" in new, page


def test_binder_environment():
    lines = [ln.strip() for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "-e .[data,widgets]" in lines  # leafkit, its data sets and its explorers
    for needed in ("torch", "jupytext", "jupyterlab-myst"):  # .md opens and renders as a notebook
        assert any(re.match(rf"{needed}\b", ln) for ln in lines), needed
    for heavy in ("jupyter-book", "nbval", "playwright", "check-jsonschema", "pytest", "-r"):
        assert not any(ln.startswith(heavy) for ln in lines), f"Binder installs {heavy}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"data", "widgets"} <= set(extras)
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    assert not list((ROOT / "binder").glob("environment.y*ml"))
